"""Multi-process training under torchrun: two CPU processes with gloo on the phantom, as users start it on GPUs."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from bids_jdam.config import NetworkConfig, small_config
from bids_jdam.errors import InputError
from bids_jdam.models.model_dir import WEIGHTS, load_model_dir
from bids_jdam.training.checkpoints import checkpoint_steps
from bids_jdam.training.distributed import Ranks
from bids_jdam.training.loop import Budget
from bids_jdam.workflows.train import TrainingRun, train_model

NETWORK = {"channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_resolutions": [32],
           "num_groups": 4, "dropout": 0.0}
DIGEST_LINE = re.compile(r"\[rank (\d)\] .*rank \d of 2: (\d+) steps, mean loss of this rank's slices (\S+), "
                         r"parameters sha256 ([0-9a-f]{64})")


def torchrun(bids_dir, out_dir, config, *options):
    """``torchrun --nproc_per_node 2 -m bids_jdam.cli.train`` on CPU; returns the completed process."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
               "-m", "bids_jdam.cli.train", str(bids_dir), str(out_dir), "--phantom-truth", "--small",
               "--config", str(config), "--device", "cpu", "--no-progress", "--omp-nthreads", "1", "--method", "jdam",
               *options]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def rank_reports(stderr):
    """rank -> (steps, mean loss, parameter digest) from each rank's last log line."""
    return {int(m[1]): (int(m[2]), float(m[3]), m[4]) for m in DIGEST_LINE.finditer(stderr)}


def write_config(path, **train):
    path.write_text(json.dumps({"network": NETWORK, "train": {"planes": ["axial"], **train}}))
    return path


def test_two_ranks_train_one_model_in_step(phantom_dataset, tmp_path):
    out = tmp_path / "model"
    config = write_config(tmp_path / "config.json", batch_size=4, checkpoint_every=2)
    result = torchrun(phantom_dataset, out, config, "--max-steps", "3")
    assert result.returncode == 0, result.stderr[-3000:]
    reports = rank_reports(result.stderr)
    assert sorted(reports) == [0, 1]
    (steps0, loss0, digest0), (steps1, loss1, digest1) = reports[0], reports[1]
    assert steps0 == steps1 == 3
    assert loss0 != loss1  # each rank trained on its own half of every batch...
    assert digest0 == digest1  # ...and DDP's averaged gradients kept the weights identical
    # Rank 0 alone wrote: one model directory, one file pair per checkpoint, nothing else anywhere.
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == ["config.json", "model/README.md", "model/checkpoints/checkpoint-00000002.json",
                       "model/checkpoints/checkpoint-00000002.safetensors",
                       "model/checkpoints/checkpoint-00000003.json",
                       "model/checkpoints/checkpoint-00000003.safetensors", "model/config.json",
                       "model/model_card.json", "model/splits.json", f"model/{WEIGHTS}"]
    _, cfg, card = load_model_dir(out)
    assert card["steps"] == 3 and card["processes"] == 2 and cfg.train.batch_size == 4
    assert "validation on 1 held-out subjects" in result.stderr
    assert result.stderr.count("validation on") == 1  # rank 0 only


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

    cfg = small_config()
    cfg.network = NetworkConfig(**{**NETWORK, "channel_mult": (1, 2), "attention_resolutions": (32,)})
    cfg.train.planes, cfg.train.batch_size, cfg.train.lr, cfg.train.warmup_steps = ("axial",), 4, 1e-3, 1
    single = train_model(TrainingRun(phantom_dataset, tmp_path / "single", method="unet-l1",
                                     budget=Budget(max_steps=4), device="cpu", progress=False), cfg)
    ddp_weights, single_weights = load_file(out / WEIGHTS), load_file(single / WEIGHTS)
    initial = train_model(TrainingRun(phantom_dataset, tmp_path / "initial", method="unet-l1",
                                      budget=Budget(max_steps=0), device="cpu", progress=False), cfg)
    moved = max((single_weights[k] - load_file(initial / WEIGHTS)[k]).abs().max() for k in single_weights)
    differ = max((ddp_weights[k] - single_weights[k]).abs().max() for k in single_weights)
    # Measured: moved 3.6e-3, differ 9.5e-6 (Adam's first steps amplify rounding in tiny gradients); training on
    # one half-batch instead differs by 4.3e-3.
    assert moved > 1e-3  # training moved the weights...
    assert differ < 1e-2 * moved  # ...and the two-rank run moved them the same way


def test_cyclegan_refuses_several_processes(phantom_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(InputError, match="cyclegan trains in one process"):
        train_model(TrainingRun(phantom_dataset, tmp_path / "model", method="cyclegan", device="cpu"), small_config())
    assert not (tmp_path / "model").exists()


def test_ranks_split_a_batch_into_disjoint_halves():
    items = torch.arange(8)
    halves = [Ranks(2, rank).shard(items) for rank in (0, 1)]
    assert torch.equal(torch.cat(halves), items)
    assert torch.equal(Ranks().shard(items), items)
    with pytest.raises(InputError, match="not a multiple"):
        Ranks(3, 0).shard(items)
