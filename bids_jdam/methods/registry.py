"""The method registry: one entry per method, which knows how to build, train, predict, save and load it.

Like the samplers (``bids_jdam.diffusion.samplers.SAMPLERS``), a method is looked up by name; every list of methods
(the CLI's choices, the model directory's check, the benchmarks) comes from :data:`METHODS`. Adding a method is one
class registered with ``METHODS.register`` (the built-in ones are in :mod:`bids_jdam.methods`): the training
loop, the model directory, the synthesis entry point and the validation use only the interface below.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import torch
from torch import nn

from bids_jdam.config import JDAMConfig, SamplerConfig
from bids_jdam.data.dataset import PairedSliceDataset
from bids_jdam.errors import InputError
from bids_jdam.training.distributed import Ranks
from bids_jdam.training.network_trainer import NetworkTrainer
from bids_jdam.training.trainer import Trainer

# A slice's noise key: (seed, image name, plane, slice index, sample index); see bids_jdam.diffusion.noise.
SliceKey = tuple[int, str, str, int, int]


class Method(abc.ABC):
    """One way of turning a T1w slice into a PET slice, from training to prediction."""

    name: ClassVar[str]
    summary: ClassVar[str]  # one line for the CLI's help
    probabilistic: ClassVar[bool] = False  # draws posterior samples (K > 1 gives a spread) with a sampler
    condition_channels: ClassVar[int] = 1  # what a probabilistic model's denoiser takes as cond beside x_t
    has_regression_mean: ClassVar[bool] = False  # :meth:`regression_mean` gives a point prediction

    def configure(self, cfg: JDAMConfig) -> JDAMConfig:
        """A copy of ``cfg`` with the settings this method fixes (e.g. no MRI channel for the ablation)."""
        return JDAMConfig.from_dict(cfg.to_dict())

    def prepare(self, cfg: JDAMConfig, training: PairedSliceDataset, from_data: bool) -> JDAMConfig:
        """Settings taken from the training data at the start of a fresh run (``from_data``: where not given)."""
        return cfg

    @abc.abstractmethod
    def build_network(self, cfg: JDAMConfig) -> nn.Module:
        """The network the model directory stores, freshly initialized."""

    def batch_size(self, cfg: JDAMConfig) -> int:
        """Slices per training step, over all processes."""
        return cfg.train.batch_size

    def as_model(self, net: nn.Module, cfg: JDAMConfig) -> nn.Module:
        """What predicts (and what the loss calls) around the stored network: a denoiser, or the network itself."""
        return net

    def gradient_groups(self, net: nn.Module) -> list[list[nn.Parameter]]:
        """The parameters whose gradient norm is clipped together: the whole network, unless it holds networks
        with losses of their own."""
        return [list(net.parameters())]

    def trainer(
        self, cfg: JDAMConfig, dataset: PairedSliceDataset, device: torch.device, seed: int, ranks: Ranks
    ) -> Trainer:
        """A fresh training run of this method: by default one network with Adam, clipping and EMA."""
        return NetworkTrainer(self, cfg, dataset, device, seed, ranks)

    @abc.abstractmethod
    def predict(
        self,
        model: Any,
        cfg: JDAMConfig,
        mri: torch.Tensor,
        keys: list[SliceKey],
        sampler: SamplerConfig,
        device: torch.device,
    ) -> torch.Tensor:
        """PET slices ``[n, 1, H, W]`` for MRI slices ``mri`` (model units), one noise key per slice.

        ``model`` is :meth:`as_model` of the loaded network, or the synthesis entry point's wrapper of it.
        """

    def network_evaluations(self, sampler: SamplerConfig) -> int:
        """Network calls per slice and sample: the unit of synthesis cost."""
        return 1

    def regression_mean(self, model: Any, mri: torch.Tensor, device: torch.device) -> torch.Tensor:
        """A deterministic point prediction of PET slices in one network evaluation, for methods that
        have one (``has_regression_mean``): the single-sample SD map compares it between the planes."""
        raise NotImplementedError(f"the {self.name} method has no one-evaluation regression mean")

    def card_fields(self, cfg: JDAMConfig) -> dict[str, Any]:
        """What the model card says about the method beyond its name."""
        return {}

    def stored_config(self, config: dict[str, Any], card: dict[str, Any]) -> dict[str, Any]:
        """``config.json`` as this version reads it (a method whose older model directories differ fixes it here)."""
        return config


class MethodRegistry:
    """Methods by name, in registration order."""

    def __init__(self) -> None:
        self._methods: dict[str, Method] = {}

    def register(self, method: Method) -> Method:
        if method.name in self._methods:
            raise ValueError(f"a method named {method.name!r} is already registered")
        self._methods[method.name] = method
        return method

    def unregister(self, name: str) -> None:
        del self._methods[name]

    def names(self) -> list[str]:
        return list(self._methods)

    def named(self, name: Any, where: str = "method") -> Method:
        """The method called ``name``; an unknown name is one line naming ``where`` it came from and the choices."""
        if not isinstance(name, str) or name not in self._methods:
            raise InputError(f"{where}: unknown method {name!r}; expected one of {', '.join(self._methods)}")
        return self._methods[name]

    def __iter__(self):
        return iter(list(self._methods.values()))


METHODS = MethodRegistry()
