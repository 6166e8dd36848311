"""Drawing tracks on video frames with torch alone.

Each frame gets fading, tapering trails (the last `trail` frames of each
visible track), then a marker per point: a filled disc with a dark rim while
visible, a hollow ring while occluded, optionally the point's number. Colours
follow each point's position on its first frame (a rainbow over x, lighter
towards the bottom), so neighbouring points share hues and motion reads as
structure. Shapes are rasterised as anti-aliased stamps; where stamps overlap
the most opaque wins, so a trail's fading survives its own overlapping stamps.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

# 3x5 bitmaps of the digits 0-9, rows top to bottom.
_DIGITS = ["111101101101111", "010110010010111", "111001111100111", "111001111001111", "101101111001001",
           "111100111001111", "111100111101111", "111001001001001", "111101111101111", "111101111001111"]


def hue_colours(hue: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] ([N, 3]) of hues in [0, 1) (0 red) at brightness `value` [N], saturated but not fully."""
    k = (torch.tensor([5.0, 3.0, 1.0], device=hue.device)[None, :] + hue[:, None] * 6) % 6
    return value[:, None] * (1 - 0.85 * (torch.minimum(k, 4 - k).clamp(0, 1)))


def point_colours(first_positions: torch.Tensor, frame_size: tuple[int, int]) -> torch.Tensor:
    """RGB in [0, 1] per point ([N, 3]) from its (x, y) on its first frame."""
    height, width = frame_size
    hue = (first_positions[:, 0] / max(width, 1)).clamp(0, 1) * 0.85
    value = 1.0 - 0.25 * (first_positions[:, 1] / max(height, 1)).clamp(0, 1)
    return hue_colours(hue, value)


def overlay_labels(frames: torch.Tensor, labels: torch.Tensor, opacity: float = 0.45) -> torch.Tensor:
    """Frames [T, H, W, 3] with each object of the label maps [T, H, W] (0 the background, i object i) tinted in a
    colour of its own at `opacity` and outlined opaque where its label meets another."""
    count = int(labels.max()) if labels.numel() else 0
    colours = torch.cat([torch.zeros(1, 3), hue_colours(torch.arange(count) / max(count, 1) * 0.85,
                                                        torch.ones(count))]).to(frames.device)
    labels = labels.to(frames.device)
    tint = colours[labels]
    edge = torch.zeros_like(labels, dtype=torch.bool)
    edge[:, :, 1:] |= labels[:, :, 1:] != labels[:, :, :-1]
    edge[:, 1:, :] |= labels[:, 1:, :] != labels[:, :-1, :]
    alpha = torch.where(edge, 1.0, opacity) * (labels > 0) + edge * (labels == 0)
    outline = torch.where(edge[..., None] & (labels[..., None] == 0), torch.ones_like(tint), tint)
    return frames * (1 - alpha[..., None]) + outline * alpha[..., None]


