"""The motion of a video, measured without the DiT that made it.

Grading generated motion with our own tracker would prove nothing, so these metrics read classical optical flow
(computed by the caller: OpenCV's DIS in bench/ and tests, a dependency of those only) and the frames themselves:

  warp error         mean |I_t(x) - I_{t+1}(x + F_t(x))| over the pixels whose forward flow F_t and backward flow
                     B_t agree (|F_t(x) + B_t(x + F_t(x))|^2 <= 0.01 (|F_t|^2 + |B_t|^2) + 0.5, the usual
                     forward-backward check), colours in [0, 1]: how well each frame predicts the next one;
  motion magnitude   mean |F_t(x)| in px/frame, so that a frozen video cannot win on warp error;
  motion fidelity    between two videos' tracks (DiTFlow and SMM's definition): unit displacement vectors of every
                     track, a similarity matrix of their dot products averaged over time, and the mean over the first
                     video's tracks of the best match among the second's; when both are tracks of the same grid the
                     same-grid pair is left out (SMM subtracts the identity for this). A zero displacement counts
                     as a zero vector (similarity 0), not NaN;
  pan                the motion most pixels share between consecutive frames (the background's pan in the synthetic
                     clips): the per-axis median of the flow, or without a flow the peak of the frames' phase
                     correlation; its mean speed, and whether it is coherent: at least `min_speed` px/frame on
                     average with every frame pair within `tolerance` px of the clip's mean. Phase correlation
                     follows the strongest translation, which a large high-contrast sprite can be: on one synthetic
                     clip (seed 0, 256x256) it read 17 px/frame where the background panned 2.1; the flow's median
                     read the pan. The benchmarks use the median.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def _sample(image: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """image [H, W, C] at pixel positions where [..., 2] (x, y; pixel centres at integers), bilinear, border."""
    height, width = image.shape[:2]
    unit = (where + 0.5) * torch.tensor([2.0 / width, 2.0 / height], dtype=where.dtype) - 1
    sampled = F.grid_sample(image.permute(2, 0, 1)[None].float(), unit.reshape(1, 1, -1, 2).float(), mode="bilinear",
                            padding_mode="border", align_corners=False)
    return sampled[0, :, 0].T.reshape(*where.shape[:-1], image.shape[2])


def _pixel_grid(height: int, width: int) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                            indexing="ij")
    return torch.stack([xs, ys], dim=-1)  # [H, W, 2]


def consistent_flow(forward: torch.Tensor, backward: torch.Tensor) -> torch.Tensor:
    """Where a forward flow [H, W, 2] (frame t -> t+1) and the backward one (t+1 -> t) agree, and the forward flow
    stays inside the frame: [H, W] bool."""
    height, width = forward.shape[:2]
    landed = _pixel_grid(height, width) + forward
    back = _sample(backward, landed)
    inside = (landed[..., 0] >= 0) & (landed[..., 0] <= width - 1) & (landed[..., 1] >= 0) & (landed[..., 1] <= height - 1)
    error = (forward + back).pow(2).sum(-1)
    return inside & (error <= 0.01 * (forward.pow(2).sum(-1) + back.pow(2).sum(-1)) + 0.5)


def warp_error(frames: torch.Tensor, forward: torch.Tensor, backward: torch.Tensor) -> float:
    """frames [T, H, W, C] in [0, 1]; forward/backward flows [T-1, H, W, 2] in pixels. The mean over frame pairs of
    the mean absolute colour error of frame t+1 warped onto frame t, over the pixels passing the check (a pair with
    none counts as error 1)."""
    height, width = frames.shape[1:3]
    grid = _pixel_grid(height, width)
    errors = []
    for t in range(frames.shape[0] - 1):
        valid = consistent_flow(forward[t], backward[t])
        warped = _sample(frames[t + 1], grid + forward[t])
        difference = (warped - frames[t].float()).abs().mean(-1)
        errors.append(float(difference[valid].mean()) if valid.any() else 1.0)
    return float(np.mean(errors))


def motion_magnitude(forward: torch.Tensor) -> float:
    """Mean length of the forward flows [T-1, H, W, 2]: px/frame."""
    return float(forward.float().norm(dim=-1).mean())


def integrate_tracks(forward: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Tracks [T, N, 2] (x, y pixels) of points [N, 2] on frame 0, carried frame to frame by forward flows
    [T-1, H, W, 2] (each step reads the flow where the point is, bilinearly; a point leaving the frame keeps moving
    with the border's flow)."""
    path = [points.float()]
    for t in range(forward.shape[0]):
        path.append(path[-1] + _sample(forward[t], path[-1]))
    return torch.stack(path)


