"""CycleGAN networks for the MRI->PET baseline (Zhu et al. 2017): ResNet generator, PatchGAN discriminator, image pool.

The networks work on images scaled to [-1, 1] (the generator ends in tanh). Each generator stores the fixed
model-unit ranges of its source and target domains as buffers, so that :func:`cyclegan_translate` can take a
T1w slice in model units and return a PET slice in SUVR with nothing but the generator's own weights.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bids_jdam.config import CycleGANConfig


class ResidualBlock(nn.Module):
    """Two reflection-padded 3x3 convolutions with instance norm, added back to the input."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            nn.InstanceNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            nn.InstanceNorm2d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """Johnson-style encoder, residual blocks, decoder; one channel in, one channel out, tanh output.

    Instance norm without running statistics makes training and inference the same function, so a forward
    pass is deterministic and independent of the batch it is in.
    """

    def __init__(self, cfg: CycleGANConfig, source_range: tuple[float, float], target_range: tuple[float, float]):
        super().__init__()
        width = cfg.generator_filters
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(1, width, 7),
            nn.InstanceNorm2d(width),
            nn.ReLU(inplace=True),
        ]
        for _ in range(cfg.downsamplings):
            layers += [nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.InstanceNorm2d(2 * width), nn.ReLU(True)]
            width *= 2
        layers += [ResidualBlock(width) for _ in range(cfg.generator_blocks)]
        for _ in range(cfg.downsamplings):
            layers += [
                nn.ConvTranspose2d(width, width // 2, 3, stride=2, padding=1, output_padding=1),
                nn.InstanceNorm2d(width // 2),
                nn.ReLU(inplace=True),
            ]
            width //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, 1, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.register_buffer("source_range", torch.tensor(source_range, dtype=torch.float32))
        self.register_buffer("target_range", torch.tensor(target_range, dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        """Translate images in [-1, 1] of the source domain to [-1, 1] of the target domain."""
        return self.net(x)


class PatchDiscriminator(nn.Module):
    """PatchGAN: a fully convolutional classifier that scores overlapping patches as real or fake (LSGAN logits)."""

    def __init__(self, cfg: CycleGANConfig):
        super().__init__()
        width = cfg.discriminator_filters
        layers: list[nn.Module] = [nn.Conv2d(1, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        for n in range(1, cfg.discriminator_layers + 1):
            stride = 2 if n < cfg.discriminator_layers else 1
            next_width = cfg.discriminator_filters * min(2**n, 8)
            layers += [
                nn.Conv2d(width, next_width, 4, stride=stride, padding=1),
                nn.InstanceNorm2d(next_width),
                nn.LeakyReLU(0.2, True),
            ]
            width = next_width
        layers.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class CycleGAN(nn.Module):
    """The four networks trained together: two generators (MRI->PET, PET->MRI) and one discriminator per domain."""

    def __init__(self, cfg: CycleGANConfig):
        super().__init__()
        self.mri_to_pet = ResnetGenerator(cfg, cfg.mri_range, cfg.pet_range)
        self.pet_to_mri = ResnetGenerator(cfg, cfg.pet_range, cfg.mri_range)
        self.pet_discriminator = PatchDiscriminator(cfg)
        self.mri_discriminator = PatchDiscriminator(cfg)
        self.apply(_init_weights)


def _init_weights(module: nn.Module) -> None:
    """CycleGAN's initialization: convolution weights from N(0, 0.02), biases zero."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class ImagePool:
    """A history of generated images (Shrivastava et al.) that the discriminator sees instead of only the latest.

    Until the pool is full every image is stored and returned; afterwards each image is, with probability 0.5,
    swapped for a random stored one (which is returned), else returned as is. The random draws come from the
    pool's own seeded generator, so the pool can be checkpointed and resumed exactly.
    """

    def __init__(self, size: int, seed: int = 0):
        self.size = size
        self.images: list[Tensor] = []
        self.generator = torch.Generator().manual_seed(seed)

    def query(self, images: Tensor) -> Tensor:
        """The batch to show the discriminator in place of ``images`` (detached)."""
        if self.size == 0:
            return images.detach()
        returned = []
        for image in images.detach():
            if len(self.images) < self.size:
                self.images.append(image.clone())
                returned.append(image)
            elif torch.rand((), generator=self.generator) < 0.5:
                slot = int(torch.randint(self.size, (), generator=self.generator))
                returned.append(self.images[slot])
                self.images[slot] = image.clone()
            else:
                returned.append(image)
        return torch.stack(returned)

    def state_tensors(self) -> dict[str, Tensor]:
        """The stored images and the generator state, as plain tensors for a safetensors checkpoint."""
        state = {"rng_state": self.generator.get_state()}
        if self.images:
            state["images"] = torch.stack(self.images).cpu()
        return state

    def load_state_tensors(self, state: dict[str, Tensor], device: torch.device | str = "cpu") -> None:
        self.generator.set_state(state["rng_state"])
        self.images = list(state["images"].to(device).unbind(0)) if "images" in state else []


def to_unit_range(x: Tensor, value_range: Tensor) -> Tensor:
    """Model units -> [-1, 1] (values outside the domain's range are clipped)."""
    low, high = value_range[0], value_range[1]
    return (2 * (x - low) / (high - low) - 1).clamp(-1, 1)


def from_unit_range(x: Tensor, value_range: Tensor) -> Tensor:
    """[-1, 1] -> model units."""
    low, high = value_range[0], value_range[1]
    return low + (x + 1) * (high - low) / 2


@torch.no_grad()
def cyclegan_translate(generator: ResnetGenerator, mri_slices: Tensor) -> Tensor:
    """Synthetic PET (SUVR) for T1w slices in model units, ``[N, 1, H, W]``: one deterministic forward pass each."""
    was_training = generator.training
    generator.eval()
    source = to_unit_range(mri_slices.to(generator.source_range.device, torch.float32), generator.source_range)
    pet = from_unit_range(generator(source), generator.target_range)
    generator.train(was_training)
    return pet


def mri_to_pet_generator(cfg: CycleGANConfig) -> ResnetGenerator:
    """An empty MRI->PET generator of the configured sizes: what a CycleGAN model directory stores."""
    return ResnetGenerator(cfg, cfg.mri_range, cfg.pet_range)
