"""Point-tracking metrics: TAP-Vid (δ^x, δavg, Jaccard, AJ, OA) and DiffTrack's PCK.

TAP-Vid convention: coordinates scaled to a 256x256 raster; thresholds
1, 2, 4, 8, 16 px; only frames after the query frame ("first" mode) or every
frame but the query frame ("strided" mode) are scored; metrics are computed per
video and averaged over videos.
"""
from __future__ import annotations

import math

import torch

THRESHOLDS = (1, 2, 4, 8, 16)
QUERY_MODES = ("first", "strided")


def to_raster(points: torch.Tensor, frame_size: tuple[int, int], raster: tuple[int, int] = (256, 256)) -> torch.Tensor:
    """(x, y) pixels of a (height, width) frame -> (x, y) on a raster of (height, width)."""
    (height, width), (rh, rw) = frame_size, raster
    return points * torch.tensor([rw / width, rh / height], dtype=points.dtype)


def evaluation_mask(query_frames: torch.Tensor, frame_count: int, query_mode: str = "first") -> torch.Tensor:
    """Which (point, frame) pairs are scored: [N, T] bool from query frames [N]."""
    if query_mode not in QUERY_MODES:
        raise ValueError(f"Unknown query mode {query_mode!r}; use one of {QUERY_MODES}.")
    frames = torch.arange(frame_count)[None, :]
    query = query_frames.long()[:, None]
    return frames > query if query_mode == "first" else frames != query


def tapvid_metrics(pred_tracks: torch.Tensor, pred_visible: torch.Tensor, gt_tracks: torch.Tensor,
                   gt_visible: torch.Tensor, query_frames: torch.Tensor, query_mode: str = "first") -> dict[str, float]:
    """TAP-Vid metrics of one video, coordinates already on the 256x256 raster.

    pred_tracks, gt_tracks: [N, T, 2] (x, y); pred_visible, gt_visible: [N, T]
    bool; query_frames: [N]. Returns delta_1..delta_16, delta_avg,
    jaccard_1..jaccard_16, aj, oa (fractions in [0, 1]). A ratio with nothing to count (no visible scored point
    for δ, nothing scored for OA, and so on) is NaN, as tapnet's metrics are, so averages can leave it out.
    """
    scored = evaluation_mask(query_frames, gt_tracks.shape[1], query_mode)
    visible, predicted = gt_visible.bool(), pred_visible.bool()
    distance2 = ((pred_tracks.double() - gt_tracks.double()) ** 2).sum(-1)
    out = {"oa": _ratio(((predicted == visible) & scored).sum().item(), scored.sum().item())}
    gt_positives = (visible & scored).sum().item()
    for threshold in THRESHOLDS:
        within = distance2 < threshold ** 2
        correct = within & visible
        out[f"delta_{threshold}"] = _ratio((correct & scored).sum().item(), gt_positives)
        true_positives = (correct & predicted & scored).sum().item()
        false_positives = (((~visible) & predicted) | ((~within) & predicted)) & scored
        out[f"jaccard_{threshold}"] = _ratio(true_positives, gt_positives + false_positives.sum().item())
    out["delta_avg"] = sum(out[f"delta_{t}"] for t in THRESHOLDS) / len(THRESHOLDS)
    out["aj"] = sum(out[f"jaccard_{t}"] for t in THRESHOLDS) / len(THRESHOLDS)
    return out


def _ratio(count: float, total: float) -> float:
    return count / total if total else math.nan


def average(per_video: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over videos (TAP-Vid averages per video), leaving out the videos where it is NaN (nothing
    to count there: averaging a 0 in would punish a video for having no visible point); NaN when no video has it."""
    means = {}
    for key in per_video[0]:
        counted = [m[key] for m in per_video if not math.isnan(m[key])]
        means[key] = sum(counted) / len(counted) if counted else math.nan
    return means


def pck(pred_tracks: torch.Tensor, gt_tracks: torch.Tensor, gt_visible: torch.Tensor, frame_size: tuple[int, int],
        threshold: float = 8.0, reference_size: tuple[int, int] = (480, 720)) -> float:
    """DiffTrack's matching accuracy: share of visible points within `threshold` px at a 720x480 reference size."""
    pred = to_raster(pred_tracks, frame_size, reference_size)
    gt = to_raster(gt_tracks, frame_size, reference_size)
    visible = gt_visible.bool()
    hits = ((pred - gt).norm(dim=-1) < threshold) & visible
    return hits.sum().item() / max(visible.sum().item(), 1)


def static_jitter(pred_tracks: torch.Tensor, gt_tracks: torch.Tensor, gt_visible: torch.Tensor, still: float = 0.01) -> float:
    """RMS frame-to-frame displacement of predicted tracks where the exact track stands still, in the tracks' units.

    pred_tracks, gt_tracks: [N, T, 2] (x, y); gt_visible: [N, T] bool. A frame pair counts where the exact point moves
    by at most `still` and is visible on both frames. NaN when no pair counts.
    """
    step = lambda tracks: (tracks[:, 1:].double() - tracks[:, :-1].double()).norm(dim=-1)  # noqa: E731  [N, T-1]
    counted = (step(gt_tracks) <= still) & gt_visible[:, 1:].bool() & gt_visible[:, :-1].bool()
    if not counted.any():
        return math.nan
    return step(pred_tracks)[counted].pow(2).mean().sqrt().item()
