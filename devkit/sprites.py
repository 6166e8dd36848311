"""Finding the synthetic world's sprites in a video, generated or rendered: outlined, saturated regions (the
renderer draws every sprite as one shaded colour with a black outline), and how long the same one stays."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage


@dataclass
class Sprite:
    centre: tuple[float, float]  # (x, y) pixels
    colour: np.ndarray  # mean RGB of the region
    area: int


def outlined_sprites(frame: torch.Tensor, min_area: int = 300) -> list[Sprite]:
    """The sprites a frame [H, W, 3] shows as the training clips draw them: saturated regions of `min_area` px or
    more with dark pixels around them (over 20 % of a 6-px ring; about 0.4 % of the background is that dark)."""
    frame = frame.detach().float().clamp(0, 1)
    brightest, darkest = frame.amax(dim=-1).numpy(), frame.amin(dim=-1).numpy()
    regions, count = ndimage.label(ndimage.binary_opening(brightest - darkest > 0.45))
    areas = np.bincount(regions.ravel(), minlength=count + 1)
    found = []
    for index, box in enumerate(ndimage.find_objects(regions), start=1):
        if box is None or areas[index] < min_area:
            continue
        box = tuple(slice(max(0, s.start - 7), s.stop + 7) for s in box)  # room for the 6-px ring
        region = regions[box] == index
        ring = ndimage.binary_dilation(region, iterations=6) & ~region
        if (brightest[box][ring] < 0.35).mean() > 0.2:
            ys, xs = np.nonzero(region)
            found.append(Sprite((float(xs.mean() + box[1].start), float(ys.mean() + box[0].start)),
                                frame.numpy()[box][region].mean(0), int(areas[index])))
    return found


def longest_run_with_sprites(clip: torch.Tensor) -> int:
    """The most consecutive frames of a clip [T, H, W, 3] that each show an outlined sprite."""
    longest = run = 0
    for frame in clip:
        run = run + 1 if outlined_sprites(frame) else 0
        longest = max(longest, run)
    return longest


def sprite_persistence(clip: torch.Tensor, reach: float = 0.1, colour_tolerance: float = 0.25) -> int:
    """The most consecutive frames of a clip [T, H, W, 3] in which one sprite is found again: a sprite of frame t
    continues in frame t+1 when a sprite there lies within `reach` of the frame size of it and has nearly its colour
    (mean RGB within `colour_tolerance`). 0 when no frame shows a sprite."""
    limit = reach * max(clip.shape[1:3])
    runs: list[tuple[Sprite, int]] = []  # the sprites of the last frame with their run lengths
    longest = 0
    for frame in clip:
        current = []
        for sprite in outlined_sprites(frame):
            previous = [length for before, length in runs
                        if np.hypot(sprite.centre[0] - before.centre[0], sprite.centre[1] - before.centre[1]) <= limit
                        and np.abs(sprite.colour - before.colour).max() <= colour_tolerance]
            current.append((sprite, 1 + max(previous, default=0)))
        runs = current
        longest = max([longest] + [length for _, length in runs])
    return longest
