"""CycleGAN networks for the MRI->PET baseline (Zhu et al. 2017): ResNet generator, PatchGAN discriminator, image pool.

The networks work on images scaled to [-1, 1] (the generator ends in tanh). Each generator stores the fixed
model-unit ranges of its source and target domains as buffers, so that :func:`cyclegan_translate` can take a
T1w slice in model units and return a PET slice in SUVR with nothing but the generator's own weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

# Model units of each domain mapped linearly onto [-1, 1]; PET matches the metrics protocol's SUVR data range.
MRI_RANGE = (0.0, 1.5)
PET_RANGE = (0.0, 3.0)


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
    mri_range: tuple[float, float] = MRI_RANGE
    pet_range: tuple[float, float] = PET_RANGE


def cyclegan_config_from_dict(values: dict[str, Any]) -> CycleGANConfig:
    """The inverse of ``dataclasses.asdict`` for a config read back from JSON (lists become tuples)."""
    return CycleGANConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def small_cyclegan_config() -> CycleGANConfig:
    """A CPU-sized CycleGAN for 64x64 slices (~0.2 M generator parameters, 34x34 patches)."""
    return CycleGANConfig(
        generator_filters=16, generator_blocks=4, discriminator_filters=16, discriminator_layers=2, batch_size=8
    )


def paper_cyclegan_config() -> CycleGANConfig:
    """CycleGAN's published sizes for 128x128 slices: 64 filters, 6 residual blocks, 70x70 PatchGAN."""
    return CycleGANConfig()


class ResidualBlock(nn.Module):
    """Two reflection-padded 3x3 convolutions with instance norm, added back to the input."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            nn.InstanceNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            nn.InstanceNorm2d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """Johnson-style encoder, residual blocks, decoder; one channel in, one channel out, tanh output.

    Instance norm without running statistics makes training and inference the same function, so a forward
    pass is deterministic and independent of the batch it is in.
    """

    def __init__(self, cfg: CycleGANConfig, source_range: tuple[float, float], target_range: tuple[float, float]):
        super().__init__()
        width = cfg.generator_filters
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3), nn.Conv2d(1, width, 7), nn.InstanceNorm2d(width), nn.ReLU(inplace=True)
        ]
        for _ in range(cfg.downsamplings):
            layers += [nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.InstanceNorm2d(2 * width), nn.ReLU(True)]
            width *= 2
        layers += [ResidualBlock(width) for _ in range(cfg.generator_blocks)]
        for _ in range(cfg.downsamplings):
            layers += [
                nn.ConvTranspose2d(width, width // 2, 3, stride=2, padding=1, output_padding=1),
                nn.InstanceNorm2d(width // 2),
                nn.ReLU(inplace=True),
            ]
            width //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, 1, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.register_buffer("source_range", torch.tensor(source_range, dtype=torch.float32))
        self.register_buffer("target_range", torch.tensor(target_range, dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        """Translate images in [-1, 1] of the source domain to [-1, 1] of the target domain."""
        return self.net(x)


class PatchDiscriminator(nn.Module):
    """PatchGAN: a fully convolutional classifier that scores overlapping patches as real or fake (LSGAN logits)."""

    def __init__(self, cfg: CycleGANConfig):
        super().__init__()
        width = cfg.discriminator_filters
        layers: list[nn.Module] = [nn.Conv2d(1, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        for n in range(1, cfg.discriminator_layers + 1):
            stride = 2 if n < cfg.discriminator_layers else 1
            next_width = cfg.discriminator_filters * min(2**n, 8)
            layers += [
                nn.Conv2d(width, next_width, 4, stride=stride, padding=1),
                nn.InstanceNorm2d(next_width),
                nn.LeakyReLU(0.2, True),
            ]
            width = next_width
        layers.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class CycleGAN(nn.Module):
    """The four networks trained together: two generators (MRI->PET, PET->MRI) and one discriminator per domain."""

    def __init__(self, cfg: CycleGANConfig):
        super().__init__()
        self.mri_to_pet = ResnetGenerator(cfg, cfg.mri_range, cfg.pet_range)
        self.pet_to_mri = ResnetGenerator(cfg, cfg.pet_range, cfg.mri_range)
        self.pet_discriminator = PatchDiscriminator(cfg)
        self.mri_discriminator = PatchDiscriminator(cfg)
        self.apply(_init_weights)


def _init_weights(module: nn.Module) -> None:
    """CycleGAN's initialization: convolution weights from N(0, 0.02), biases zero."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class ImagePool:
    """A history of generated images (Shrivastava et al.) that the discriminator sees instead of only the latest.

    Until the pool is full every image is stored and returned; afterwards each image is, with probability 0.5,
    swapped for a random stored one (which is returned), else returned as is. The random draws come from the
    pool's own seeded generator, so the pool can be checkpointed and resumed exactly.
    """

    def __init__(self, size: int, seed: int = 0):
        self.size = size
        self.images: list[Tensor] = []
        self.generator = torch.Generator().manual_seed(seed)

    def query(self, images: Tensor) -> Tensor:
        """The batch to show the discriminator in place of ``images`` (detached)."""
        if self.size == 0:
            return images.detach()
        returned = []
        for image in images.detach():
            if len(self.images) < self.size:
                self.images.append(image.clone())
                returned.append(image)
            elif torch.rand((), generator=self.generator) < 0.5:
                slot = int(torch.randint(self.size, (), generator=self.generator))
                returned.append(self.images[slot])
                self.images[slot] = image.clone()
            else:
                returned.append(image)
        return torch.stack(returned)

    def state_tensors(self) -> dict[str, Tensor]:
        """The stored images and the generator state, as plain tensors for a safetensors checkpoint."""
        state = {"rng_state": self.generator.get_state()}
        if self.images:
            state["images"] = torch.stack(self.images).cpu()
        return state

    def load_state_tensors(self, state: dict[str, Tensor], device: torch.device | str = "cpu") -> None:
        self.generator.set_state(state["rng_state"])
        self.images = list(state["images"].to(device).unbind(0)) if "images" in state else []


def to_unit_range(x: Tensor, value_range: Tensor) -> Tensor:
    """Model units -> [-1, 1] (values outside the domain's range are clipped)."""
    low, high = value_range[0], value_range[1]
    return (2 * (x - low) / (high - low) - 1).clamp(-1, 1)


def from_unit_range(x: Tensor, value_range: Tensor) -> Tensor:
    """[-1, 1] -> model units."""
    low, high = value_range[0], value_range[1]
    return low + (x + 1) * (high - low) / 2


@torch.no_grad()
def cyclegan_translate(generator: ResnetGenerator, mri_slices: Tensor) -> Tensor:
    """Synthetic PET (SUVR) for T1w slices in model units, ``[N, 1, H, W]``: one deterministic forward pass each."""
    was_training = generator.training
    generator.eval()
    source = to_unit_range(mri_slices.to(generator.source_range.device, torch.float32), generator.source_range)
    pet = from_unit_range(generator(source), generator.target_range)
    generator.train(was_training)
    return pet


def generator_from_card(card: dict[str, Any]) -> ResnetGenerator:
    """An empty MRI->PET generator shaped by the ``"cyclegan"`` sizes of a model card, ready for its weights."""
    cfg = cyclegan_config_from_dict(card["cyclegan"])
    return ResnetGenerator(cfg, cfg.mri_range, cfg.pet_range)
