"""The fast guided filter (He, Sun and Tang, 2015) with colour guidance, for many label channels at once.

kornia's `guided_blur` computes the same filter (and is the reference in tests/core/test_guided.py), but with
colour guidance it solves each pixel's 3x3 system by LU and combines the coefficients with the guidance through an
einsum that PyTorch runs as millions of 3-element matrix products: on the GPU those two steps took 60 % of the
mask propagation's pixel step at Wan's 480x832 (bench/vos.py --speed --profile). Here the 3x3 system is symmetric
and solved in closed form (its adjugate) and the sums over the three colour channels are written out, so every
step is an elementwise kernel or one of kornia's box filters.
"""
from __future__ import annotations

import functools
import inspect
from typing import Callable

import torch


def subsampled_pixels(size: int, subsample: int, device) -> torch.Tensor:
    """The `max(size // subsample, 1)` pixels an axis keeps when subsampled: row i is the pixel nearest to
    (i + 1/2)·size/rows − subsample/2 (rounding a tie up), so the coarse grid sits where the bilinear upsample of
    the coefficients (align_corners=False) puts it back; pixel subsample·i when size is a multiple of subsample
    (kornia >= 0.9 picks the same pixels)."""
    rows = max(size // subsample, 1)
    i = torch.arange(rows, device=device)
    return ((2 * i + 1) * size + rows * (1 - subsample)).div(2 * rows, rounding_mode="floor").clamp(0, size - 1)


def _box_filter() -> Callable[[torch.Tensor, tuple[int, int]], torch.Tensor]:
    """kornia's box filter: window means [B, C, h, w] with reflected borders, as two 1-D passes where it can."""
    try:
        from kornia.filters import box_blur
    except ImportError as error:  # ComfyUI lists kornia among its requirements; a trimmed install may lack it
        raise ImportError("Edge-aware mask upsampling needs kornia (in ComfyUI's requirements.txt): "
                          "pip install kornia.") from error
    separable = {"separable": True} if "separable" in inspect.signature(box_blur).parameters else {}
    return functools.partial(box_blur, border_type="reflect", **separable)


def _inverse_symmetric_3x3(a: torch.Tensor) -> torch.Tensor:
    """Inverses [B, 3, 3, h, w] of symmetric positive-definite matrices [B, 3, 3, h, w], by the adjugate."""
    a00, a01, a02, a11, a12, a22 = a[:, 0, 0], a[:, 0, 1], a[:, 0, 2], a[:, 1, 1], a[:, 1, 2], a[:, 2, 2]
    c00 = a11 * a22 - a12 * a12
    c01 = a02 * a12 - a01 * a22
    c02 = a01 * a12 - a02 * a11
    c11 = a00 * a22 - a02 * a02
    c12 = a01 * a02 - a00 * a12
    c22 = a00 * a11 - a01 * a01
    determinant = a00 * c00 + a01 * c01 + a02 * c02
    rows = [torch.stack(row, dim=1) for row in ((c00, c01, c02), (c01, c11, c12), (c02, c12, c22))]
    return torch.stack(rows, dim=1) / determinant[:, None, None]


def guided_filter(guidance: torch.Tensor, inputs: torch.Tensor, radius: int, eps: float,
                  subsample: int = 1) -> torch.Tensor:
    """Each input channel filtered edge-aware by a colour image: locally an affine function of the guidance.

    guidance: [B, 3, H, W] float; inputs: [B, L, H, W] float; radius: the window's half-width in pixels (windows of
    2·radius + 1); eps: the regulariser added to the guidance's local covariance (larger smooths more); subsample:
    the coefficients are computed on every subsample-th pixel (subsampled_pixels) with windows shrunk to match,
    then upsampled bilinearly (the fast guided filter). Returns [B, L, H, W]; equals kornia's
    guided_blur(guidance, inputs, 2·radius + 1, eps, subsample=subsample) up to float rounding.
    """
    batch, colours, height, width = guidance.shape
    if colours != 3:
        raise ValueError(f"guided_filter takes colour guidance (3 channels), not {colours}.")
    labels = inputs.shape[1]
    rows, cols = (subsampled_pixels(height, subsample, guidance.device),
                  subsampled_pixels(width, subsample, guidance.device))
    coarse_guide = guidance.index_select(2, rows).index_select(3, cols)
    coarse_input = inputs.index_select(2, rows).index_select(3, cols)
    side = 2 * radius // subsample + 1  # the window of 2·radius + 1 pixels on the coarse grid
    size = (side, side)
    h, w = coarse_guide.shape[-2:]
    box = _box_filter()

    mean_guide = box(coarse_guide, size)  # [B, 3, h, w]
    mean_input = box(coarse_input, size)  # [B, L, h, w]
    pairs = [(i, j) for i in range(3) for j in range(i, 3)]  # the six distinct entries of the symmetric covariance
    products = torch.stack([coarse_guide[:, i] * coarse_guide[:, j] for i, j in pairs], dim=1)
    moments = box(products, size)
    covariance = guidance.new_empty(batch, 3, 3, h, w)
    for index, (i, j) in enumerate(pairs):
        entry = moments[:, index] - mean_guide[:, i] * mean_guide[:, j] + (eps if i == j else 0.0)
        covariance[:, i, j] = entry
        covariance[:, j, i] = entry
    cross = box((coarse_guide[:, :, None] * coarse_input[:, None]).flatten(1, 2), size).view(batch, 3, labels, h, w)
    cross = cross - mean_guide[:, :, None] * mean_input[:, None]  # [B, 3, L, h, w]: guidance-input covariance
    inverse = _inverse_symmetric_3x3(covariance)
    slopes = torch.stack([sum(inverse[:, i, j, None] * cross[:, j] for j in range(3)) for i in range(3)], dim=1)
    offsets = mean_input - (slopes * mean_guide[:, :, None]).sum(dim=1)  # [B, L, h, w]
    mean_slopes = box(slopes.flatten(1, 2), size)
    mean_offsets = box(offsets, size)
    if subsample > 1:
        mean_slopes = torch.nn.functional.interpolate(mean_slopes, size=(height, width), mode="bilinear",
                                                      align_corners=False)
        mean_offsets = torch.nn.functional.interpolate(mean_offsets, size=(height, width), mode="bilinear",
                                                       align_corners=False)
    mean_slopes = mean_slopes.view(batch, 3, labels, height, width)
    output = mean_offsets
    for colour in range(3):  # written out: an einsum over three channels runs as millions of tiny products
        output = torch.addcmul(output, guidance[:, colour, None], mean_slopes[:, colour])
    return output
