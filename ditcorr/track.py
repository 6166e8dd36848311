"""Zero-shot point tracking from captured queries and keys (DiffTrack, with a better read-out).

For each query point (x, y on source frame t) and every other frame, the
symmetric cost of the point's query row is averaged over the chunks holding
both frames and over the fused (block, step) selections, then read out:
  argmax         the best token's centre (published behaviour, token-quantised)
  refined        soft-argmax of the cost in a window around the argmax (sub-token)
  refined+pixel  refined, then aligned on the frames' pixels and carried through time (ditcorr.refine)
A point is visible where tracking it back (the found point's forward rows to
the query frame) lands near where it started, and the cost peak stands out
from a flat map.
Token frames of a natively encoded video sit between source frames; tracks are
interpolated to every source frame.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

import torch

from .cost import forward_rows, pair_costs, sample_tokens
from .features import FeatureChunk
from .fused import PEAK_CELLS, available, refined_peaks
from .refine import PixelSettings, prefetch_frames, refine_tracks
from .streaming import DeviceWindow, FrameCopier, to_device

Chunks = list[FeatureChunk]
DIT_READOUTS = ("argmax", "refined")  # from the DiT's costs alone
PIXEL_READOUT = "refined+pixel"
READOUTS = (*DIT_READOUTS, PIXEL_READOUT)


@dataclass
class Tracks:
    """path: [T, N, 2] (x, y) pixels; visible: [T, N] bool; confidence: [T, N] peak cost over a flat map;
    cycle_error: [T, N] tokens by which tracking the found point back misses the query (0 on the query frame)."""

    path: torch.Tensor
    visible: torch.Tensor
    confidence: torch.Tensor
    cycle_error: torch.Tensor


@dataclass
class TrackSettings:
    readout: str = "refined"
    window: int = 2  # soft-argmax half-width in tokens: (2w+1)^2 tokens
    temperature: float | None = None  # softmax temperature, sqrt(head dim) when None
    cycle_tolerance: float = 1.0  # tokens a point may miss its start when tracked back
    min_confidence: float = 3.0  # cost peak over a flat map (1.0) below which a point counts as occluded
    point_batch: int = 1024  # query rows per cost computation
    memory_budget: int = 5 * 2**26  # bytes of float32 cost maps per batched computation (pairs x heads x rows x tokens)
    fused_kernel: bool = True  # the cost maps' head mean by a Triton kernel on CUDA (ditcorr.fused); False: torch ops
    pixel: PixelSettings = field(default_factory=PixelSettings)  # the refined+pixel read-out's alignment

    @property
    def dit_readout(self) -> str:
        """The read-out of the DiT's costs (the pixel step starts from `refined`)."""
        return "refined" if self.readout == PIXEL_READOUT else self.readout


