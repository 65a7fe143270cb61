"""Held-out validation: the same slices, predictions and protocol metrics for every method and every benchmark.

A slice's noise is keyed like the app's, (seed, ``sub-<subject>``, plane, index, sample), so held-out subjects do
not share noise and their errors stay independent for the statistics over subjects; sample k of a K-sample
ensemble is sample index k, as in the participant workflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from bids_jdam.config import JDAMConfig, SamplerConfig
from bids_jdam.data.dataset import SubjectVolumes
from bids_jdam.data.slices import cut_slice, pad_slice, select_slices
from bids_jdam.evaluate.metrics import image_quality
from bids_jdam.runtime.denormals import without_subnormals

VALIDATION_SLICES_PER_PLANE = 4
# End-of-training validation: a cheap sampler on a few slices per held-out subject and plane.
VALIDATION_SAMPLER = SamplerConfig(name="heun", steps=18, corrector_steps=0, num_samples=1, seed=0)


class SlicePredictor(Protocol):
    """The part of a registered method (``bids_jdam.methods.registry.Method``) that validation needs."""

    probabilistic: bool

    def predict(
        self, model: Any, cfg: JDAMConfig, mri: torch.Tensor, keys: list, sampler: SamplerConfig, device: torch.device
    ) -> torch.Tensor: ...


@dataclass(frozen=True)
class ValidationSlices:
    """Held-out slices: truth PET, MRI and brain mask ``[n, 1, size, size]`` with their (subject, plane, index)."""

    pet: torch.Tensor
    mri: torch.Tensor
    mask: torch.Tensor
    keys: list[tuple[str, str, int]]


def validation_slices(
    volumes: list[SubjectVolumes], cfg: JDAMConfig, per_plane: int = VALIDATION_SLICES_PER_PLANE
) -> ValidationSlices:
    """``per_plane`` evenly spaced slices from the middle 60% of each held-out subject's brain, per plane."""
    pet, mri, mask, keys = [], [], [], []
    for volume in volumes:
        for plane in cfg.train.planes:
            indices = select_slices(volume.brain_mask, volume.affine, plane, 1, cfg.grid.slice_range_mm)
            positions = np.round(np.linspace(0.2, 0.8, per_plane) * (len(indices) - 1)).astype(int)
            for index in np.unique(indices[positions]):
                for images, source in ((pet, volume.pet), (mri, volume.t1), (mask, volume.brain_mask)):
                    cut = pad_slice(cut_slice(source, plane, int(index)).astype(np.float32), plane, cfg.grid.slice_size)
                    images.append(torch.from_numpy(cut)[None])
                keys.append((volume.subject, plane, int(index)))
    return ValidationSlices(torch.stack(pet), torch.stack(mri), torch.stack(mask) > 0, keys)


@torch.no_grad()
@without_subnormals
def predict_slices(
    method: SlicePredictor,
    model: Any,
    cfg: JDAMConfig,
    mri: torch.Tensor,
    keys: list[tuple[str, str, int]],
    sampler: SamplerConfig,
    device: torch.device,
    sample: int = 0,
    batch_size: int = 64,
) -> torch.Tensor:
    """Sample ``sample`` of the method's prediction for each MRI slice (one deterministic output if not
    probabilistic)."""
    outputs = []
    for start in range(0, len(mri), batch_size):
        chunk = mri[start : start + batch_size].to(device)
        noise_keys = [
            (sampler.seed, f"sub-{subject}", plane, index, sample)
            for subject, plane, index in keys[start : start + batch_size]
        ]
        outputs.append(method.predict(model, cfg, chunk, noise_keys, sampler, device).cpu())
    return torch.cat(outputs)


def predict_ensemble(
    method: SlicePredictor,
    model: Any,
    cfg: JDAMConfig,
    data: ValidationSlices,
    sampler: SamplerConfig,
    device: torch.device,
    samples: int,
) -> torch.Tensor:
    """``[K, n, 1, H, W]``: K samples of a probabilistic method, the one output of a deterministic one."""
    count = samples if method.probabilistic else 1
    return torch.stack(
        [predict_slices(method, model, cfg, data.mri, data.keys, sampler, device, sample=k) for k in range(count)]
    )


def evaluate_slices(prediction: torch.Tensor, data: ValidationSlices) -> dict[str, Any]:
    """Protocol metrics per slice (brain-masked prediction), averaged per subject and then over subjects."""
    per_subject: dict[str, list[dict[str, float]]] = {}
    for i, (subject, _, _) in enumerate(data.keys):
        mask = data.mask[i, 0].numpy()
        predicted = prediction[i, 0].float().numpy() * mask
        per_subject.setdefault(subject, []).append(image_quality(predicted, data.pet[i, 0].numpy(), mask))
    subject_means = {
        subject: {name: float(np.mean([m[name] for m in rows])) for name in rows[0]}
        for subject, rows in per_subject.items()
    }
    names = next(iter(subject_means.values())).keys()
    summary = {name: float(np.mean([m[name] for m in subject_means.values()])) for name in names}
    return {**summary, "n_subjects": len(subject_means), "n_slices": len(data.keys), "per_subject": subject_means}
