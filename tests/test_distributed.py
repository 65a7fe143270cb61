"""Multi-process training under torchrun: two CPU processes with gloo on the phantom, as users start it on GPUs."""

import contextlib
import json
import os
import re
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from bids_jdam.config import NetworkConfig, SamplerConfig, small_config
from bids_jdam.errors import InputError
from bids_jdam.io.checkpoints import checkpoint_steps
from bids_jdam.methods.model_dir import WEIGHTS, load_model_dir
from bids_jdam.training.distributed import Ranks
from bids_jdam.training.loop import Budget
from bids_jdam.workflows.train import TrainingRun, train_model

NETWORK = {
    "channels": 8,
    "channel_mult": [1, 2],
    "num_res_blocks": 1,
    "attention_resolutions": [32],
    "num_groups": 4,
    "dropout": 0.0,
}
DIGEST_LINE = re.compile(
    r"\[rank (\d)\] .*rank \d of 2: (\d+) steps, mean loss of this rank's slices (\S+), "
    r"parameters sha256 ([0-9a-f]{64})"
)


def torchrun(bids_dir, out_dir, config, *options):
    """``torchrun --nproc_per_node 2 -m bids_jdam.cli.train`` on CPU; returns the completed process."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--standalone",
        "-m",
        "bids_jdam.cli.train",
        str(bids_dir),
        str(out_dir),
        "--phantom-truth",
        "--small",
        "--config",
        str(config),
        "--device",
        "cpu",
        "--no-progress",
        "--omp-nthreads",
        "1",
        "--method",
        "jdam",
        *options,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def rank_reports(stderr):
    """rank -> (steps, mean loss, parameter digest) from each rank's last log line."""
    return {int(m[1]): (int(m[2]), float(m[3]), m[4]) for m in DIGEST_LINE.finditer(stderr)}


# A sampler cheap enough that validating and calibrating the residual model after training take seconds.
CHEAP_SAMPLER = {"name": "heun", "steps": 2, "corrector_steps": 0}


def write_config(path, **train):
    path.write_text(json.dumps({"network": NETWORK, "sampler": CHEAP_SAMPLER, "train": {"planes": ["axial"], **train}}))
    return path


def single_process_config(**train):
    """The configuration ``--small --config`` gives the torchrun runs, for a single-process run to compare with."""
    cfg = small_config()
    cfg.network = NetworkConfig(**{**NETWORK, "channel_mult": (1, 2), "attention_resolutions": (32,)})
    cfg.train.planes = ("axial",)
    cfg.sampler = SamplerConfig(**CHEAP_SAMPLER)
    for name, value in train.items():
        setattr(cfg.train, name, value)
    return cfg


def one_process_runs(bids_dir, tmp_path, method, cfg, steps):
    """Model directories of ``method`` trained in one process for ``steps`` steps ("single") and for none
    ("initial": the starting weights)."""
    return {
        name: train_model(
            TrainingRun(
                bids_dir,
                tmp_path / name,
                method=method,
                budget=Budget(max_steps=budget),
                device="cpu",
                progress=False,
                validation_sampler=SamplerConfig(**CHEAP_SAMPLER),
            ),
            cfg,
        )
        for name, budget in (("single", steps), ("initial", 0))
    }


def weight_gap(ddp_dir, single_dir, initial_dir, prefix=""):
    """(how far single-process training moved the weights, how far the two-rank run is from it), as Euclidean norms
    over the parameters whose names start with ``prefix``. Norms, not the largest element: Adam's first steps move
    an element with a near-zero gradient by about the learning rate whatever its sign, so rounding in one tiny
    gradient can flip one element and dominate a maximum."""
    ddp, single, initial = (load_file(d / WEIGHTS) for d in (ddp_dir, single_dir, initial_dir))
    keys = [k for k in single if k.startswith(prefix)]

    def norm(a, b):
        return float(sum(((a[k] - b[k]).double() ** 2).sum() for k in keys) ** 0.5)

    return norm(single, initial), norm(ddp, single)


