"""The trainer of every single-network method (JDAM, its ablation, the U-Net): Adam with warm-up, clipping and EMA.

The method supplies the network, what the loss calls (``as_model``: a denoiser around the network, or the network)
and the loss; this class owns the optimizer, the EMA and the random generators. All ranks share the batch and noise
generators (the same global batch and its noise, each rank training on its shard, with gradients averaged over the
ranks), so N processes take the steps one process would; only dropout draws per rank.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import torch

from bids_jdam.config import JDAMConfig
from bids_jdam.data.augment import augment_mri, draw_mri_augmentation
from bids_jdam.data.dataset import PairedSliceDataset
from bids_jdam.diffusion.losses import GlobalBatchNoise, NoiseSource
from bids_jdam.training.distributed import Ranks
from bids_jdam.training.ema import ExponentialMovingAverage
from bids_jdam.training.optimizer_state import load_optimizer_tensors, optimizer_tensors
from bids_jdam.training.trainer import Trainer

log = logging.getLogger(__name__)


class SingleNetworkMethod(Protocol):
    """What :class:`NetworkTrainer` needs from a method (``bids_jdam.methods.registry.Method`` provides it)."""

    name: str

    def build_network(self, cfg: JDAMConfig) -> torch.nn.Module: ...

    def as_model(self, net: torch.nn.Module, cfg: JDAMConfig) -> torch.nn.Module: ...

    def loss(
        self,
        model: torch.nn.Module,
        cfg: JDAMConfig,
        pet: torch.Tensor,
        mri: torch.Tensor,
        generator: NoiseSource,
        step: int,
    ) -> torch.Tensor: ...

    def gradient_groups(self, net: torch.nn.Module) -> list[list[torch.nn.Parameter]]: ...


class NetworkTrainer(Trainer):
    """One network, one Adam, one EMA, trained on random batches of paired slices."""

    def __init__(
        self,
        method: SingleNetworkMethod,
        cfg: JDAMConfig,
        dataset: PairedSliceDataset,
        device: torch.device,
        seed: int,
        ranks: Ranks = Ranks(),
    ):
        super().__init__(method.name, cfg, device)
        self.method, self.dataset, self.ranks = method, dataset, ranks
        torch.manual_seed(seed)
        # On CUDA the convolutions run in bf16 autocast on channels-last tensors (tensor cores); CPU stays as it is.
        self.memory_format = torch.channels_last if self.device.type == "cuda" else torch.contiguous_format
        self.net = method.build_network(cfg).to(self.device, memory_format=self.memory_format)
        if ranks.rank:
            torch.manual_seed(seed + ranks.rank)  # dropout differs between ranks; the initial weights do not
        ranks.broadcast(self.net)
        self.model = method.as_model(self.net, cfg)
        self.ema = ExponentialMovingAverage(self.net, cfg.train.ema_decay)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=cfg.train.lr)
        self.batch_generator = torch.Generator().manual_seed(seed)
        self.noise_generator = torch.Generator(self.device).manual_seed(seed + 1)
        self.noise = GlobalBatchNoise(self.noise_generator, ranks.world_size, ranks.rank)

    @property
    def batch_size(self) -> int:
        return self.cfg.train.batch_size

    def learning_rate(self) -> float:
        """Linear warm-up to the configured rate over ``warmup_steps``."""
        return self.cfg.train.lr * min(1.0, (self.step + 1) / max(1, self.cfg.train.warmup_steps))

    def update(self) -> float:
        """One Adam step on a random batch (this rank's shard of it); returns this rank's loss."""
        self.net.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate()
        items = torch.randint(len(self.dataset), (self.cfg.train.batch_size,), generator=self.batch_generator)
        augmentation = draw_mri_augmentation(
            len(items), self.batch_generator, self.cfg.train.mri_log_gamma_range, self.cfg.train.mri_bias_amplitude
        )
        pet, mri = (
            t.to(self.device, memory_format=self.memory_format) for t in self.dataset.stacked(self.ranks.shard(items))
        )
        mri = augment_mri(mri, self.ranks.shard(augmentation))
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            loss = self.method.loss(self.model, self.cfg, pet, mri, self.noise, self.step)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.ranks.average_gradients(self.net.parameters())
        for group in self.method.gradient_groups(self.net):
            torch.nn.utils.clip_grad_norm_(group, self.cfg.train.grad_clip)
        self.optimizer.step()
        self.ema.update(self.net)
        return float(loss.detach())

    def delivered(self) -> torch.nn.Module:
        """A fresh network carrying the EMA weights."""
        return self.ema.copy_to(self.method.build_network(self.cfg).to(self.device))

    def ema_model(self) -> torch.nn.Module:
        """What predicts with the EMA weights (a denoiser or the U-Net), in eval mode."""
        return self.method.as_model(self.delivered(), self.cfg).eval()

    def _dropout_states(self) -> dict[str, torch.Tensor]:
        states = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            states["cuda"] = torch.cuda.get_rng_state(self.device)
        return states

    @staticmethod
    def _rng_prefix(rank: int) -> str:
        """Rank 0 keeps the single-process names (``rng.torch``), rank r uses ``rng.rank{r}.torch``."""
        return "rng." if rank == 0 else f"rng.rank{rank}."

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Weights, EMA, Adam moments, the shared generators and every rank's dropout state (gathered: call it on
        every rank)."""
        tensors = {f"net.{k}": v for k, v in self.net.state_dict().items()}
        tensors |= {f"ema.{k}": v for k, v in self.ema.state.items()}
        adam, adam_rest = optimizer_tensors("optimizer", self.optimizer)
        tensors |= adam
        tensors["rng.batches"] = self.batch_generator.get_state()
        tensors["rng.noise"] = self.noise_generator.get_state()
        for rank, states in enumerate(self.ranks.gather(self._dropout_states())):
            tensors |= {self._rng_prefix(rank) + name: value for name, value in states.items()}
        return tensors, {"world_size": self.ranks.world_size, "ema_updates": self.ema.updates, "optimizer": adam_rest}

    def load_state(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        self.net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        self.ema.state = {k[4:]: v.to(self.device) for k, v in tensors.items() if k.startswith("ema.")}
        self.ema.updates = state["ema_updates"]
        load_optimizer_tensors("optimizer", self.optimizer, tensors, state["optimizer"])
        self.batch_generator.set_state(tensors["rng.batches"])
        self.noise_generator.set_state(tensors["rng.noise"])
        prefix = self._rng_prefix(self.ranks.rank)
        if prefix + "torch" not in tensors:
            log.warning(
                "rank %d: the checkpoint has no dropout state for this rank (it was written by %d processes); "
                "its dropout is seeded afresh, so the run will not repeat an uninterrupted one exactly",
                self.ranks.rank,
                state.get("world_size", 1),
            )
            return
        torch.set_rng_state(tensors[prefix + "torch"])
        if prefix + "cuda" in tensors and self.device.type == "cuda":
            torch.cuda.set_rng_state(tensors[prefix + "cuda"], self.device)