def motion_fidelity(tracks: torch.Tensor, other: torch.Tensor, same_grid: bool = False) -> float:
    """Track-based motion fidelity of `other` ([T, M, 2]) to `tracks` ([T, N, 2]), in [-1, 1]: 1 when every track
    of the first moves like some track of the second at every frame, -1 when every best match moves the opposite
    way. same_grid: the i-th tracks of both videos start at the same point; that pair is left out."""
    def directions(path: torch.Tensor) -> torch.Tensor:
        step = path[1:] - path[:-1]  # [T-1, N, 2]
        return step / step.norm(dim=-1, keepdim=True).clamp(min=1e-6)  # a zero step stays a zero vector

    similarity = torch.einsum("tnc,tmc->nm", directions(tracks.float()), directions(other.float())) / (tracks.shape[0] - 1)
    if same_grid:
        if tracks.shape[1] != other.shape[1] or tracks.shape[1] < 2:
            raise ValueError("same_grid needs two track sets of the same points (at least two).")
        similarity = similarity.masked_fill(torch.eye(tracks.shape[1], dtype=torch.bool), -math.inf)
    return float(similarity.max(dim=1).values.mean())


def phase_shift(first: torch.Tensor, second: torch.Tensor) -> tuple[float, float]:
    """(dx, dy) pixels by which the content of image `first` ([H, W], grey) moved to give `second`: the peak of
    their phase correlation (Hann-windowed), refined to sub-pixel by a parabola through its neighbours."""
    height, width = first.shape
    window = np.outer(np.hanning(height), np.hanning(width))
    a = np.fft.fft2((first.double().numpy() - first.double().numpy().mean()) * window)
    b = np.fft.fft2((second.double().numpy() - second.double().numpy().mean()) * window)
    cross = b * np.conj(a)
    correlation = np.real(np.fft.ifft2(cross / np.maximum(np.abs(cross), 1e-12)))
    row, column = np.unravel_index(np.argmax(correlation), correlation.shape)

    def refine(minus: float, centre: float, plus: float) -> float:
        curvature = minus - 2 * centre + plus
        return 0.0 if curvature >= 0 else 0.5 * (minus - plus) / curvature

    dy = row + refine(correlation[row - 1, column], correlation[row, column], correlation[(row + 1) % height, column])
    dx = column + refine(correlation[row, column - 1], correlation[row, column], correlation[row, (column + 1) % width])
    wrap = lambda shift, size: shift - size if shift > size / 2 else shift  # noqa: E731
    return float(wrap(dx, width)), float(wrap(dy, height))


def dominant_motion(forward: torch.Tensor) -> torch.Tensor:
    """The motion most pixels share in each forward flow [T-1, H, W, 2]: the per-axis median, [T-1, 2] (dx, dy)."""
    return forward.float().flatten(1, 2).median(dim=1).values


def pan_shifts(frames: torch.Tensor) -> torch.Tensor:
    """The global translation between consecutive frames [T, H, W, C]: [T-1, 2] (dx, dy) px/frame."""
    grey = frames[..., :3].float().mean(-1)
    return torch.tensor([phase_shift(grey[t], grey[t + 1]) for t in range(frames.shape[0] - 1)])


def pan_statistics(shifts: torch.Tensor, min_speed: float = 0.5, tolerance: float = 0.75) -> dict[str, float | bool]:
    """mean_speed (the length of the mean shift, px/frame), moving (mean_speed >= min_speed) and coherent (moving,
    and every frame pair's shift within `tolerance` px of the mean) of [T-1, 2] shifts (dominant_motion's or
    pan_shifts')."""
    mean = shifts.mean(0)
    speed = float(mean.norm())
    moving = speed >= min_speed
    return {"mean_speed": speed, "moving": moving,
            "coherent": bool(moving and float((shifts - mean).norm(dim=-1).max()) <= tolerance)}
