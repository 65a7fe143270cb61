"""The synthesis entry point: a model made ready once, then any number of brains synthesized with it.

The participant workflow synthesizes through :class:`Synthesizer` (and so should anything else that synthesizes
whole brains): the network's precision, memory layout and compilation
(:class:`~bids_jdam.synthesis.inference.InferenceDenoiser`) are set up once per run, not once per image, and every
result carries the provenance its outputs record. The model's prediction of a batch of slices is one method,
:meth:`Synthesizer.predict_slices`.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from pathlib import Path

import numpy as np
import torch

from bids_jdam.config import SamplerConfig
from bids_jdam.diffusion.noise import SliceKey
from bids_jdam.diffusion.sde import VESDE
from bids_jdam.synthesis.error_model import VIEW_PLANES
from bids_jdam.synthesis.inference import InferenceDenoiser
from bids_jdam.synthesis.loaded_model import LoadedModel
from bids_jdam.synthesis.provenance import SamplerInfo, SynthesisProvenance
from bids_jdam.synthesis.sampling_plan import plan_sampling
from bids_jdam.synthesis.spread import inflate
from bids_jdam.synthesis.volume import SynthesisResult, synthesize_volume


class Synthesizer:
    """A loaded model on its device, ready to synthesize template-space PET from preprocessed T1w volumes."""

    def __init__(
        self, model: LoadedModel, device: torch.device | str, precision: str = "auto", compile_network: bool = False
    ):
        self.model = model
        self.device = torch.device(device)
        self.denoiser = InferenceDenoiser(model.denoiser, self.device, precision, compile_network)
        self.sde = VESDE(model.cfg.sde.sigma_min, model.cfg.sde.sigma_max)

    @classmethod
    def from_model_dir(
        cls, path: Path, device: torch.device | str, precision: str = "auto", compile_network: bool = False
    ) -> Synthesizer:
        """A synthesizer for the model directory ``path``, as it is (the app's model rule is ``load_model``)."""
        return cls(LoadedModel.from_dir(path, device), device, precision, compile_network)

    @property
    def precision(self) -> str:
        """What the network actually runs in (``auto`` resolved for the device)."""
        return self.denoiser.precision

    def synthesize(
        self,
        t1_model: np.ndarray,
        brain_mask: np.ndarray,
        sampler: SamplerConfig,
        *,
        image: str,
        planes: tuple[str, ...] = ("axial",),
        batch_size: int | None = None,
        progress: bool = False,
    ) -> SynthesisResult:
        """Synthetic PET (SUVR) from a model-grid T1w (model units) inside ``brain_mask``, with its provenance.

        ``image`` names the image in the noise keys (e.g. ``sub-01_ses-A``), so that images never share noise;
        the provenance's ``wall_time_s`` is the synthesis time.
        """
        cfg, method = self.model.cfg, self.model.method
        plan = plan_sampling(self.model.card, sampler, tuple(planes))
        sampler, scale = plan.sampler, plan.spread_scale
        result = synthesize_volume(
            self.denoiser if method.probabilistic else None,
            t1_model,
            brain_mask,
            self.sde,
            sampler,
            image=image,
            slice_size=cfg.grid.slice_size,
            planes=planes,
            device=self.device,
            batch_size=batch_size,
            conditional=cfg.network.conditional,
            progress=progress,
            predict_slices=partial(self.predict_slices, sampler=sampler),
            evaluations_per_slice=method.network_evaluations(sampler),
            condition_channels=method.condition_channels,
        )
        result = _spread_by(result, scale)
        result.plan = plan
        result.provenance = SynthesisProvenance(
            model=self.model.info(scale if result.std is not None else None),
            sampler=SamplerInfo.of(sampler),
            noise_key=image,
            reference_region=cfg.intensity.suvr_reference,
            wall_time_s=result.seconds,
            planes=tuple(planes),
            precision=self.precision,
            device=self.device.type,
            subnormals_flushed=result.subnormals_flushed,
            calibration_notes=tuple(plan.notes().items()),
        )
        return result

    def regression_views(
        self, t1_model: np.ndarray, brain_mask: np.ndarray, *, image: str, batch_size: int | None = None
    ) -> np.ndarray | None:
        """The method's regression mean along each of :data:`VIEW_PLANES` (stacked in that order), which the single-
        sample SD map compares; None for a method without one. One network evaluation per slice and plane."""
        method = self.model.method
        if not method.has_regression_mean:
            return None
        result = synthesize_volume(
            None,
            t1_model,
            brain_mask,
            self.sde,
            dataclasses.replace(self.model.cfg.sampler, num_samples=1),
            image=image,
            slice_size=self.model.cfg.grid.slice_size,
            planes=VIEW_PLANES,
            device=self.device,
            batch_size=batch_size,
            progress=False,
            predict_slices=lambda mri, keys: method.regression_mean(self.denoiser, mri, self.device),
            evaluations_per_slice=1,
        )
        return np.stack([result.per_plane[plane] for plane in VIEW_PLANES])

    def predict_slices(self, mri: torch.Tensor, keys: list[SliceKey], sampler: SamplerConfig) -> torch.Tensor:
        """The model's PET slices ``[n, 1, H, W]`` for MRI slices ``mri`` (model units), one noise key per slice."""
        return self.model.method.predict(self.denoiser, self.model.cfg, mri, keys, sampler, self.device)


def _spread_by(result: SynthesisResult, scale: float | None) -> SynthesisResult:
    """The samples spread by the calibration's ``scale`` (mean unchanged, SD map scaled); as is without one."""
    if scale is None or result.std is None:
        return result
    samples = inflate(np.stack(result.samples), scale)
    return dataclasses.replace(result, samples=list(samples), std=result.std * np.float32(scale))
