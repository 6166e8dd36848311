"""Which blocks and noise levels of a video DiT carry temporal correspondence (DiffTrack's analysis), and a
label-free score that chooses them on a video without reference tracks.

Per analysed (block, σ) cell, from the captured q/k of query points on frame 0:

  matching accuracy  with reference tracks: the share of visible (point, frame) pairs whose tracked position lies
                     within x px of the reference (x = TAP-Vid's 1, 2, 4, 8, 16 on a 256x256 raster) and their
                     mean, δavg. DiffTrack scores the argmax read-out at 8 px of 720x480; `readout="argmax"` gives
                     that read-out, the default is the tracker's own, so the grid says what Track Points will do.
  confidence         the attention probability at the match: each query's attention over all the chunk's video
                     keys (softmax of q·k/τ per head, averaged over heads), its largest value among the keys of
                     another frame, averaged over the (point, frame) pairs where the point is visible.
  attention score    the attention mass the query puts on keys of other frames (against its own frame's keys).
  harmonic           DiffTrack's ranking: the harmonic mean of the three above, each min-max normalised over the
                     grid (a cell that is worst at one of them scores 0).

DiffTrack's own code takes the attention over the whole joint sequence, text tokens included; the captures here
hold video tokens only, so the shares are among video keys (the same for Wan, whose text is in cross-attention).
Its confidence uses the visibility of the last of the four frames a latent frame covers; here every latent frame
is one source frame (or the nearest one, native encoding).

Without reference tracks nothing above but the confidence and the attention score can be computed, and those two
measure how peaked attention is across frames, not whether it is right. The label-free score needs no labels:

  cycle rate   share of (point, frame) pairs whose match, tracked back, lands within `cycle_tolerance` tokens of
               the query (the tracker's forward-backward check);
  sharpness    how far the cost peak stands above a flat map, log(peak / flat) / log(tokens), in [0, 1];
  appearance   1 - mean colour difference between each query's neighbourhood (half a token across) on frame 0
               and its tracked position's neighbourhood on the other frames.
  label_free   the harmonic mean of the three over the grid: appearance min-max normalised, cycle rate and
               sharpness as a share of the grid's best.

Cycle rate and sharpness alone reward attention that is positional ("the same place in the next frame" is
perfectly cycle-consistent and sharp): measured on the pack's tiny model, its block 1 (δavg 31, next to 19 for not
moving at all) had the best cycle rate and sharpness of the whole grid, its block 7 (δavg 48) neither. Appearance
agreement is what separates them: a match that lands on other content is caught whatever the attention's shape.
Its raw values sit in a narrow band (colour differences of a few percent), so it is stretched min-max; cycle rate
and sharpness have a meaningful zero and are only divided by the grid's best, so that a good cell that happens to
be the least sharp of a few candidates is not zeroed by the harmonic mean (min-max on all three did that to the
tiny model's block 7 among blocks 5-7).

Nothing here holds a full attention map: query rows only, in batches of points.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .cost import sample_tokens, scores, softmax_
from .features import FeatureChunk
from .metrics import THRESHOLDS, tapvid_metrics, to_raster
from .streaming import DeviceWindow
from .track import TrackSettings, track_token_frames

Chunks = list[FeatureChunk]
REFERENCE_QUANTITIES = ("delta_avg", "confidence", "attention_score")
LABEL_FREE_QUANTITIES = ("cycle_rate", "sharpness", "appearance")


@dataclass
class Cell:
    """One analysed (block, σ): the raw quantities (fractions in [0, 1]; None where they need reference tracks that
    were not given) and, once rank_cells has seen the whole grid, `harmonic` and `label_free`."""

    block: int
    sigma: float
    confidence: float
    attention_score: float
    cycle_rate: float
    sharpness: float
    appearance: float
    delta_avg: float | None = None
    accuracy: dict[int, float] | None = None  # δ^x for x in THRESHOLDS
    harmonic: float | None = None
    label_free: float = math.nan

    def row(self) -> dict:
        """The cell as a flat table row (δ^x as delta_1 .. delta_16; unknown values, NaN included, as None)."""
        row = {key: value for key, value in self.__dict__.items() if key != "accuracy"}
        row.update({f"delta_{x}": (self.accuracy or {}).get(x) for x in THRESHOLDS})
        return {key: None if isinstance(value, float) and math.isnan(value) else value for key, value in row.items()}


def analysis_frames(frame_count: int, count: int = 13) -> list[int]:
    """`count` source frames spread evenly over the video, first and last included (all of them when it is
    shorter): one forward of these per σ sees the video's whole span."""
    if frame_count < 2:
        raise ValueError("Correspondence needs at least two frames.")
    count = min(max(count, 2), frame_count)
    return sorted({round(i * (frame_count - 1) / (count - 1)) for i in range(count)})


