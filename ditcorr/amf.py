"""Attention Motion Flow (after DiTFlow): a video's motion read from its DiT's cross-frame attention.

For a source token p of latent frame i and a target frame j, the heads' mean of the attention logits,
A(p, ·) = mean_h q_h(p)·k_h(·) / √d over frame j's keys, times a temperature τ, is turned into a softmax P over
frame j's tokens. The AMF of the pair is, per source token, the displacement (patch units, (x, y)) from p to
  hard   the most attended token (the reference's motion, and its peak probability as a confidence)
  soft   the expected position under P (differentiable: what guidance matches to the reference's)
The heads' mean of the logits is one matrix product of the heads' q and k laid side by side; frame pairs are
computed a few at a time, and the soft AMF recomputes each pair's softmax in the backward pass instead of
keeping it, so no attention map of the whole video is ever held.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.utils.checkpoint


@dataclass
class FlowLoss:
    """How a generated video's soft AMF is compared with the reference's hard AMF.

    moving_only: count only tokens the reference moves (DiTFlow's `threshloss`); min_confidence: leave out tokens
    whose reference peak probability is lower (occluded or textureless patches); max_displacement: leave out
    reference displacements longer than this many patches (argmax outliers); huber: Huber's δ in patches (0 =
    squared error, as published).
    """

    moving_only: bool = True
    min_confidence: float = 0.0
    max_displacement: float | None = None
    huber: float = 0.0


def all_pairs(frames: int, window: int | None = None) -> list[tuple[int, int]]:
    """Ordered pairs (i, j), i != j, of latent frames; with a window, only those at most `window` frames apart
    (FastVMT's local pairs)."""
    return [(i, j) for i in range(frames) for j in range(frames) if i != j and (window is None or abs(i - j) <= window)]


def token_positions(height: int, width: int, device=None) -> torch.Tensor:
    """[h * w, 2] (x, y) of each token of an h x w grid, in patch units, row-major."""
    rows = torch.arange(height, device=device, dtype=torch.float32).repeat_interleave(width)
    cols = torch.arange(width, device=device, dtype=torch.float32).repeat(height)
    return torch.stack([cols, rows], dim=1)


def _side_by_side(x: torch.Tensor) -> torch.Tensor:
    """[H, T, h, w, d] -> [T, h * w, H * d]: each token's heads laid side by side, so one product sums over heads."""
    heads, frames, height, width, dim = x.shape
    return x.permute(1, 2, 3, 0, 4).reshape(frames, height * width, heads * dim)


def _pair_batches(q: torch.Tensor, k: torch.Tensor, temperature: float, pairs: list[tuple[int, int]] | None,
                  pair_batch: int):
    """What both AMFs read: the logits' scale (τ over heads·√d, the heads' mean of q·k/√d), token positions
    [h*w, 2], and per batch of at most `pair_batch` pairs (default all_pairs) the sources' and targets' side-by-side
    q and k ([G, h*w, H*d] each), in the order of `pairs`, gathered as they are consumed."""
    heads, frames, height, width, dim = q.shape
    pairs = pairs if pairs is not None else all_pairs(frames)
    qs, ks = _side_by_side(q), _side_by_side(k)
    batches = ((qs[[i for i, _ in pairs[start:start + pair_batch]]], ks[[j for _, j in pairs[start:start + pair_batch]]])
               for start in range(0, len(pairs), pair_batch))  # lazily: one batch's copies at a time
    return temperature / (heads * math.sqrt(dim)), token_positions(height, width, q.device), batches


def _pair_softmax(q_rows: torch.Tensor, k_rows: torch.Tensor, scale: float) -> torch.Tensor:
    """Softmax over targets of scale * q·k: q_rows [G, M, Hd], k_rows [G, M, Hd] -> [G, M, M] (float32)."""
    return torch.softmax(torch.bmm(q_rows.float(), k_rows.float().transpose(1, 2)) * scale, dim=-1)


def _expected_displacement(q_rows: torch.Tensor, k_rows: torch.Tensor, scale: float,
                           positions: torch.Tensor) -> torch.Tensor:
    return _pair_softmax(q_rows, k_rows, scale) @ positions - positions


def hard_amf(q: torch.Tensor, k: torch.Tensor, temperature: float = 2.0, pairs: list[tuple[int, int]] | None = None,
             pair_batch: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's motion: per pair the displacement to each source token's most attended target token.

    q, k: [H, T, h, w, d] of one forward's video tokens (after norm and RoPE); temperature: τ, multiplying the
    heads' mean logits; pairs: (source, target) latent frames (default all_pairs). Returns (displacement [P, h*w, 2]
    (x, y) patches, confidence [P, h*w]: the softmax's peak probability), in the order of `pairs`.
    """
    scale, positions, batches = _pair_batches(q, k, temperature, pairs, pair_batch)
    displacements, confidences = [], []
    for q_rows, k_rows in batches:
        peak, index = _pair_softmax(q_rows, k_rows, scale).max(dim=-1)
        displacements.append(positions[index] - positions)
        confidences.append(peak)
    return torch.cat(displacements), torch.cat(confidences)


def soft_amf(q: torch.Tensor, k: torch.Tensor, temperature: float = 2.0, pairs: list[tuple[int, int]] | None = None,
             pair_batch: int = 8, recompute: bool = True) -> torch.Tensor:
    """The motion guidance matches: per pair the expected displacement of each source token under the softmax.

    Shapes as hard_amf; returns [P, h*w, 2], differentiable in q and k. recompute: each batch of pairs' softmax
    is recomputed in the backward pass instead of being kept (memory O(pair_batch * (h*w)^2), not O(P * (h*w)^2)).
    """
    scale, positions, batches = _pair_batches(q, k, temperature, pairs, pair_batch)
    parts = []
    for q_rows, k_rows in batches:
        if recompute and torch.is_grad_enabled():
            parts.append(torch.utils.checkpoint.checkpoint(_expected_displacement, q_rows, k_rows, scale, positions,
                                                           use_reentrant=False))
        else:
            parts.append(_expected_displacement(q_rows, k_rows, scale, positions))
    return torch.cat(parts)


def flow_loss(current: torch.Tensor, reference: torch.Tensor, confidence: torch.Tensor,
              options: FlowLoss = FlowLoss()) -> torch.Tensor:
    """Mean over the counted tokens of the squared (or Huber) distance between a soft AMF `current` and the
    reference's hard AMF [P, M, 2] (confidence [P, M]); 0 when no token counts."""
    counted = torch.ones_like(confidence, dtype=torch.bool)
    length = reference.norm(dim=-1)
    if options.moving_only:
        counted &= length > 0
    if options.min_confidence > 0:
        counted &= confidence >= options.min_confidence
    if options.max_displacement is not None:
        counted &= length <= options.max_displacement
    if not counted.any():
        return current.sum() * 0
    error = current - reference
    if options.huber > 0:
        per_token = torch.nn.functional.huber_loss(current, reference, reduction="none", delta=options.huber).sum(-1)
    else:
        per_token = (error ** 2).sum(-1)
    return per_token[counted].mean()


def flow_colours(flow: torch.Tensor, max_length: float | None = None) -> torch.Tensor:
    """RGB in [0, 1] ([..., 3]) of displacements [..., 2] (x right, y down): the direction as the hue of a colour
    wheel (right red, down yellow-green, left cyan, up violet), the length as saturation (white = still), full
    at `max_length` (the largest length when None)."""
    from .draw import hue_colours

    length = flow.norm(dim=-1)
    top = max_length if max_length is not None else float(length.max()) if length.numel() else 1.0
    hue = (torch.atan2(flow[..., 1], flow[..., 0]) / (2 * math.pi)) % 1.0
    saturation = (length / max(top, 1e-12)).clamp(0, 1)[..., None]
    wheel = hue_colours(hue.reshape(-1), torch.ones(hue.numel(), device=flow.device)).reshape(*hue.shape, 3)
    return 1 - saturation * (1 - wheel)


def colour_wheel(size: int) -> torch.Tensor:
    """[size, size, 3]: the legend of flow_colours, a disc whose colour at each point is that of the displacement
    from its centre (full saturation at the rim), white outside."""
    centre = (size - 1) / 2
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    offset = torch.stack([xs - centre, ys - centre], dim=-1)
    disc = flow_colours(offset, max_length=centre)
    return torch.where((offset.norm(dim=-1) <= centre)[..., None], disc, torch.ones_like(disc))


@dataclass
class MotionFlow:
    """A reference video's motion as guidance reads it: per guidance block the hard AMF of the frame pairs.

    displacement: block -> [P, h*w, 2] (x, y) patches; confidence: block -> [P, h*w]; pairs: the P (source,
    target) latent frames; grid: (h, w) tokens; latent_frames: T of the reference's latent; positions: the
    source-frame position of each latent frame; frame_size: (height, width) pixels; model: the family's name;
    temperature: the τ it was read with (guidance must use the same); latent: the reference's clean latent
    [1, C, T, h, w] as its VAE gave it (CPU), for injecting its keys and values during guidance, or None.
    """

    displacement: dict[int, torch.Tensor]
    confidence: dict[int, torch.Tensor]
    pairs: list[tuple[int, int]]
    grid: tuple[int, int]
    latent_frames: int
    positions: tuple[float, ...]
    frame_size: tuple[int, int]
    model: str
    temperature: float
    latent: torch.Tensor | None = None

    def from_frame(self, block: int, source: int) -> torch.Tensor:
        """[T, h, w, 2]: the displacement of each token of latent frame `source` to every latent frame (zero to
        itself, and to frames the pairs leave out)."""
        flow = torch.zeros(self.latent_frames, self.grid[0] * self.grid[1], 2)
        for index, (i, j) in enumerate(self.pairs):
            if i == source:
                flow[j] = self.displacement[block][index].cpu()
        return flow.reshape(self.latent_frames, *self.grid, 2)
