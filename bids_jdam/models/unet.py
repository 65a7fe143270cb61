"""The JDAM score network: a U-Net of ResNet blocks with self-attention at low resolution (paper, Figs. 2-3).

Input is the noisy PET ``x_t`` stacked with the MRI ``y`` (one channel when the unconditional ablation is
configured); output is one channel whose meaning (score * sigma or denoiser residual) is set by the
parameterization wrapping the network (:mod:`bids_jdam.diffusion.parameterization`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bids_jdam.config import NetworkConfig

# Gaussian Fourier features of the noise label, as in score-SDE's NCSN++ (fixed random frequencies, scale 16).
FOURIER_SCALE = 16.0
FOURIER_SEED = 0


def _group_norm(channels: int, num_groups: int) -> nn.GroupNorm:
    """GroupNorm with as many groups as requested that divide ``channels`` (small widths get fewer groups)."""
    groups = math.gcd(channels, num_groups)
    return nn.GroupNorm(groups, channels, eps=1e-6)


class FourierNoiseEmbedding(nn.Module):
    """sin/cos of the scalar noise label at fixed random frequencies, then a two-layer MLP."""

    def __init__(self, fourier_dim: int, embed_dim: int):
        super().__init__()
        generator = torch.Generator().manual_seed(FOURIER_SEED)
        self.register_buffer("frequencies", torch.randn(fourier_dim // 2, generator=generator) * FOURIER_SCALE)
        self.mlp = nn.Sequential(nn.Linear(fourier_dim, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))

    def forward(self, noise_label: Tensor) -> Tensor:
        phase = 2 * math.pi * noise_label[:, None].float() * self.frequencies[None, :]
        return self.mlp(torch.cat([phase.sin(), phase.cos()], dim=1))


class ResnetBlock(nn.Module):
    """GroupNorm, conv, noise-embedding linear, GroupNorm, dropout, conv, with SiLU activations (paper, Fig. 3)."""

    def __init__(self, in_channels: int, out_channels: int, embed_dim: int, dropout: float, num_groups: int):
        super().__init__()
        self.norm1 = _group_norm(in_channels, num_groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.embed = nn.Linear(embed_dim, out_channels)
        self.norm2 = _group_norm(out_channels, num_groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor, embedding: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.embed(F.silu(embedding))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        # Rescaled residual sum (NCSN++ skip_rescale) keeps activations O(1) through deep stacks.
        return (self.skip(x) + h) / math.sqrt(2.0)


class AttentionBlock(nn.Module):
    """Single-head self-attention over pixels: GroupNorm and four linears (q, k, v, out), residual."""

    def __init__(self, channels: int, num_groups: int):
        super().__init__()
        self.norm = _group_norm(channels, num_groups)
        self.query = nn.Linear(channels, channels)
        self.key = nn.Linear(channels, channels)
        self.value = nn.Linear(channels, channels)
        self.out = nn.Linear(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # [B, HW, C]
        attended = F.scaled_dot_product_attention(self.query(tokens), self.key(tokens), self.value(tokens))
        h = self.out(attended).transpose(1, 2).reshape(batch, channels, height, width)
        return (x + h) / math.sqrt(2.0)


class ResnetStage(nn.Module):
    """One ResNet block, followed by attention when the stage runs at an attention resolution."""

    def __init__(self, in_channels: int, out_channels: int, embed_dim: int, cfg: NetworkConfig, attention: bool):
        super().__init__()
        self.resnet = ResnetBlock(in_channels, out_channels, embed_dim, cfg.dropout, cfg.num_groups)
        self.attention = AttentionBlock(out_channels, cfg.num_groups) if attention else None

    def forward(self, x: Tensor, embedding: Tensor) -> Tensor:
        x = self.resnet(x, embedding)
        return self.attention(x) if self.attention is not None else x


class ScoreUNet(nn.Module):
    """Encoder/decoder of ResNet stages with skip connections and a ResNet-attention-ResNet bottleneck.

    ``image_size`` must be divisible by 2 ** (len(cfg.channel_mult) - 1); attention runs at every level whose
    resolution is listed in ``cfg.attention_resolutions`` and always in the bottleneck.
    """

    def __init__(self, cfg: NetworkConfig, image_size: int, condition_channels: int = 1):
        super().__init__()
        levels = len(cfg.channel_mult)
        if image_size % 2 ** (levels - 1):
            raise ValueError(
                f"image size {image_size} is not divisible by 2**{levels - 1}, as {levels} U-Net levels require"
            )
        self.conditional = cfg.conditional
        self.in_channels = 1 + (condition_channels if cfg.conditional else 0)  # x_t, then the condition
        embed_dim = 4 * cfg.channels
        self.noise_embedding = FourierNoiseEmbedding(cfg.channels, embed_dim)
        self.input_conv = nn.Conv2d(self.in_channels, cfg.channels, 3, padding=1)

        widths = [cfg.channels * mult for mult in cfg.channel_mult]
        resolutions = [image_size // 2**level for level in range(levels)]
        skip_widths = [cfg.channels]
        self.encoder = nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        width = cfg.channels
        for level, (level_width, resolution) in enumerate(zip(widths, resolutions)):
            stages = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                attention = resolution in cfg.attention_resolutions
                stages.append(ResnetStage(width, level_width, embed_dim, cfg, attention))
                width = level_width
                skip_widths.append(width)
            self.encoder.append(stages)
            if level < levels - 1:
                self.downsamplers.append(nn.Conv2d(width, width, 3, stride=2, padding=1))
                skip_widths.append(width)

        self.middle = nn.ModuleList(
            [
                ResnetStage(width, width, embed_dim, cfg, attention=True),
                ResnetStage(width, width, embed_dim, cfg, attention=False),
            ]
        )

        self.decoder = nn.ModuleList()
        self.upsamplers = nn.ModuleList()
        for level in reversed(range(levels)):
            stages = nn.ModuleList()
            for _ in range(cfg.num_res_blocks + 1):
                attention = resolutions[level] in cfg.attention_resolutions
                stages.append(ResnetStage(width + skip_widths.pop(), widths[level], embed_dim, cfg, attention))
                width = widths[level]
            self.decoder.append(stages)
            if level > 0:
                self.upsamplers.append(nn.Conv2d(width, width, 3, padding=1))

        self.output_norm = _group_norm(width, cfg.num_groups)
        self.output_conv = nn.Conv2d(width, 1, 3, padding=1)
        # Zero output at initialisation: the wrapper starts as "score 0" / "D = c_skip x", a stable start.
        nn.init.zeros_(self.output_conv.weight)
        nn.init.zeros_(self.output_conv.bias)

    def forward(self, x: Tensor, noise_label: Tensor) -> Tensor:
        """x: [B, C, H, W] with C = 2 ([x_t, y]) or 1 (unconditional); noise_label: [B]. Returns [B, 1, H, W]."""
        if x.shape[1] != self.in_channels:
            raise ValueError(f"ScoreUNet expects {self.in_channels} input channels, got {x.shape[1]}")
        embedding = self.noise_embedding(noise_label)
        h = self.input_conv(x)
        skips = [h]
        for level, stages in enumerate(self.encoder):
            for stage in stages:
                h = stage(h, embedding)
                skips.append(h)
            if level < len(self.downsamplers):
                h = self.downsamplers[level](h)
                skips.append(h)
        for stage in self.middle:
            h = stage(h, embedding)
        for level, stages in enumerate(self.decoder):
            for stage in stages:
                h = stage(torch.cat([h, skips.pop()], dim=1), embedding)
            if level < len(self.upsamplers):
                h = self.upsamplers[level](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.output_conv(F.silu(self.output_norm(h)))
