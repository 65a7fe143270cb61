"""The denoiser as the sampler calls it: on CUDA in bf16 autocast, channels-last, optionally compiled.

Sampling spends nearly all its time in the U-Net, so this is where GPU throughput is won. The sampler's own
arithmetic (the ODE/SDE updates and the noise) stays in float32: only the network runs in reduced precision, and
its output is cast back, so samplers and seeds behave the same at every precision. On CPU the default is float32
(bf16 on CPUs without native support is slower, and the CPU path is what the tests pin down).
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

from bids_jdam.config import PRECISIONS

log = logging.getLogger("bids_jdam.synthesis")

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` is bf16 on a CUDA GPU that supports it, fp16 on an older GPU, fp32 on CPU."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    if precision != "auto":
        return precision
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


class InferenceDenoiser:
    """The model as synthesis calls it (D(x, sigma, cond) for the samplers, U(y, label) for a regression);
    ``precision`` says what the network actually runs in, ``module`` is the model itself."""

    def __init__(
        self, denoiser: nn.Module, device: torch.device | str, precision: str = "auto", compile_network: bool = False
    ):
        self.device = torch.device(device)
        self.precision = resolve_precision(precision, self.device)
        denoiser.eval()
        self.module = denoiser
        if self.device.type == "cuda":
            denoiser.to(memory_format=torch.channels_last)
        # dynamic=False: the batch shape is fixed for a run except its last chunk (one recompilation at most).
        self.network = torch.compile(denoiser, dynamic=False) if compile_network else denoiser
        self._dtype = _DTYPES.get(self.precision)
        log.info(
            "sampling network on %s in %s%s%s",
            self.device,
            self.precision,
            ", channels-last" if self.device.type == "cuda" else "",
            ", compiled" if compile_network else "",
        )

    def __call__(self, *inputs: Tensor | None) -> Tensor:
        if self.device.type == "cuda":
            inputs = tuple(
                t.contiguous(memory_format=torch.channels_last) if t is not None and t.ndim == 4 else t for t in inputs
            )
        with (
            torch.inference_mode(),
            torch.autocast(self.device.type, dtype=self._dtype, enabled=self._dtype is not None),
        ):
            out = self.network(*inputs)
        return out.float().contiguous()
