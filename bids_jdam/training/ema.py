"""Exponential moving average of a network's weights: what JDAM and the U-Net deliver instead of the last step."""

from __future__ import annotations

import torch


class ExponentialMovingAverage:
    """EMA of a module's state with the usual warm-up, decay_t = min(decay, (1 + t) / (10 + t)).

    Without the warm-up a 0.999 average would still be two-thirds initial noise after 400 steps.
    """

    def __init__(self, module: torch.nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.state = {name: value.detach().clone() for name, value in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for name, value in module.state_dict().items():
            if value.is_floating_point():
                self.state[name].lerp_(value.detach(), 1 - decay)
            else:
                self.state[name].copy_(value)
        self.updates += 1

    def copy_to(self, module: torch.nn.Module) -> torch.nn.Module:
        module.load_state_dict(self.state)
        return module
