"""Video object segmentation metrics as the DAVIS benchmark computes them: J (region IoU), F (boundary F-measure), J&F.

Conventions of the DAVIS evaluation (semi-supervised): the first frame (the given
mask) and the last frame are not scored; J of an empty prediction against an empty
truth is 1; F matches boundary pixels within a tolerance of ceil(0.008 x the frame
diagonal) pixels (a disk), with precision 1 and recall 0 when the prediction has
no boundary but the truth has, and the reverse. Per object, J and F are means over
the scored frames; J&F is their mean. Torch only.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

BOUNDARY_TOLERANCE = 0.008  # of the frame diagonal, DAVIS's bound_th


def region_similarity(predicted: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """J per frame: intersection over union of masks [T, H, W] (bool). Returns [T]; 1 where both are empty."""
    predicted, truth = predicted.bool(), truth.bool()
    intersection = (predicted & truth).flatten(1).sum(1).double()
    union = (predicted | truth).flatten(1).sum(1).double()
    return torch.where(union == 0, torch.ones_like(union), intersection / union.clamp(min=1))


def boundary_map(masks: torch.Tensor) -> torch.Tensor:
    """Boundary pixels of masks [T, H, W] (bool): a pixel differs from its right, lower or lower-right neighbour
    (on the last row and column, from the one neighbour there is), as DAVIS's seg2bmap marks them."""
    masks = masks.bool()
    east, south, south_east = torch.zeros_like(masks), torch.zeros_like(masks), torch.zeros_like(masks)
    east[:, :, :-1], south[:, :-1, :], south_east[:, :-1, :-1] = masks[:, :, 1:], masks[:, 1:, :], masks[:, 1:, 1:]
    boundary = (masks ^ east) | (masks ^ south) | (masks ^ south_east)
    boundary[:, -1, :] = masks[:, -1, :] ^ east[:, -1, :]
    boundary[:, :, -1] = masks[:, :, -1] ^ south[:, :, -1]
    boundary[:, -1, -1] = False
    return boundary


def _dilate(masks: torch.Tensor, radius: int) -> torch.Tensor:
    """masks [T, H, W] (bool) dilated by a disk of `radius` pixels (x^2 + y^2 <= r^2)."""
    steps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    disk = ((steps[:, None] ** 2 + steps[None, :] ** 2) <= radius ** 2).float()[None, None]
    hits = F.conv2d(masks.float()[:, None], disk, padding=radius)
    return hits[:, 0] > 0.5


def boundary_measure(predicted: torch.Tensor, truth: torch.Tensor, tolerance: float = BOUNDARY_TOLERANCE) -> torch.Tensor:
    """F per frame: boundary F-measure of masks [T, H, W] (bool). tolerance: a fraction of the frame diagonal (< 1)
    or pixels (>= 1). Returns [T]."""
    height, width = truth.shape[-2:]
    radius = int(tolerance if tolerance >= 1 else math.ceil(tolerance * math.hypot(height, width)))
    predicted_boundary, truth_boundary = boundary_map(predicted), boundary_map(truth)
    matched_predicted = (predicted_boundary & _dilate(truth_boundary, radius)).flatten(1).sum(1).double()
    matched_truth = (truth_boundary & _dilate(predicted_boundary, radius)).flatten(1).sum(1).double()
    count_predicted = predicted_boundary.flatten(1).sum(1).double()
    count_truth = truth_boundary.flatten(1).sum(1).double()
    # No boundary predicted: precision 1 (nothing wrong was drawn); no true boundary: recall 1. With one of them
    # empty and not the other, the other ratio is 0, so F is 0; with both empty F is 1.
    precision = torch.where(count_predicted == 0, torch.ones_like(count_predicted), matched_predicted / count_predicted.clamp(min=1))
    recall = torch.where(count_truth == 0, torch.ones_like(count_truth), matched_truth / count_truth.clamp(min=1))
    total = precision + recall
    return torch.where(total == 0, torch.zeros_like(total), 2 * precision * recall / total.clamp(min=1e-12))


def davis_scores(predicted: torch.Tensor, truth: torch.Tensor, tolerance: float = BOUNDARY_TOLERANCE) -> dict[str, float]:
    """J, F and J&F of one object through a video: masks [T, H, W], first and last frames left out (T >= 3)."""
    if predicted.shape != truth.shape or predicted.ndim != 3:
        raise ValueError(f"Predicted masks {list(predicted.shape)} and true masks {list(truth.shape)} must both be "
                         "[frames, height, width].")
    if truth.shape[0] < 3:
        raise ValueError("DAVIS scores leave out the first and last frames: give at least 3 frames.")
    j = region_similarity(predicted[1:-1], truth[1:-1]).mean().item()
    f = boundary_measure(predicted[1:-1], truth[1:-1], tolerance).mean().item()
    return {"j": j, "f": f, "jf": (j + f) / 2}