def read_out(cost: torch.Tensor, readout: str = "refined", window: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-grid position of each map's peak.

    cost: [N, h, w] non-negative. Returns (positions [N, 2] as (column, row) in
    token units, token centres at integers; peak value [N]).
    """
    if readout not in DIT_READOUTS:
        raise ValueError(f"Unknown read-out {readout!r}; use one of {DIT_READOUTS}.")
    n, h, w = cost.shape
    if readout == "refined" and window >= 1 and available(cost.device) and h * w <= PEAK_CELLS:
        return refined_peaks(cost, window)  # one kernel for the three dozen small ops below
    peak, flat = cost.reshape(n, -1).max(dim=1)
    row, col = (flat // w).float(), (flat % w).float()
    if readout == "argmax" or window < 1:
        return torch.stack([col, row], dim=1), peak
    # The window shrinks at the grid's border so that it stays symmetric: a clipped window would pull the estimate inward.
    offsets = torch.arange(-window, window + 1, device=cost.device, dtype=torch.float32)
    reach_r = torch.minimum(row, h - 1 - row).clamp(max=window)[:, None]
    reach_c = torch.minimum(col, w - 1 - col).clamp(max=window)[:, None]
    rows = (row[:, None] + offsets).clamp(0, h - 1)  # [N, K]
    cols = (col[:, None] + offsets).clamp(0, w - 1)
    index = rows.long()[:, :, None] * w + cols.long()[:, None, :]  # [N, K, K]
    weights = cost.reshape(n, -1).gather(1, index.reshape(n, -1)).reshape(index.shape).float()
    weights = weights * ((offsets.abs() <= reach_r)[:, :, None] & (offsets.abs() <= reach_c)[:, None, :])
    total = weights.sum(dim=(1, 2)).clamp(min=1e-12)
    refined_row = (weights.sum(dim=2) * rows).sum(dim=1) / total
    refined_col = (weights.sum(dim=1) * cols).sum(dim=1) / total
    return torch.stack([refined_col, refined_row], dim=1), peak


def _holders(selections: list[Chunks], anchor: float, position: float) -> tuple[tuple[int, int], ...]:
    """(selection, chunk) pairs whose chunk holds both frames."""
    return tuple((i, c) for i, chunks in enumerate(selections) for c, (frames, _) in enumerate(chunks)
                 if anchor in frames and position in frames)


def _mean_over(holders, selections: list[Chunks], device_window: DeviceWindow, cost, sources: list[float],
               targets: list[float], points: torch.Tensor, **options) -> torch.Tensor:
    """`cost` ([G, N, h, w]) of G frame pairs, averaged over the chunks (of every selection) holding them, each read
    through the device window."""
    chunks = [selections[i][c] for i, c in holders]
    values = [cost(qk, [frames.index(p) for p in sources], qk, [frames.index(p) for p in targets], points, **options)
              for frames, qk in ((frames, device_window.get(qk)) for frames, qk in chunks)]
    return values[0] if len(values) == 1 else sum(values) / len(values)


def track_points(selections: list[Chunks], queries: torch.Tensor, frame_size: tuple[int, int], frame_count: int,
                 settings: TrackSettings = TrackSettings(), on_frame: Callable[[], None] = lambda: None,
                 device_window: DeviceWindow | None = None, frames: torch.Tensor | None = None,
                 copier: FrameCopier | None = None) -> Tracks:
    """Track query points through a video.

    selections: one chunk list per fused (block, step) capture, as
        DitFeatures.select returns; all with the same chunk layout.
    queries: [N, 3] (x, y, frame) with x, y in pixels of frame_size and the
        query frame a source-frame index.
    on_frame: called after each (query frame, target frame) pair: progress, cancellation.
    device_window: where to compute (features stored elsewhere are streamed there a few chunks at a time); None =
        where the features live.
    frames: [T, H, W, C] the video in [0, 1], for the refined+pixel read-out (anywhere: copied a few at a time).
    copier: those frames already on their way (prefetch_frames of the same frames and queries), when the caller
        started them before extracting the features so that the copies overlap the extraction; closed here.
    Returns Tracks over all `frame_count` source frames, on the compute device.
    """
    if settings.readout == PIXEL_READOUT:
        if frames is None:
            raise ValueError(f"The {PIXEL_READOUT} read-out aligns points on the video's pixels: give the frames "
                             "(connect the images), or choose the 'refined' read-out.")
        if frames.ndim != 4 or tuple(frames.shape[:3]) != (frame_count, *frame_size):
            raise ValueError(f"The frames ({list(frames.shape)}) are not the tracked video's {frame_count} frames of "
                             f"{frame_size[1]}x{frame_size[0]}: give the images the features were extracted from.")
    first = selections[0][0][1]
    if settings.readout == PIXEL_READOUT and copier is None:  # the frames start copying now, while the DiT read-out runs
        device = device_window.device if device_window is not None and device_window.device is not None else first.q.device
        copier = prefetch_frames(frames, queries, device, settings.pixel)
    with copier or contextlib.nullcontext():
        positions, token_tracks = track_token_frames(selections, queries, frame_size, frame_count, settings, on_frame,
                                                     device_window)
        tracks = _to_source_frames(positions, token_tracks, queries, frame_count)
        if settings.readout != PIXEL_READOUT:
            return tracks
        grid = first.q.shape[2:4]
        token_size = (frame_size[1] / grid[1], frame_size[0] / grid[0])
        path, visible = refine_tracks(frames, queries, tracks.path, tracks.visible, token_size, settings.pixel, copier)
    return Tracks(path, visible, tracks.confidence, tracks.cycle_error)


def track_token_frames(selections: list[Chunks], queries: torch.Tensor, frame_size: tuple[int, int], frame_count: int,
                       settings: TrackSettings = TrackSettings(), on_frame: Callable[[], None] = lambda: None,
                       device_window: DeviceWindow | None = None) -> tuple[list[float], Tracks]:
    """Tracks on the token frames the model saw: (their source-frame positions, Tracks [T_tokens, N]).

    Each query is tracked from the token frame nearest its own frame, where it
    is placed; track_points moves tracks onto source frames.
    """
    if queries.ndim != 2 or queries.shape[1] != 3 or queries.shape[0] == 0:
        raise ValueError("Queries must be a non-empty [N, 3] tensor of (x, y, frame).")
    height, width = frame_size
    x, y, frame = queries[:, 0], queries[:, 1], queries[:, 2]
    if ((x < 0) | (x >= width) | (y < 0) | (y >= height)).any():
        bad = int(((x < 0) | (x >= width) | (y < 0) | (y >= height)).nonzero()[0])
        raise ValueError(f"Point {bad} ({float(x[bad]):g}, {float(y[bad]):g}) is outside the {width}x{height} frame.")
    if ((frame < 0) | (frame > frame_count - 1)).any():
        bad = int(((frame < 0) | (frame > frame_count - 1)).nonzero()[0])
        raise ValueError(f"Point {bad} is on frame {float(frame[bad]):g}, outside the video's {frame_count} frames.")

    device_window = device_window or DeviceWindow()
    first = selections[0][0][1]
    grid = tuple(first.q.shape[2:4])
    device = device_window.device or first.q.device
    positions = sorted({p for chunks in selections for frames, _ in chunks for p in frames})
    n = queries.shape[0]
    path = torch.zeros(len(positions), n, 2, device=device)
    confidence = torch.zeros(len(positions), n, device=device)
    visible = torch.zeros(len(positions), n, dtype=torch.bool, device=device)
    cycle_error = torch.zeros(len(positions), n, device=device)
    flat = 1.0 / (grid[0] * grid[1])
    # Built once: a tensor made from Python numbers inside the loop would stall the GPU queue every frame.
    token_size = to_device(torch.tensor([width / grid[1], height / grid[0]]), device)  # pixels per token (x, y)
    to_unit = to_device(torch.tensor([2.0 / width, 2.0 / height]), device)  # pixels -> [-1, 1] frame coordinates

    heads, _, h, w, d = first.q.shape
    # One float32 [pairs, heads, points, tokens] tensor: logits, turned into their softmax in place; the fused
    # kernel holds only their head mean.
    held = 1 if settings.fused_kernel and available(device, d) else heads
    pairs_per_call = max(1, settings.memory_budget // (4 * held * min(n, settings.point_batch) * h * w))
    for query_frame in frame.unique().tolist():
        anchor = min(positions, key=lambda p: abs(p - query_frame))
        # Target frames with the same holding chunks are computed together, a batch of frame pairs per call.
        groups: dict[tuple, list[float]] = {}
        for position in positions:
            if position == anchor:
                continue
            holders = _holders(selections, anchor, position)
            if not holders:
                raise ValueError(
                    f"Frame {position:g} shares no chunk with query frame {anchor:g}: extract the features with "
                    f"reference_frame {anchor:g} (or frames_per_chunk 0), or let Track Points extract them.")
            groups.setdefault(holders, []).append(position)
        calls = [(holders, targets[i:i + pairs_per_call],
                  to_device(torch.tensor([positions.index(p) for p in targets[i:i + pairs_per_call]]), device)[:, None])
                 for holders, targets in groups.items() for i in range(0, len(targets), pairs_per_call)]
        # Room for the chunks of one call and of the next (prefetched), so a prefetch never evicts what is in use.
        device_window.capacity = max(device_window.capacity, 2 * max((len(holders) for holders, _, _ in calls), default=1))
        members = (frame == query_frame).nonzero()[:, 0]
        for start in range(0, len(members), settings.point_batch):
            batch = members[start:start + settings.point_batch]
            rows = to_device(batch, device)
            start_px = to_device(queries[batch, :2], device)
            start_tokens = start_px / token_size - 0.5
            slot = positions.index(anchor)
            path[slot, rows], visible[slot, rows], confidence[slot, rows] = start_px, True, 1.0 / flat
            for index, (holders, pair_targets, slots) in enumerate(calls):
                for i, c in calls[(index + 1) % len(calls)][0]:  # the next call's chunks copy while this one computes
                    device_window.prefetch(selections[i][c][1])
                pairs = len(pair_targets)
                anchors = [anchor] * pairs
                options = dict(temperature=settings.temperature, fused_kernel=settings.fused_kernel)
                start_unit = (start_px * to_unit - 1).expand(pairs, -1, -1)
                cost = _mean_over(holders, selections, device_window, pair_costs, anchors, pair_targets, start_unit,
                                  budget_bytes=settings.memory_budget, **options)
                found, peak = read_out(cost.flatten(0, 1), settings.dit_readout, settings.window)
                found_px = (found.view(pairs, -1, 2) + 0.5) * token_size
                back = _mean_over(holders, selections, device_window, forward_rows, pair_targets, anchors,
                                  found_px * to_unit - 1, **options)
                returned, _ = read_out(back.flatten(0, 1), settings.dit_readout, settings.window)
                miss = (returned.view(pairs, -1, 2) - start_tokens).norm(dim=-1)
                peak = peak.view(pairs, -1) / flat
                path[slots, rows[None]] = found_px
                confidence[slots, rows[None]] = peak
                cycle_error[slots, rows[None]] = miss
                visible[slots, rows[None]] = (miss <= settings.cycle_tolerance) & (peak >= settings.min_confidence)
                for _ in range(pairs):
                    on_frame()
    return positions, Tracks(path, visible, confidence, cycle_error)


def _to_source_frames(positions: list[float], tracks: Tracks, queries: torch.Tensor, frame_count: int) -> Tracks:
    """Tracks on every source frame, linear in time between (and beyond) token frames.

    Each track is then shifted so it passes exactly through its query point on
    the query's own frame: a query between two latent frames was tracked from
    the nearest one, and for locally uniform motion the shift makes that exact.
    """
    device = tracks.path.device
    times = to_device(torch.tensor(positions), device)
    frames = torch.arange(frame_count, device=device, dtype=torch.float32)
    if len(positions) == 1:
        path = tracks.path.expand(frame_count, -1, -1).clone()
        nearest = torch.zeros(frame_count, dtype=torch.long, device=device)
    else:
        after = torch.searchsorted(times, frames).clamp(1, len(positions) - 1)
        before = after - 1
        weight = ((frames - times[before]) / (times[after] - times[before]))[:, None, None]  # < 0 or > 1 outside: extrapolate
        path = tracks.path[before] * (1 - weight) + tracks.path[after] * weight
        nearest = torch.where(weight[:, 0, 0] < 0.5, before, after)
    columns = torch.arange(queries.shape[0], device=device)
    on_query = to_device(queries[:, 2].round().long(), device)
    path = path + (to_device(queries[:, :2], device) - path[on_query, columns])[None]
    visible, confidence = tracks.visible[nearest].clone(), tracks.confidence[nearest]
    cycle_error = tracks.cycle_error[nearest].clone()
    visible[on_query, columns], cycle_error[on_query, columns] = True, 0.0
    return Tracks(path, visible, confidence, cycle_error)


def nearest_neighbour_tracks(features: torch.Tensor, queries: torch.Tensor, frame_size: tuple[int, int]) -> torch.Tensor:
    """Baseline tracker: each query's feature (bilinear at its point) matched to the most cosine-similar token of
    every frame. features: [T, h, w, C] on the source frames; queries [N, 3]. Returns tracks [T, N, 2] (x, y) pixels."""
    frames, h, w, channels = features.shape
    height, width = frame_size
    unit = features.float() / features.float().norm(dim=-1, keepdim=True).clamp(min=1e-8)
    grid_points = queries[:, :2] * torch.tensor([2.0 / width, 2.0 / height]) - 1
    path = torch.zeros(frames, queries.shape[0], 2)
    for frame in queries[:, 2].unique().tolist():
        rows = (queries[:, 2] == frame).nonzero()[:, 0]
        query = sample_tokens(unit[int(frame)][None], grid_points[rows])[0]  # [n, C]
        best = (query @ unit.reshape(frames, h * w, channels).transpose(1, 2)).argmax(dim=-1)  # [T, n]
        path[:, rows] = torch.stack([best % w, best // w], dim=-1).float().add(0.5) * torch.tensor([width / w, height / h])
        path[int(frame), rows] = queries[rows, :2]
    return path
