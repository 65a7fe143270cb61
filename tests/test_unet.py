"""Score U-Net and the two parameterizations around it, including the unconditional (no-MRI) ablation switch."""

import dataclasses

import pytest
import torch

from bids_jdam.config import JDAMConfig, NetworkConfig, SDEConfig, small_config
from bids_jdam.diffusion.parameterization import PaperScore, PreconditionedDenoiser, build_denoiser
from bids_jdam.models.unet import ScoreUNet

TINY = NetworkConfig(channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(8,), num_groups=4)


def _randomize_output(net: ScoreUNet) -> ScoreUNet:
    """The output convolution starts at zero; give it weights so the network's inputs show in its output."""
    torch.nn.init.normal_(net.output_conv.weight, std=0.1, generator=torch.Generator().manual_seed(0))
    return net.eval()


def test_small_config_shape_and_size():
    net = ScoreUNet(small_config().network, 64)
    out = net(torch.randn(2, 2, 64, 64), torch.zeros(2))
    assert out.shape == (2, 1, 64, 64)
    assert 0.9e6 < sum(p.numel() for p in net.parameters()) < 1.3e6  # the ~1.1 M CPU network


def test_paper_size_network_builds_at_128():
    net = ScoreUNet(JDAMConfig().network, 128)
    assert 40e6 < sum(p.numel() for p in net.parameters()) < 80e6
    assert sum(block.attention is not None for stages in net.encoder for block in stages) == 2  # the 16x16 level


def test_image_size_must_fit_the_levels():
    with pytest.raises(ValueError, match="not divisible"):
        ScoreUNet(small_config().network, 66)


def test_output_depends_on_noise_label_and_every_input_channel():
    net = _randomize_output(ScoreUNet(TINY, 16))
    x = torch.randn(1, 2, 16, 16)
    reference = net(x, torch.zeros(1))
    assert not torch.allclose(reference, net(x, torch.ones(1)))
    for channel in range(2):
        changed = x.clone()
        changed[:, channel] += 1.0
        assert not torch.allclose(reference, net(changed, torch.zeros(1)))


@pytest.mark.parametrize("parameterization", ["paper", "preconditioned"])
def test_unconditional_switch_removes_the_mri_input(parameterization):
    conditional = build_denoiser(_randomize_output(ScoreUNet(TINY, 16)), SDEConfig(parameterization=parameterization))
    unconditional_net = _randomize_output(ScoreUNet(dataclasses.replace(TINY, conditional=False), 16))
    unconditional = build_denoiser(unconditional_net, SDEConfig(parameterization=parameterization))
    assert unconditional_net.input_conv.in_channels == 1 and conditional.net.input_conv.in_channels == 2
    x, sigma = torch.randn(2, 1, 16, 16), torch.tensor([0.1, 3.0])
    mri, other_mri = torch.randn(2, 1, 16, 16), torch.randn(2, 1, 16, 16)
    torch.testing.assert_close(unconditional(x, sigma, mri), unconditional(x, sigma, other_mri), rtol=0, atol=0)
    torch.testing.assert_close(unconditional(x, sigma, mri), unconditional(x, sigma, None), rtol=0, atol=0)
    assert not torch.allclose(conditional(x, sigma, mri), conditional(x, sigma, other_mri))
    with pytest.raises(ValueError, match="needs the MRI"):
        conditional(x, sigma, None)


def test_build_denoiser_follows_the_config():
    net = ScoreUNet(TINY, 16)
    assert isinstance(build_denoiser(net, SDEConfig(parameterization="paper")), PaperScore)
    built = build_denoiser(net, SDEConfig(parameterization="preconditioned", sigma_data=0.7))
    assert isinstance(built, PreconditionedDenoiser) and built.sigma_data == 0.7
    with pytest.raises(ValueError, match="unknown parameterization"):
        build_denoiser(net, SDEConfig(parameterization="vp"))


@pytest.mark.parametrize("parameterization", ["paper", "preconditioned"])
def test_score_is_tweedie_of_the_denoiser(parameterization):
    denoiser = build_denoiser(_randomize_output(ScoreUNet(TINY, 16)), SDEConfig(parameterization=parameterization))
    x, cond, sigma = torch.randn(2, 1, 16, 16), torch.randn(2, 1, 16, 16), torch.tensor([0.05, 2.0])
    expected = (denoiser(x, sigma, cond) - x) / sigma.reshape(-1, 1, 1, 1) ** 2
    torch.testing.assert_close(denoiser.score(x, sigma, cond), expected, rtol=1e-3, atol=1e-3)


def test_paper_score_is_network_output_over_sigma():
    denoiser = PaperScore(_randomize_output(ScoreUNet(TINY, 16)))
    x, cond, sigma = torch.randn(2, 1, 16, 16), torch.randn(2, 1, 16, 16), torch.tensor([0.5, 4.0])
    raw = denoiser.net(torch.cat([x, cond], dim=1), sigma.log())
    torch.testing.assert_close(denoiser.score(x, sigma, cond), raw / sigma.reshape(-1, 1, 1, 1))


def test_untrained_preconditioned_denoiser_is_c_skip_times_x():
    denoiser = PreconditionedDenoiser(ScoreUNet(TINY, 16), sigma_data=0.5)  # zero output convolution
    x, sigma = torch.randn(2, 1, 16, 16), torch.tensor([0.5, 4.0])
    c_skip = 0.25 / (sigma**2 + 0.25)
    torch.testing.assert_close(denoiser(x, sigma, torch.zeros_like(x)), c_skip.reshape(-1, 1, 1, 1) * x)
