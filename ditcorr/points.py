"""Query points from what users type or click, and tracks in the formats other tools read."""
from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import torch

from .track import Tracks

FLOAT32_MAX = float(np.finfo(np.float32).max)


def parse_points(text: str, default_frame: int = 0) -> torch.Tensor:
    """Query points [N, 3] (x, y, frame) from JSON.

    Accepts KJNodes PointsEditor output [{"x": .., "y": ..}], the same with a
    query frame [{"x", "y", "t"}], and [[x, y], ...] or [[x, y, t], ...].
    Points without a frame get `default_frame`.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"Cannot read the points: not JSON ({error.msg} at line {error.lineno}, column {error.colno}). "
                         'Write [{"x": 10, "y": 20}] or [[10, 20]].') from None
    except RecursionError:
        raise ValueError('Cannot read the points: the JSON is nested too deeply. Write [{"x": 10, "y": 20}].') from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise ValueError('Points must be a JSON list, like [{"x": 10, "y": 20}] or [[10, 20]].')
    rows = []
    for index, item in enumerate(data):
        if isinstance(item, dict) and "x" in item and "y" in item:
            row = (item["x"], item["y"], item.get("t", default_frame))
        elif isinstance(item, (list, tuple)) and len(item) in (2, 3):
            row = (*item, default_frame)[:3]
        else:
            raise ValueError(f"Point {index} ({json.dumps(item)}) is neither {{\"x\": .., \"y\": ..}} nor [x, y].")
        try:
            values = [float(v) for v in row]
        except (TypeError, ValueError, OverflowError):
            values = [float("nan")]
        if not all(math.isfinite(v) and abs(v) <= FLOAT32_MAX for v in values):  # points are kept as float32
            raise ValueError(f"Point {index} ({json.dumps(item)[:80]}) has a coordinate that is not a finite number "
                             "(or too large for one).")
        rows.append(values)
    if not rows:
        raise ValueError("No points given: add at least one point.")
    return torch.tensor(rows, dtype=torch.float32)


def grid_points(count: int, frame_size: tuple[int, int], mask: torch.Tensor | None = None, frame: int = 0) -> torch.Tensor:
    """A count x count grid of query points [N, 3] on `frame`, kept only where `mask` ([H, W], > 0.5) is set."""
    if count < 1:
        raise ValueError("The grid needs at least 1 point per side.")
    height, width = frame_size
    xs = (torch.arange(count) + 0.5) * width / count
    ys = (torch.arange(count) + 0.5) * height / count
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    points = torch.stack([xx.flatten(), yy.flatten(), torch.full((count * count,), float(frame))], dim=1)
    if mask is not None:
        if tuple(mask.shape) != (height, width):
            raise ValueError(f"The mask is {mask.shape[1]}x{mask.shape[0]} but the frames are {width}x{height}.")
        keep = mask[points[:, 1].long(), points[:, 0].long()] > 0.5
        points = points[keep]
        if points.shape[0] == 0:
            raise ValueError("No grid point falls inside the mask: enlarge the mask or use a denser grid.")
    return points


def to_comfy_tracks(tracks: Tracks) -> dict:
    """ComfyUI's TRACKS: track_path [T, N, 2] float pixels, track_visibility [T, N] bool (as core WanMove reads)."""
    return {"track_path": tracks.path.detach().float().cpu(), "track_visibility": tracks.visible.bool().cpu()}


def check_tracks(path: torch.Tensor, visible: torch.Tensor | None = None) -> None:
    """ValueError naming what is wrong unless path is a finite [T, N, 2] tensor and visible (if given) a [T, N] one."""
    if not isinstance(path, torch.Tensor) or path.ndim != 3 or path.shape[2] != 2:
        raise ValueError(f"Track paths must be a [frames, points, 2] tensor, not {_describe(path)}.")
    if not torch.isfinite(path.float()).all():
        raise ValueError("Track paths hold non-finite coordinates (NaN or infinity): export only finite tracks.")
    if visible is not None and (not isinstance(visible, torch.Tensor) or tuple(visible.shape) != tuple(path.shape[:2])):
        raise ValueError(f"Track visibility must be a [frames, points] = {list(path.shape[:2])} tensor, "
                         f"not {_describe(visible)}.")


def _describe(value) -> str:
    return f"shape {list(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__


def tracks_to_json(path: torch.Tensor) -> str:
    """A list of tracks, each a list of {"x", "y"} per frame: the coordinate strings KJNodes, ATI and core WanMove read."""
    check_tracks(path)
    return json.dumps([[{"x": round(x, 2), "y": round(y, 2)} for x, y in path[:, n].tolist()] for n in range(path.shape[1])])


def tracks_to_npz(path: torch.Tensor, visible: torch.Tensor) -> bytes:
    """TAP-Vid / CoTracker layout: tracks [N, T, 2] (x, y), occluded [N, T]."""
    check_tracks(path, visible)
    buffer = io.BytesIO()
    np.savez(buffer, tracks=path.detach().permute(1, 0, 2).float().cpu().numpy(), occluded=~visible.T.bool().cpu().numpy())
    return buffer.getvalue()


def tracks_to_csv(path: torch.Tensor, visible: torch.Tensor) -> str:
    """One row per (point, frame): point, frame, x, y, visible."""
    check_tracks(path, visible)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["point", "frame", "x", "y", "visible"])
    for n in range(path.shape[1]):
        for t in range(path.shape[0]):
            writer.writerow([n, t, f"{float(path[t, n, 0]):.2f}", f"{float(path[t, n, 1]):.2f}", int(visible[t, n])])
    return out.getvalue()