def attention_statistics(chunks: Chunks, queries: torch.Tensor, frame_size: tuple[int, int],
                         visible: torch.Tensor | None = None, temperature: float | None = None,
                         device_window: DeviceWindow | None = None, budget_bytes: int = 2**28) -> tuple[float, float]:
    """(confidence, attention score) of query points on one frame, averaged over the chunks holding that frame.

    chunks: one (block, step) selection. queries: [N, 3] (x, y, frame) pixels of frame_size, all on one frame.
    visible: [len(frames), N] bool per position of the chunks' frames (sorted), None = every point everywhere.
    Points go in batches that keep the [heads, points, keys] logits within `budget_bytes`.
    """
    device_window = device_window or DeviceWindow(capacity=1)
    query_frame = float(queries[0, 2])
    positions = sorted({p for frames, _ in chunks for p in frames})
    anchor = min(positions, key=lambda p: abs(p - query_frame))
    height, width = frame_size
    unit = queries[:, :2] * torch.tensor([2.0 / width, 2.0 / height]) - 1
    holders = [(frames, qk) for frames, qk in chunks if anchor in frames]
    confidence_sum = torch.zeros(len(positions), queries.shape[0], dtype=torch.float64)
    confidence_count = torch.zeros(len(positions), queries.shape[0], dtype=torch.float64)
    mass = torch.zeros(queries.shape[0], dtype=torch.float64)
    for frames, qk in holders:
        qk = device_window.get(qk)
        heads, tokens_t, h, w, d = qk.k.shape
        tau = math.sqrt(d) if temperature is None else temperature
        keys = qk.k.reshape(heads, tokens_t * h * w, d).transpose(1, 2)  # [H, d, L]
        source = frames.index(anchor)
        step = max(1, budget_bytes // (4 * heads * tokens_t * h * w))
        for start in range(0, queries.shape[0], step):
            points = unit[start:start + step].to(qk.q.device)
            query = (sample_tokens(qk.q[:, source], points) / tau).to(keys.dtype)  # [H, n, d]
            attention = softmax_(scores(query, keys)).mean(0).view(-1, tokens_t, h * w)  # [n, T, hw]
            mass[start:start + step] += (1 - attention[:, source].sum(-1)).double().cpu()  # the rest is on other frames
            peaks = attention.amax(-1).T.double().cpu()  # [T, n]
            for index, position in enumerate(frames):
                if index != source:
                    slot = positions.index(position)
                    confidence_sum[slot, start:start + step] += peaks[index]
                    confidence_count[slot, start:start + step] += 1
    seen = confidence_count > 0
    mean_peak = confidence_sum / confidence_count.clamp(min=1)
    counted = seen if visible is None else seen & visible.cpu().bool()
    confidence = float(mean_peak[counted].mean()) if counted.any() else math.nan
    return confidence, float(mass.mean() / max(len(holders), 1))


@dataclass
class FrameColours:
    """The source frames at the positions a selection's token frames were taken from, each averaged over blocks of
    half a token (area resampling to twice the token grid): what appearance agreement compares. Made once per video
    and token grid, not per cell.

    positions: the token frames' source positions (sorted); colours: [T, 3, 2h, 2w]; frame_size: (H, W) pixels."""

    positions: tuple[float, ...]
    colours: torch.Tensor
    frame_size: tuple[int, int]

    @classmethod
    def of(cls, frames: torch.Tensor, positions: list[float], grid: tuple[int, int]) -> "FrameColours":
        """frames: [F, H, W, C] in [0, 1]; a native latent frame between source frames takes the nearest one."""
        index = [min(round(p), frames.shape[0] - 1) for p in positions]
        picked = frames[index, ..., :3].permute(0, 3, 1, 2).float().cpu()
        colours = F.interpolate(picked, size=(2 * grid[0], 2 * grid[1]), mode="area")
        return cls(tuple(positions), colours, tuple(frames.shape[1:3]))

    def agreement(self, path: torch.Tensor, queries: torch.Tensor) -> float:
        """1 - the mean absolute colour difference between each query's neighbourhood on its frame and its tracked
        position's on every other frame. path: [T, N, 2] pixels on self.positions; queries: [N, 3], all on one
        frame (a source position)."""
        height, width = self.frame_size
        to_unit = torch.tensor([2.0 / width, 2.0 / height])
        where = (path.float().cpu() * to_unit - 1)[:, None]  # [T, 1, N, 2]
        colours = F.grid_sample(self.colours, where, mode="bilinear", padding_mode="border", align_corners=False)
        anchor = min(range(len(self.positions)), key=lambda i: abs(self.positions[i] - float(queries[0, 2])))
        start = F.grid_sample(self.colours[anchor:anchor + 1], (queries[:, :2].cpu() * to_unit - 1).view(1, 1, -1, 2),
                              mode="bilinear", padding_mode="border", align_corners=False)
        others = [t for t in range(len(self.positions)) if t != anchor]
        return 1.0 - float((colours[others, :, 0] - start[:, :, 0]).abs().mean())


def score_cell(block: int, sigma: float, chunks: Chunks, queries: torch.Tensor, colours: FrameColours,
               reference: tuple[torch.Tensor, torch.Tensor] | None = None, settings: TrackSettings = TrackSettings(),
               device_window: DeviceWindow | None = None) -> Cell:
    """Every quantity of one (block, σ) selection.

    chunks: the selection (DitFeatures.select). queries: [N, 3] on one frame. colours: the video's frames at the
    selection's positions (FrameColours.of). reference: (path [F, N, 2] pixels, visible [F, N]) on the F source
    frames, or None (then no accuracy and no harmonic).
    """
    frame_size = colours.frame_size
    positions, tracks = track_token_frames([chunks], queries, frame_size, round(max(colours.positions)) + 1, settings,
                                           device_window=device_window)
    if tuple(positions) != colours.positions:
        raise ValueError("The frame colours were taken at other positions than these features' frames.")
    anchor = min(range(len(positions)), key=lambda i: abs(positions[i] - float(queries[0, 2])))
    others = [i for i in range(len(positions)) if i != anchor]
    grid = chunks[0].qk.q.shape[2:4]
    cycle = tracks.cycle_error[others].cpu()
    peaks = tracks.confidence[others].cpu().clamp(min=1.0)
    source = None if reference is None else [min(round(p), reference[0].shape[0] - 1) for p in positions]
    visible = None if reference is None else reference[1][source].bool()
    confidence, attention = attention_statistics(chunks, queries, frame_size, visible, settings.temperature,
                                                 device_window)
    cell = Cell(block, sigma, confidence, attention,
                cycle_rate=float((cycle <= settings.cycle_tolerance).float().mean()),
                sharpness=float(peaks.log().mean() / math.log(max(grid[0] * grid[1], 2))),
                appearance=colours.agreement(tracks.path, queries))
    if reference is not None:
        path, seen = reference[0][source], reference[1][source]
        metrics = tapvid_metrics(to_raster(tracks.path.cpu().transpose(0, 1), frame_size), seen.T.bool(),
                                 to_raster(path.transpose(0, 1).float(), frame_size), seen.T.bool(),
                                 torch.full((len(queries),), anchor), "first")
        cell.accuracy = {x: metrics[f"delta_{x}"] for x in THRESHOLDS}
        cell.delta_avg = metrics["delta_avg"]
    return cell


def normalise(values: torch.Tensor) -> torch.Tensor:
    """Min-max normalisation over the grid, as DiffTrack ranks blocks; a grid whose values are all equal is all
    ones (nothing to tell apart), NaN stays NaN."""
    finite = values[~values.isnan()]
    if finite.numel() == 0:
        return values.clone()
    low, high = finite.min(), finite.max()
    return torch.ones_like(values).masked_fill(values.isnan(), math.nan) if high == low else (values - low) / (high - low)


def relative(values: torch.Tensor) -> torch.Tensor:
    """Each value as a share of the grid's largest (non-negative values; all zero: all ones), NaN stays NaN."""
    finite = values[~values.isnan()]
    top = finite.max() if finite.numel() else torch.tensor(0.0)
    return torch.ones_like(values).masked_fill(values.isnan(), math.nan) if top <= 0 else values / top


def harmonic_mean(*columns: torch.Tensor) -> torch.Tensor:
    """Elementwise harmonic mean of non-negative columns; 0 wherever any is 0 (DiffTrack's 3 / sum of reciprocals
    with the infinities it produces there set to 0), NaN wherever any is NaN."""
    stacked = torch.stack(columns)
    result = len(columns) / (1.0 / stacked).sum(0)
    result = torch.where((stacked == 0).any(0), torch.zeros_like(result), result)
    return result.masked_fill(stacked.isnan().any(0), math.nan)


def rank_cells(cells: list[Cell]) -> list[Cell]:
    """Fill every cell's `label_free` (and `harmonic`, where accuracy is known) from the whole grid."""
    def column(name: str) -> torch.Tensor:
        return torch.tensor([math.nan if getattr(c, name) is None else getattr(c, name) for c in cells],
                            dtype=torch.float64)

    label_free = harmonic_mean(relative(column("cycle_rate")), relative(column("sharpness")),
                               normalise(column("appearance")))
    with_reference = all(c.delta_avg is not None for c in cells)
    harmonic = harmonic_mean(*(normalise(column(name)) for name in REFERENCE_QUANTITIES)) if with_reference else None
    for index, cell in enumerate(cells):
        cell.label_free = float(label_free[index])
        cell.harmonic = None if harmonic is None else float(harmonic[index])
    return cells


def best_cell(cells: list[Cell], by: str = "label_free") -> Cell:
    """The cell with the highest `by` (label_free, harmonic, delta_avg, ...); ties go to the earlier cell."""
    scored = [c for c in cells if getattr(c, by) is not None and not math.isnan(getattr(c, by))]
    if not scored:
        raise ValueError(f"No analysed cell has a {by} score" + (": connect reference tracks." if by in
                         ("harmonic", "delta_avg") else "."))
    return max(scored, key=lambda c: getattr(c, by))


@dataclass
class Analysis:
    """A whole grid: the cells in (σ, block) order, and the choices it makes."""

    cells: list[Cell] = field(default_factory=list)

    @property
    def blocks(self) -> list[int]:
        return sorted({c.block for c in self.cells})

    @property
    def sigmas(self) -> list[float]:
        return sorted({c.sigma for c in self.cells})

    def grid(self, name: str) -> torch.Tensor:
        """[σ, block] values of one quantity (NaN where unknown)."""
        table = torch.full((len(self.sigmas), len(self.blocks)), math.nan)
        for c in self.cells:
            value = getattr(c, name)
            if value is not None:
                table[self.sigmas.index(c.sigma), self.blocks.index(c.block)] = value
        return table
