"""Turning cost maps into images."""
from __future__ import annotations

import torch
import torch.nn.functional as F

# A perceptually ordered dark-to-bright ramp (black, violet, red, orange, pale yellow).
_RAMP = torch.tensor([
    [0.00, 0.00, 0.02],
    [0.33, 0.06, 0.43],
    [0.80, 0.20, 0.25],
    [0.98, 0.55, 0.04],
    [0.99, 0.99, 0.75],
])


def colorize(values: torch.Tensor) -> torch.Tensor:
    """Map values in [0, 1] ([...]) to RGB in [0, 1] ([..., 3])."""
    scaled = values.clamp(0, 1) * (len(_RAMP) - 1)
    low = scaled.floor().long().clamp(max=len(_RAMP) - 2)
    frac = (scaled - low).unsqueeze(-1)
    return _RAMP[low] * (1 - frac) + _RAMP[low + 1] * frac


def render_heatmaps(maps: torch.Tensor, size: tuple[int, int], frames: torch.Tensor | None = None,
                    opacity: float = 0.6) -> torch.Tensor:
    """Upsample cost maps to frame size, colour them, optionally blend over frames.

    maps: [F, h, w] non-negative; each map is scaled by its own maximum so every
    frame shows where its mass lies. size: (H, W). frames: [F, H, W, 3] in [0, 1]
    or None. Returns [F, H, W, 3] float32 in [0, 1].
    """
    maps = maps.float()
    peak = maps.flatten(1).amax(dim=1).clamp(min=1e-12).view(-1, 1, 1)
    up = F.interpolate((maps / peak).unsqueeze(1), size=size, mode="bilinear", align_corners=False)[:, 0]
    colour = colorize(up)
    if frames is None:
        return colour
    return frames.float().cpu() * (1 - opacity) + colour * opacity
