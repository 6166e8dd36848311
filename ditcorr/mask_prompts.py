"""Prompts for a segmentation model (SAM 2/3) from propagated masks: per frame and object a box, a point inside
and a point just outside.

Points use the coordinate format ComfyUI's SAM nodes and KJNodes' points editor read ([{"x": .., "y": ..}],
pixels); boxes are [x_min, y_min, x_max, y_max] pixels, inclusive.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _erode(mask: torch.Tensor) -> torch.Tensor:
    """One 3x3 erosion of a bool mask [H, W] (outside the frame counts as unset)."""
    return -F.max_pool2d(-mask.float()[None, None], 3, stride=1, padding=1)[0, 0] > 0.5


def _nearest(candidates: torch.Tensor, point: torch.Tensor) -> dict[str, int]:
    """The set pixel of candidates [H, W] nearest `point` (x, y), as {"x", "y"}."""
    ys, xs = candidates.nonzero(as_tuple=True)
    best = ((xs.float() - point[0]) ** 2 + (ys.float() - point[1]) ** 2).argmin()
    return {"x": int(xs[best]), "y": int(ys[best])}


def inside_point(mask: torch.Tensor) -> dict[str, int]:
    """The pixel deepest inside a non-empty mask [H, W] (the last erosion that leaves anything; of those pixels the
    one nearest their centroid), so a point prompt falls well inside the object, even a ring- or C-shaped one."""
    core = mask
    while True:
        eroded = _erode(core)
        if not eroded.any():
            break
        core = eroded
    ys, xs = core.nonzero(as_tuple=True)
    return _nearest(core, torch.stack([xs.float().mean(), ys.float().mean()]))


def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """A bool mask [H, W] dilated by a square of half-width `radius`."""
    return F.max_pool2d(mask.float()[None, None], 2 * radius + 1, stride=1, padding=radius)[0, 0] > 0.5


def outside_point(mask: torch.Tensor, background: torch.Tensor, inside: dict[str, int]) -> dict[str, int] | None:
    """A background pixel just outside a mask [H, W]: between half a margin and a margin away from it (a tenth of
    the mask's size, at least 4 pixels: clear of an edge the mask may have slightly missed) and set in
    `background` [H, W], the one nearest the inside point; None when there is none."""
    ys, xs = mask.nonzero(as_tuple=True)
    margin = max(4, int(0.1 * max(int(xs.max() - xs.min()), int(ys.max() - ys.min()))))
    ring = _dilate(mask, margin) & ~_dilate(mask, margin // 2) & background
    return _nearest(ring, torch.tensor([inside["x"], inside["y"]], dtype=torch.float32)) if ring.any() else None


def mask_prompts(labels: torch.Tensor, objects: int) -> list[dict]:
    """For every frame of label maps [T, H, W] (0 the background, i object i): {"frame", "objects": [{"object",
    "box", "positive": [point], "negative": [point]}]}; an object absent from a frame has box None and no points."""
    frames = []
    for t, label in enumerate(labels):
        entries = []
        for index in range(1, objects + 1):
            mask = label == index
            entry = {"object": index, "box": None, "positive": [], "negative": []}
            if mask.any():
                ys, xs = mask.nonzero(as_tuple=True)
                entry["box"] = [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]
                entry["positive"] = [inside_point(mask)]
                outside = outside_point(mask, label == 0, entry["positive"][0])
                entry["negative"] = [outside] if outside is not None else []
            entries.append(entry)
        frames.append({"frame": t, "objects": entries})
    return frames