def _rasterise(height: int, width: int, centres: torch.Tensor, radius: torch.Tensor, colours: torch.Tensor,
               alpha: torch.Tensor, shape: str = "disc", inner: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Coverage [H, W] and colour [H, W, 3] of anti-aliased stamps, the most opaque stamp winning each pixel.

    centres [M, 2] (x, y) pixels; radius, alpha [M]; colours [M, 3]; shape
    "disc", "ring" (inner radius `inner`) or "square".
    """
    coverage = torch.zeros(height * width)
    colour = torch.zeros(height * width, 3)
    if centres.shape[0] == 0:
        return coverage.view(height, width), colour.view(height, width, 3)
    reach = int(math.ceil(float(radius.max()))) + 1
    offsets = torch.arange(-reach, reach + 1, dtype=torch.float32)
    dy, dx = torch.meshgrid(offsets, offsets, indexing="ij")
    px = centres[:, 0].floor()[:, None] + dx.flatten()[None]  # [M, K*K] pixel columns
    py = centres[:, 1].floor()[:, None] + dy.flatten()[None]
    ox, oy = px + 0.5 - centres[:, 0:1], py + 0.5 - centres[:, 1:2]
    r = radius[:, None]
    if shape == "square":
        cover = (r - torch.maximum(ox.abs(), oy.abs()) + 0.5).clamp(0, 1)
    else:
        distance = torch.sqrt(ox ** 2 + oy ** 2)
        cover = (r - distance + 0.5).clamp(0, 1)
        if shape == "ring":
            cover = cover * (distance - inner[:, None] + 0.5).clamp(0, 1)
    cover = cover * alpha[:, None]
    inside = (px >= 0) & (px < width) & (py >= 0) & (py < height) & (cover > 0)
    index = (py * width + px).long()[inside]
    values = cover[inside]
    coverage.scatter_reduce_(0, index, values, reduce="amax")
    winner = (values >= coverage[index] - 1e-6).float()
    stamp_colour = colours[:, None, :].expand(-1, cover.shape[1], -1)[inside]
    counts = torch.zeros(height * width).index_add_(0, index, winner)
    colour.index_add_(0, index, stamp_colour * winner[:, None])
    colour = colour / counts.clamp(min=1)[:, None]
    return coverage.view(height, width), colour.view(height, width, 3)


def _over(frame: torch.Tensor, layer: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    coverage, colour = layer
    return frame * (1 - coverage[..., None]) + colour * coverage[..., None]


def _segment_stamps(start: torch.Tensor, end: torch.Tensor, spacing: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Points every `spacing` px along each segment: (centres [M, 2], segment index [M])."""
    length = (end - start).norm(dim=1)
    steps = (length / spacing).ceil().long().clamp(min=1)
    segment = torch.repeat_interleave(torch.arange(start.shape[0]), steps)
    first = torch.cumsum(steps, 0) - steps
    fraction = (torch.arange(int(steps.sum())) - first[segment]).float() / steps[segment]
    return start[segment] + (end - start)[segment] * fraction[:, None], segment


def _digit_stamps(number: int, anchor: torch.Tensor, cell: float) -> torch.Tensor:
    """Centres of the lit cells of `number` written with its top-left at `anchor` (x, y)."""
    centres = []
    for place, char in enumerate(str(number)):
        bitmap = _DIGITS[int(char)]
        for i, bit in enumerate(bitmap):
            if bit == "1":
                col, row = place * 4 + i % 3, i // 3
                centres.append([float(anchor[0]) + (col + 0.5) * cell, float(anchor[1]) + (row + 0.5) * cell])
    return torch.tensor(centres)


def point_masks(path: torch.Tensor, visible: torch.Tensor, frame_size: tuple[int, int], radius: float) -> torch.Tensor:
    """[T, H, W] masks in [0, 1]: an anti-aliased disc of `radius` px at every visible point of every frame."""
    height, width = frame_size
    path, visible = path.float().cpu(), visible.bool().cpu()
    masks = []
    for t in range(path.shape[0]):
        centres = path[t, visible[t]]
        ones = torch.ones(centres.shape[0])
        masks.append(_rasterise(height, width, centres, ones * radius, ones[:, None].expand(-1, 3), ones)[0])
    return torch.stack(masks)


def draw_tracks(frames: torch.Tensor, path: torch.Tensor, visible: torch.Tensor, trail: int = 16,
                radius: float | None = None, line_width: float | None = None, show_ids: bool = False,
                opacity: float = 1.0, on_frame: Callable[[], None] = lambda: None) -> torch.Tensor:
    """Frames with the tracks drawn on them.

    frames: [T, H, W, 3] in [0, 1]; path: [T, N, 2] (x, y) pixels; visible:
    [T, N] bool. trail: how many past frames a trail spans. radius /
    line_width: marker radius and trail width in pixels (default: from the
    frame size). on_frame: called after each frame (progress, cancellation).
    Returns [T, H, W, 3] float32.
    """
    if frames.shape[0] != path.shape[0]:
        raise ValueError(f"The video has {frames.shape[0]} frames but the tracks have {path.shape[0]}: "
                         "draw tracks on the frames they were computed for.")
    frames, path, visible = frames[..., :3].float().cpu(), path.float().cpu(), visible.bool().cpu()
    count, height, width = path.shape[1], frames.shape[1], frames.shape[2]
    radius = radius or max(2.0, min(height, width) / 90)
    line_width = line_width or max(1.0, radius * 0.6)
    first_visible = visible.float().argmax(dim=0)
    colours = point_colours(path[first_visible, torch.arange(count)], (height, width))
    dark = torch.full((count, 3), 0.08)
    out = []
    for t in range(frames.shape[0]):
        frame = frames[t]
        # trails: segments (s-1, s) for s in the last `trail` frames, both ends visible, older ones fainter and thinner
        ages, starts, ends, owners = [], [], [], []
        for s in range(max(1, t - trail + 1), t + 1):
            both = (visible[s - 1] & visible[s]).nonzero()[:, 0]
            starts.append(path[s - 1, both])
            ends.append(path[s, both])
            owners.append(both)
            ages.append(torch.full((both.shape[0],), float(t - s)))
        if owners:
            centres, segment = _segment_stamps(torch.cat(starts), torch.cat(ends))
            owner, age = torch.cat(owners)[segment], torch.cat(ages)[segment]
            fade = 1 - age / trail
            frame = _over(frame, _rasterise(height, width, centres, line_width / 2 * (0.4 + 0.6 * fade),
                                            colours[owner], opacity * fade))
        # markers: dark rim + filled disc while visible, hollow ring while occluded
        shown, hidden = visible[t], ~visible[t]
        ones = torch.ones(count)
        frame = _over(frame, _rasterise(height, width, path[t, shown], ones[shown] * (radius + 1.2), dark[shown], opacity * ones[shown]))
        frame = _over(frame, _rasterise(height, width, path[t, shown], ones[shown] * radius, colours[shown], opacity * ones[shown]))
        frame = _over(frame, _rasterise(height, width, path[t, hidden], ones[hidden] * radius, colours[hidden],
                                        opacity * ones[hidden], shape="ring", inner=ones[hidden] * max(radius - 1.5, 0.5)))
        if show_ids:
            cell = max(1.0, radius / 2)
            for n in range(count):
                cells = _digit_stamps(n, path[t, n] + torch.tensor([radius + 2, -radius - 2 - 2.5 * cell]), cell)
                k = cells.shape[0]
                frame = _over(frame, _rasterise(height, width, cells, torch.full((k,), cell / 2), colours[n].expand(k, 3),
                                                torch.full((k,), opacity), shape="square"))
        out.append(frame.clamp(0, 1))
        on_frame()
    return torch.stack(out)
