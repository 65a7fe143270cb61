import torch

from bids_jdam.data.augment import augment_mri, draw_mri_augmentation


def test_zero_ranges_leave_the_t1w_as_it_is():
    mri = torch.rand(3, 1, 16, 16)
    params = draw_mri_augmentation(3, torch.Generator().manual_seed(0), 0.0, 0.0)
    assert torch.equal(augment_mri(mri, params), mri)


def test_contrast_and_bias_change_mid_tones_and_keep_background_and_range():
    mri = torch.rand(8, 1, 16, 16)
    mri[:, :, :2] = 0.0  # background
    params = draw_mri_augmentation(8, torch.Generator().manual_seed(1), 0.2, 0.1)
    out = augment_mri(mri, params)
    assert out.min() >= 0 and out.max() <= 1
    assert torch.all(out[:, :, :2] == 0)
    assert (out - mri).abs().mean() > 0.005
    assert params[:, 0].abs().max() <= 0.2 and params[:, 1:].abs().max() <= 0.1


def test_the_same_generator_state_draws_the_same_augmentation():
    first = draw_mri_augmentation(4, torch.Generator().manual_seed(5), 0.2, 0.1)
    again = draw_mri_augmentation(4, torch.Generator().manual_seed(5), 0.2, 0.1)
    assert torch.equal(first, again)
