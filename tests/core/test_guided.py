"""The colour guided filter against kornia's guided_blur (its reference), and its 3x3 inverse against LAPACK's."""
from __future__ import annotations

import pytest
import torch

from difftrack_pack.ditcorr.guided import _inverse_symmetric_3x3, guided_filter, subsampled_pixels


def random_pair(batch: int, labels: int, height: int, width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth-and-edgy colour guidance in [0, 1] and soft labels summing to 1 per pixel."""
    generator = torch.Generator().manual_seed(seed)
    guidance = torch.rand(batch, 3, height, width, generator=generator)
    guidance[..., : height // 2, :] *= 0.2  # a strong edge, where the filter follows the guidance
    inputs = torch.rand(batch, labels, height, width, generator=generator).softmax(dim=1)
    return guidance, inputs


@pytest.mark.parametrize("height, width, radius, subsample", [
    (48, 64, 4, 1), (48, 64, 8, 2), (30, 52, 16, 2), (45, 71, 6, 3), (33, 40, 1, 1), (64, 96, 16, 8)])
@pytest.mark.parametrize("eps", [1e-2, 1e-1])
@pytest.mark.parametrize("labels", [1, 3])
def test_guided_filter_equals_kornias_guided_blur(height, width, radius, subsample, eps, labels):
    from kornia.filters import guided_blur  # installed with ComfyUI's requirements, optional there

    guidance, inputs = random_pair(2, labels, height, width, seed=height * width + radius)
    expected = guided_blur(guidance, inputs, 2 * radius + 1, eps, subsample=subsample)
    torch.testing.assert_close(guided_filter(guidance, inputs, radius, eps, subsample), expected, rtol=0, atol=2e-4)


def test_the_closed_form_inverse_equals_linalg_inv_on_random_covariances():
    generator = torch.Generator().manual_seed(3)
    factors = torch.randn(4, 5, 7, 3, 3, generator=generator) * 0.3
    matrices = factors @ factors.transpose(-1, -2) + 1e-2 * torch.eye(3)  # [B, h, w, 3, 3] positive definite
    ours = _inverse_symmetric_3x3(matrices.permute(0, 3, 4, 1, 2)).permute(0, 3, 4, 1, 2)
    torch.testing.assert_close(ours, torch.linalg.inv(matrices), rtol=1e-4, atol=1e-4)


def test_subsampled_pixels_take_every_nth_on_a_multiple_and_stay_inside_elsewhere():
    assert subsampled_pixels(12, 3, "cpu").tolist() == [0, 3, 6, 9]
    assert subsampled_pixels(10, 1, "cpu").tolist() == list(range(10))
    odd = subsampled_pixels(11, 2, "cpu")
    assert len(odd) == 5 and odd.min() >= 0 and odd.max() <= 10 and bool((odd.diff() > 0).all())
    assert subsampled_pixels(2, 4, "cpu").tolist() == [0]  # an axis shorter than the step keeps one pixel


def test_guided_filter_refuses_grey_guidance():
    with pytest.raises(ValueError, match="colour guidance"):
        guided_filter(torch.rand(1, 1, 8, 8), torch.rand(1, 2, 8, 8), 2, 1e-2)