@pytest.mark.slow  # three torch processes; the shared batch noise and gradient averaging have their unit tests
def test_two_ranks_train_the_default_method_as_one_process(phantom_dataset, tmp_path):
    """The default method (an L1 U-Net and a score network used on every third step only) on 2 ranks x 2 slices
    follows 1 process x 4 slices: the ranks share the global batch and its noise and average their gradients."""
    train = {"batch_size": 4, "checkpoint_every": 2, "lr": 1e-3, "warmup_steps": 1}
    out = tmp_path / "ddp"
    result = torchrun(
        phantom_dataset,
        out,
        write_config(tmp_path / "config.json", **train),
        "--method",
        "jdam-residual",
        "--max-steps",
        "4",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    reports = rank_reports(result.stderr)
    assert sorted(reports) == [0, 1]
    (steps0, loss0, digest0), (steps1, loss1, digest1) = reports[0], reports[1]
    assert steps0 == steps1 == 4
    assert loss0 != loss1  # each rank trained on its own half of every batch...
    assert digest0 == digest1  # ...and the averaged gradients kept the weights identical
    # Rank 0 alone wrote: one model directory, one file pair per checkpoint, nothing else anywhere.
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == [
        "config.json",
        "ddp/README.md",
        "ddp/checkpoints/checkpoint-00000002.json",
        "ddp/checkpoints/checkpoint-00000002.safetensors",
        "ddp/checkpoints/checkpoint-00000004.json",
        "ddp/checkpoints/checkpoint-00000004.safetensors",
        "ddp/config.json",
        "ddp/model_card.json",
        "ddp/splits.json",
        f"ddp/{WEIGHTS}",
    ]
    _, cfg, card = load_model_dir(out)
    assert card["steps"] == 4 and card["processes"] == 2 and cfg.train.batch_size == 4
    assert result.stderr.count("validation on 1 held-out subjects") == 1  # rank 0 only

    cfg = single_process_config(**train)
    runs = one_process_runs(phantom_dataset, tmp_path, "jdam-residual", cfg, steps=4)
    for network in ("mean.", "score."):
        moved, differ = weight_gap(out, runs["single"], runs["initial"], network)
        assert moved > 1e-2, network  # training moved the weights...
        assert differ < 2e-2 * moved, (network, moved, differ)  # ...and the two-rank run moved them the same way


@pytest.mark.slow
def test_two_ranks_match_one_process_and_resume(phantom_dataset, tmp_path):
    """The L1 U-Net has no noise, so 2 ranks x 2 slices must follow 1 process x 4 slices up to rounding."""
    config = write_config(tmp_path / "config.json", batch_size=4, checkpoint_every=100, lr=1e-3, warmup_steps=1)
    out = tmp_path / "ddp"
    # --minutes makes the ranks agree every step on whether time is up (here it never is).
    first = torchrun(phantom_dataset, out, config, "--method", "unet-l1", "--max-steps", "2", "--minutes", "60")
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = torchrun(phantom_dataset, out, config, "--method", "unet-l1", "--max-steps", "4", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from step 2" in resumed.stderr and checkpoint_steps(out / "checkpoints") == [2, 4]
    assert rank_reports(resumed.stderr)[0][2] == rank_reports(resumed.stderr)[1][2]

    cfg = single_process_config(batch_size=4, lr=1e-3, warmup_steps=1)
    runs = one_process_runs(phantom_dataset, tmp_path, "unet-l1", cfg, steps=4)
    moved, differ = weight_gap(out, runs["single"], runs["initial"])
    assert moved > 1e-2  # training moved the weights...
    assert differ < 2e-2 * moved  # ...and the two-rank run moved them the same way


@pytest.mark.slow
def test_cyclegan_trains_on_two_ranks_and_resumes(phantom_dataset, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "train": {"planes": ["axial"]},
                "cyclegan": {
                    "batch_size": 2,
                    "generator_filters": 8,
                    "discriminator_filters": 8,
                    "generator_blocks": 1,
                },
            }
        )
    )
    out = tmp_path / "model"
    first = torchrun(phantom_dataset, out, config, "--method", "cyclegan", "--max-steps", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = torchrun(phantom_dataset, out, config, "--method", "cyclegan", "--max-steps", "3", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from step 2" in resumed.stderr and "no image pools" not in resumed.stderr
    reports = rank_reports(resumed.stderr)
    assert reports[0][0] == reports[1][0] == 3 and reports[0][2] == reports[1][2]


def test_an_odd_batch_refuses_two_processes(phantom_dataset, tmp_path, monkeypatch):
    """The check comes before any training: one process asked to be rank 0 of 2 with a batch of 3."""
    monkeypatch.setattr("bids_jdam.workflows.train.process_group", _fake_group)
    cfg = single_process_config(batch_size=3)
    with pytest.raises(InputError, match="3 slices per step .* not a multiple of the 2 training processes"):
        train_model(TrainingRun(phantom_dataset, tmp_path / "model", method="unet-l1", device="cpu"), cfg)
    assert not (tmp_path / "model").exists()


@contextlib.contextmanager
def _fake_group(device):
    yield Ranks(2, 0), torch.device("cpu")


def test_ranks_split_a_batch_into_disjoint_halves():
    items = torch.arange(8)
    halves = [Ranks(2, rank).shard(items) for rank in (0, 1)]
    assert torch.equal(torch.cat(halves), items)
    assert torch.equal(Ranks().shard(items), items)
    with pytest.raises(InputError, match="not a multiple"):
        Ranks(3, 0).shard(items)
