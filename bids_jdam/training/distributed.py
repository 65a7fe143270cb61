"""Multi-process training under ``torchrun``: the process group, per-rank data shards and rank-0-only writing.

``torchrun --nproc_per_node N`` starts N copies of ``bids-jdam-train`` with WORLD_SIZE, RANK and LOCAL_RANK set.
Each rank draws the same global batch of ``train.batch_size`` slices from the shared, seeded batch generator and
trains on its own contiguous part of it; the ranks then average their gradients in one all-reduce, so every rank
takes the same Adam step and a step means the same thing as in a single process. The averaging is explicit rather
than DistributedDataParallel's, because a method may call its networks other than through ``forward`` (the residual
method calls its mean and score networks separately, and its score network only on some steps). Without those
variables (or with WORLD_SIZE=1) everything here is a no-op and training runs as one process.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from bids_jdam.errors import InputError
from bids_jdam.runtime.device import resolve_device

log = logging.getLogger(__name__)

# Rank 0 validates and writes the model while the others wait at a barrier: allow for a long validation.
BARRIER_TIMEOUT = datetime.timedelta(hours=6)


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run: ``world_size`` processes, this one is ``rank`` (``local_rank`` on its node)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 is the only one that logs progress, validates and writes files."""
        return self.rank == 0

    def shard(self, items: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous part of a global batch (its length must be a multiple of the world size)."""
        if len(items) % self.world_size:
            raise InputError(f"batch size {len(items)} is not a multiple of the {self.world_size} training processes")
        per_rank = len(items) // self.world_size
        return items[self.rank * per_rank : (self.rank + 1) * per_rank]

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when ``flag`` is true on one (so all ranks stop at the same step)."""
        if not self.distributed:
            return flag
        value = torch.tensor([int(flag)], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def gather(self, tensors: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Every rank's ``tensors`` (CPU copies), in rank order, on every rank."""
        local = {name: value.cpu() for name, value in tensors.items()}
        if not self.distributed:
            return [local]
        gathered: list[dict[str, torch.Tensor]] = [{} for _ in range(self.world_size)]
        dist.all_gather_object(gathered, local)
        return gathered

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (e.g. filling the preprocessing cache), then the others."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def average_gradients(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        """Each gradient replaced by its mean over the ranks: the gradient of the global batch's mean loss, since
        each rank's loss is the mean over its shard. Parameters without a gradient (a network the step did not use,
        the same on every rank) keep none, as in a single process."""
        if not self.distributed:
            return
        grads = [p.grad for p in parameters if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        for grad, averaged in zip(grads, flat.split([g.numel() for g in grads])):
            grad.copy_(averaged.view_as(grad))

    def broadcast(self, module: torch.nn.Module) -> None:
        """Rank 0's parameters and buffers on every rank, so that the ranks start from the same weights."""
        if self.distributed:
            for value in module.state_dict().values():
                dist.broadcast(value, src=0)


def ranks_from_environment() -> Ranks:
    """WORLD_SIZE/RANK/LOCAL_RANK as torchrun sets them (one process when they are absent)."""
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as error:
        raise InputError(f"WORLD_SIZE/RANK/LOCAL_RANK must be integers ({error})") from None
    return Ranks(world_size, rank, local_rank)


@contextlib.contextmanager
def process_group(device: str) -> Iterator[tuple[Ranks, torch.device]]:
    """This process's ranks and torch device, inside a process group when torchrun started several processes.

    NCCL on CUDA (one GPU per local rank), gloo on CPU; the group is destroyed on the way out, also on errors.
    """
    ranks = ranks_from_environment()
    torch_device = resolve_device(device)
    if not ranks.distributed:
        yield ranks, torch_device
        return
    if torch_device.type == "cuda":
        if ranks.local_rank >= torch.cuda.device_count():
            raise InputError(
                f"LOCAL_RANK {ranks.local_rank}: only {torch.cuda.device_count()} GPUs are visible; "
                "start at most one process per GPU"
            )
        torch_device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(torch_device)
    backend = "nccl" if torch_device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=BARRIER_TIMEOUT)
    log.info("rank %d of %d: %s backend on %s", ranks.rank, ranks.world_size, backend, torch_device)
    try:
        yield ranks, torch_device
    finally:
        dist.destroy_process_group()


def parameter_digest(module: torch.nn.Module) -> str:
    """SHA-256 of a module's parameters and buffers: equal on every rank while the ranks stay in step."""
    digest = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
