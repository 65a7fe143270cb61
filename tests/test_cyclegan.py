"""CycleGAN baseline: network shapes, the image pool, the losses, unpaired batches, training and exact resume."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from bids_jdam.config import CycleGANConfig, small_config, small_cyclegan_config
from bids_jdam.data.dataset import PairedSliceDataset, SubjectVolumes
from bids_jdam.io.atomic import sha256_file as sha256
from bids_jdam.methods.model_dir import load_model_dir
from bids_jdam.models.cyclegan import (
    CycleGAN,
    ImagePool,
    PatchDiscriminator,
    ResnetGenerator,
    cyclegan_translate,
    to_unit_range,
)
from bids_jdam.training.cyclegan import cyclegan_update, identity_loss, unpaired_indices
from bids_jdam.training.loop import Budget
from bids_jdam.workflows.train import TrainingRun, train_model

MRI_RANGE, PET_RANGE = CycleGANConfig.mri_range, CycleGANConfig.pet_range

SIZE = 32


def tiny_cyclegan():
    return dataclasses.replace(small_cyclegan_config(), generator_filters=8, generator_blocks=2, batch_size=4)


def tiny_volumes(n: int) -> list[SubjectVolumes]:
    """Ellipsoid 'brains' whose PET is a smooth function of the T1w, on a 20x24x16 grid."""
    grid = np.stack(np.meshgrid(*(np.linspace(-1, 1, s) for s in (20, 24, 16)), indexing="ij"))
    mask = (grid**2).sum(0) < 0.8
    volumes = []
    for i in range(n):
        rng = np.random.default_rng(i)
        t1 = 0.6 + 0.3 * np.sin(3 * grid[0] + i) * np.cos(2 * grid[1]) + 0.05 * rng.standard_normal(mask.shape)
        t1 = (t1 * mask).astype(np.float32)
        pet = (2.5 * t1 * mask).astype(np.float32)
        volumes.append(SubjectVolumes(f"{i:02d}", "CN", t1, pet, mask, np.diag([4.0, 4.0, 4.0, 1.0])))
    return volumes


def tiny_jdam_config():
    cfg = small_config()
    cfg.grid.slice_size = SIZE
    cfg.train.planes = ("axial", "coronal")
    cfg.train.checkpoint_every = 2
    return cfg


@pytest.mark.parametrize("preset, size, patches", [(small_cyclegan_config, 64, 14), (CycleGANConfig, 128, 14)])
def test_generator_keeps_the_slice_shape_and_discriminator_scores_patches(preset, size, patches):
    cfg = preset()
    x = torch.rand(2, 1, size, size) * 2 - 1
    assert ResnetGenerator(cfg, MRI_RANGE, PET_RANGE)(x).shape == (2, 1, size, size)
    assert PatchDiscriminator(cfg)(x).shape == (2, 1, patches, patches)


def test_translation_is_in_suvr_range_deterministic_and_independent_of_the_batch():
    torch.manual_seed(0)
    generator = CycleGAN(tiny_cyclegan()).mri_to_pet
    mri = torch.rand(5, 1, SIZE, SIZE) * 1.2
    pet = cyclegan_translate(generator, mri)
    assert pet.shape == mri.shape
    assert PET_RANGE[0] <= float(pet.min()) and float(pet.max()) <= PET_RANGE[1]
    assert torch.equal(pet, cyclegan_translate(generator, mri))
    torch.testing.assert_close(cyclegan_translate(generator, mri[2:3]), pet[2:3], atol=1e-5, rtol=0)


def test_image_pool_stores_until_full_then_swaps_with_probability_one_half():
    pool = ImagePool(4, seed=3)
    first = torch.arange(4.0).reshape(4, 1, 1, 1)
    assert torch.equal(pool.query(first), first)  # filling: every image comes straight back
    inserted = {float(v) for v in first.flatten()}
    swapped = 0
    for i in range(100):
        image = torch.full((1, 1, 1, 1), 100.0 + i)
        inserted.add(100.0 + i)
        returned = float(pool.query(image))
        assert returned in inserted
        swapped += returned != 100.0 + i
    assert 35 <= swapped <= 65
    assert len(pool.images) == 4


def test_image_pool_is_reproducible_from_its_seed_and_its_saved_state():
    def run(pool, start, count):
        return [float(pool.query(torch.full((1, 1, 1, 1), float(i)))) for i in range(start, start + count)]

    a, b = ImagePool(3, seed=7), ImagePool(3, seed=7)
    assert run(a, 0, 30) == run(b, 0, 30)
    restored = ImagePool(3, seed=99)
    restored.load_state_tensors(a.state_tensors())
    assert run(restored, 30, 30) == run(a, 30, 30)


def test_empty_pool_passes_images_through():
    images = torch.rand(3, 1, 4, 4)
    assert torch.equal(ImagePool(0).query(images), images)


@torch.no_grad()
def test_identity_loss_is_zero_for_an_identity_generator_only():
    images = torch.rand(4, 1, SIZE, SIZE)
    assert float(identity_loss(nn.Identity(), images)) == 0.0
    assert float(identity_loss(CycleGAN(tiny_cyclegan()).mri_to_pet, images)) > 0.0


def test_unpaired_batches_shuffle_each_side_independently_over_every_slice():
    n, batch = 12, 4
    epoch = [unpaired_indices(n, batch, seed=0, step=s) for s in range(n // batch)]
    mri = np.concatenate([m for m, _ in epoch])
    pet = np.concatenate([p for _, p in epoch])
    assert sorted(mri) == list(range(n)) and sorted(pet) == list(range(n))
    assert not np.array_equal(mri, pet)
    assert all(np.array_equal(a, b) for a, b in zip(unpaired_indices(n, batch, 0, 5), unpaired_indices(n, batch, 0, 5)))
    assert not np.array_equal(unpaired_indices(n, batch, 0, 0)[0], unpaired_indices(n, batch, 1, 0)[0])


def test_training_steps_reduce_the_cycle_loss_on_a_fixed_batch():
    cfg = tiny_cyclegan()
    torch.manual_seed(0)
    model = CycleGAN(cfg)
    optimizers = [
        torch.optim.Adam([*model.mri_to_pet.parameters(), *model.pet_to_mri.parameters()], lr=1e-3, betas=(0.5, 0.999)),
        torch.optim.Adam(
            [*model.pet_discriminator.parameters(), *model.mri_discriminator.parameters()], lr=1e-3, betas=(0.5, 0.999)
        ),
    ]
    pools = {"pet": ImagePool(cfg.pool_size, 0), "mri": ImagePool(cfg.pool_size, 1)}
    pet, mri = PairedSliceDataset(tiny_volumes(1), ("axial",), SIZE).stacked([4, 6, 8, 10])

    @torch.no_grad()
    def cycle() -> float:
        unit = to_unit_range(mri, model.mri_to_pet.source_range)
        return float(F.l1_loss(model.pet_to_mri(model.mri_to_pet(unit)), unit))

    before = cycle()
    for _ in range(8):
        losses = cyclegan_update(model, *optimizers, pools, mri, pet, cfg)
    assert set(losses) >= {"generator", "cycle", "identity", "adversarial", "discriminator_pet", "discriminator_mri"}
    assert cycle() < 0.5 * before


def test_resumed_training_continues_bit_for_bit_and_writes_a_loadable_model_dir(tmp_path):
    cfg = tiny_jdam_config()
    cfg.cyclegan = tiny_cyclegan()
    cfg.train.val_fraction = 0.34  # one of the three subjects is held out
    volumes = {v.subject: v for v in tiny_volumes(3)}
    bids = tmp_path / "bids"
    bids.mkdir()
    (bids / "participants.tsv").write_text("participant_id\tdiagnosis\n" + "".join(f"sub-{s}\tCN\n" for s in volumes))

    def run(folder: str, steps: int, resume: bool = False):
        loader = lambda _bids, _cfg, subjects: [volumes[s] for s in subjects]  # noqa: E731
        return train_model(
            TrainingRun(
                bids,
                tmp_path / folder,
                method="cyclegan",
                load_subjects=loader,
                trained_on="test ellipsoids",
                budget=Budget(max_steps=steps),
                resume=resume,
                device="cpu",
                progress=False,
            ),
            cfg,
        )

    straight = run("straight", 4)
    run("resumed", 2)
    resumed = run("resumed", 4, resume=True)

    a, b = load_file(straight / "weights.safetensors"), load_file(resumed / "weights.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    card = json.loads((resumed / "model_card.json").read_text())
    assert card["steps"] == 4 and card["unpaired"] and card["trained_on"] == "test ellipsoids"
    assert [entry["step"] for entry in card["training_curve"]] == [2, 4]
    straight_curve = json.loads((straight / "model_card.json").read_text())["training_curve"]
    assert [e["mean_loss"] for e in card["training_curve"]] == [e["mean_loss"] for e in straight_curve]
    assert np.isfinite(card["validation"]["psnr_db"]) and -1 <= card["validation"]["ssim"] <= 1
    assert card["sha256"]["weights.safetensors"] == sha256(resumed / "weights.safetensors")

    generator, loaded_cfg, _ = load_model_dir(resumed)
    assert loaded_cfg.cyclegan == cfg.cyclegan  # the sizes are in the typed configuration
    mri = PairedSliceDataset(list(volumes.values()), cfg.train.planes, SIZE).stacked([0, 1])[1]
    assert cyclegan_translate(generator, mri).shape == mri.shape
