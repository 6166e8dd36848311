"""Mask propagation through a video by the DiT's attention (after DRIFT): label propagation with attention affinities.

The standard protocol of label propagation: each frame's soft labels are a
weighted sum of the labels of its context, the annotated frame and the last few
predicted frames; the weights are attention. For a target token, the affinity to
each context token is the per-head softmax of q·k/τ over the context tokens
within a window around it, combined over heads, cut to its top k and renormalised.
Target rows are computed in batches, so no full attention map is ever held.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable

import torch

from .guided import guided_filter
from .streaming import FrameCopier


MAX_OBJECTS = 32  # objects propagated at once: each is a label channel of every token
# The default temperature is a quarter of the model's own sqrt(head dim): a sharper softmax lets each target take
# its labels from fewer, better matching sources. On the tiny DiT's synthetic clips (bench/vos.py, 24 a seed) it
# raised the best J&F by 8.3 points on seed 2000 and by 3.9 on seed 1000 at sigma 0.5, and cost 1.3 there at 0.2.
DEFAULT_SHARPNESS = 0.25


@dataclass
class PropagationSettings:
    temperature: float | None = None  # softmax temperature of q·k; DEFAULT_SHARPNESS · sqrt(head dim) when None
    context: int = 3  # predicted frames before the target in its context, besides the annotated frame
    radius: int | None = 6  # window half-width in tokens around the target's own position; None = the whole frame
    top_k: int = 16  # context tokens each target keeps (0 = all)
    tile: int = 8  # targets are computed in square tiles of this side (tokens), each reading one window around it
    row_batch: int = 2048  # target tokens per computation (whole tiles)
    fit_steps: int = 30  # Adam steps fitting the head weights on the annotated frame (0 = the heads' mean)
    fit_rate: float = 0.1  # their learning rate (on the weights' logits)

    def temperature_for(self, dim: int) -> float:
        """The softmax temperature for heads of size `dim`."""
        return self.temperature or DEFAULT_SHARPNESS * math.sqrt(dim)


def _window(height: int, width: int, radius: int | None, device) -> torch.Tensor | None:
    """[hw, hw] bool: token j lies within `radius` tokens (Chebyshev) of token i; None for no window."""
    if radius is None:
        return None
    rows = torch.arange(height, device=device).repeat_interleave(width)
    cols = torch.arange(width, device=device).repeat(height)
    return ((rows[:, None] - rows[None, :]).abs() <= radius) & ((cols[:, None] - cols[None, :]).abs() <= radius)


def head_softmax(q_target: torch.Tensor, k_context: torch.Tensor, temperature: float,
                 allowed: torch.Tensor | None) -> torch.Tensor:
    """Per-head attention of target tokens over context tokens.

    q_target: [H, R, d] (R target tokens); k_context: [H, C, M, d] (C context frames of M tokens); allowed: [R, M]
    bool (the window, the same for every context frame) or None. Returns [H, R, C * M]: per head a softmax of
    q·k/temperature over every allowed context token.
    """
    heads, rows, _ = q_target.shape
    contexts, tokens = k_context.shape[1:3]
    logits = torch.einsum("hrd,hcmd->hrcm", q_target.float(), k_context.float()) / temperature
    if allowed is not None:
        logits = logits.masked_fill(~allowed[None, :, None, :], -math.inf)
    return torch.softmax(logits.reshape(heads, rows, contexts * tokens), dim=-1)


def renormalised(weights: torch.Tensor) -> torch.Tensor:
    """Rows of non-negative weights [..., N] scaled to sum to 1."""
    return weights / weights.sum(dim=-1, keepdim=True).clamp(min=1e-12)


@dataclass(frozen=True)
class TileLayout:
    """Targets in square tiles, each reading the context window around it: the windows of a tile's targets all lie
    in one region of side tile + 2·radius (or the frame's, where that is smaller), so a tile's logits are one small
    matrix product instead of a whole frame's, masked. Padding beyond the frame: targets there are dropped,
    context cells there masked.

    targets: [n, T] token index of each tile's targets, -1 padding; region: [n, R] token index of each tile's region
    cells, -1 outside the frame; allowed: [n, T, R] the target's window holds the cell (every target, padding
    included, holds at least one); slots: [h·w] where each token sits among the n·T targets."""

    targets: torch.Tensor
    region: torch.Tensor
    allowed: torch.Tensor
    slots: torch.Tensor

    @classmethod
    def of(cls, height: int, width: int, radius: int | None, tile: int, row_batch: int, device) -> "TileLayout":
        """Tiles of side `tile` with their regions; when radius is None (no window), bands of whole rows of about
        row_batch targets, each with the whole frame as its region."""
        reach = max(height, width) if radius is None else radius
        tile_h, tile_w = (max(1, min(height, row_batch // width)), width) if radius is None else (tile, tile)

        def axis(size: int, side: int) -> tuple[torch.Tensor, torch.Tensor]:
            """[tiles, side] target positions and [tiles, cells] region positions along one axis."""
            starts = torch.arange(0, size, side, device=device)[:, None]
            if side + 2 * reach >= size:  # the window spans the axis: the region is all of it
                return starts + torch.arange(side, device=device), torch.arange(size, device=device).expand(len(starts), -1)
            return starts + torch.arange(side, device=device), starts - reach + torch.arange(side + 2 * reach, device=device)

        def grid(ys: torch.Tensor, xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            """Token index [tiles, cells] of every tile's cells (tiles row-major), -1 outside the frame; and each
            cell's y and x."""
            y, x = ys[:, None, :, None].expand(-1, len(xs), -1, xs.shape[1]), xs[None, :, None, :].expand(len(ys), -1, ys.shape[1], -1)
            y, x = y.flatten(2).flatten(0, 1), x.flatten(2).flatten(0, 1)
            return torch.where((y >= 0) & (y < height) & (x >= 0) & (x < width), y * width + x, -1), y, x

        (target_y, region_y), (target_x, region_x) = axis(height, tile_h), axis(width, tile_w)
        targets, ty, tx = grid(target_y, target_x)
        region, ry, rx = grid(region_y, region_x)
        allowed = (((ry[:, None, :] - ty[:, :, None]).abs() <= reach) & ((rx[:, None, :] - tx[:, :, None]).abs() <= reach)
                   & (region >= 0)[:, None, :])
        # a padding target may see only padding: let it see the frame, so its softmax stays finite (it is dropped)
        allowed |= (targets < 0)[:, :, None] & (region >= 0)[:, None, :]
        slots = torch.empty(height * width, dtype=torch.long, device=device)
        real = targets.flatten() >= 0
        slots[targets.flatten()[real]] = torch.arange(targets.numel(), device=device)[real]
        return cls(targets, region, allowed, slots)

    def keys(self, k: torch.Tensor) -> torch.Tensor:
        """One frame's keys [H, h·w, d] at every tile's region cells: [H, n, R, d] (cells outside the frame read
        token 0; they are masked)."""
        return k[:, self.region.clamp(min=0)]


def logits_of(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """q·kᵀ in float32: q [B, T, d], k [B, N, d] -> [B, T, N]. Half-precision features on the GPU go through the
    tensor cores with a float32 result; the products of two half-precision numbers are exact in float32, so this is
    the float32 product up to the order of the sums."""
    if q.is_cuda and q.dtype in (torch.bfloat16, torch.float16) and k.dtype == q.dtype:
        return torch.bmm(q, k.transpose(1, 2), out_dtype=torch.float32)
    return torch.bmm(q.float(), k.float().transpose(1, 2))


def affinities(q_target: torch.Tensor, k_regions: torch.Tensor, head_weights: torch.Tensor, temperature: float,
               layout: TileLayout, top_k: int, row_batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse affinity of one target frame's tokens to its context's: per head the softmax of q·k/temperature over
    every context token in the target's window (in all context frames together), the heads summed with
    head_weights, the top_k kept and renormalised.

    q_target: [H, M, d] (M = h·w tokens); k_regions: [H, n, C, R, d] the C context frames' keys at the region cells
    of each of the layout's n tiles (TileLayout.keys); head_weights: [H] summing to 1; whole tiles of about
    row_batch targets are computed at once. Returns (index [M, K] into the C·M context tokens, frame-major; weight
    [M, K] summing to 1 per row), K = top_k, or every cell of a region in every context frame when top_k is 0 or
    more (zero weights pad a row whose window is smaller).
    """
    heads, tokens, dim = q_target.shape
    contexts = k_regions.shape[2]
    tiles, per_tile = layout.targets.shape
    cells = layout.region.shape[1]
    kept = contexts * cells if top_k <= 0 else min(top_k, contexts * cells)
    frames = torch.arange(contexts, device=q_target.device)
    index = torch.empty(tiles, per_tile, kept, dtype=torch.long, device=q_target.device)
    weight = torch.empty(tiles, per_tile, kept, device=q_target.device)
    batch = max(1, row_batch // per_tile)
    for start in range(0, tiles, batch):
        group = slice(start, min(tiles, start + batch))
        region = layout.region[group].clamp(min=0)
        q = q_target[:, layout.targets[group].clamp(min=0)]  # [H, G, T, d]
        k = k_regions[:, group].flatten(2, 3)  # [H, G, C·R, d]
        logits = logits_of(q.flatten(0, 1), k.flatten(0, 1)).div_(temperature)  # [H·G, T, C·R]
        blocked = ~layout.allowed[group][:, :, None, :]  # [G, T, 1, R]: the same window in every context frame
        logits.view(heads, -1, per_tile, contexts, cells).masked_fill_(blocked, -math.inf)
        per_head = torch.softmax(logits, dim=-1).view(heads, -1, per_tile, contexts * cells)  # [H, G, T, C·R]
        combined = torch.einsum("h,hgtn->gtn", head_weights.float(), per_head)
        values, picked = combined.topk(kept, dim=-1)  # picked indexes (context frame, region cell)
        source = (frames[None, :, None] * tokens + region[:, None, :]).flatten(1)  # [G, C·R] context token
        index[group] = source.gather(1, picked.flatten(1)).reshape(picked.shape)
        weight[group] = renormalised(values)
    return index.flatten(0, 1)[layout.slots], weight.flatten(0, 1)[layout.slots]


def context_of(target: int, context: int) -> list[int]:
    """Positions in a propagation order of the context of its `target`-th frame: the annotated frame (first) and
    the `context` frames just before the target (those propagated to last)."""
    return [0, *range(max(1, target - context), target)]


def propagate_in_order(q: torch.Tensor, k: torch.Tensor, order: list[int], labels: dict[int, torch.Tensor],
                       settings: PropagationSettings = PropagationSettings(), head_weights: torch.Tensor | None = None,
                       on_frame: Callable[[], None] = lambda: None) -> None:
    """Propagate soft labels along `order` inside one forward's features, in place.

    q, k: [H, T, h, w, d] (token frames of one forward); order: token-frame indices, the annotated frame first, then
    the frames to propagate to in the order they are reached; labels: token frame -> [L, h, w] soft labels (one
    channel per object and the background, summing to 1 per token), holding at least order[0]. Frames of `order`
    missing from `labels` are predicted, each from its context (context_of) and added; frames already there (from
    an earlier forward) are kept and serve as context. head_weights: [H], the heads' mean when None. on_frame is
    called after each predicted frame (progress, cancellation).
    """
    heads, _, height, width, dim = q.shape
    reference = labels[order[0]]
    if reference.shape[1:] != (height, width):
        raise ValueError(f"The annotated frame's labels are {tuple(reference.shape[1:])} tokens, the features "
                         f"{(height, width)}: give them at the features' token grid.")
    tokens = height * width
    temperature = settings.temperature_for(dim)
    weights = (head_weights if head_weights is not None else torch.full((heads,), 1.0 / heads)).to(q.device)
    layout = TileLayout.of(height, width, settings.radius, settings.tile, settings.row_batch, q.device)
    q_flat, k_flat = q.reshape(heads, -1, tokens, dim), k.reshape(heads, -1, tokens, dim)
    regions: dict[int, torch.Tensor] = {}
    for target in range(1, len(order)):
        if order[target] in labels:
            continue
        context = [order[i] for i in context_of(target, settings.context)]
        context_labels = torch.cat([labels[f].reshape(-1, tokens).to(q.device, torch.float32) for f in context], dim=1)
        # each frame's keys are laid out by tile region once, for all the targets it is context to
        regions = {f: regions[f] if f in regions else layout.keys(k_flat[:, f]) for f in context}
        index, weight = affinities(q_flat[:, order[target]], torch.stack([regions[f] for f in context], dim=2),
                                   weights, temperature, layout, settings.top_k, settings.row_batch)
        predicted = (context_labels[:, index] * weight).sum(dim=-1)  # [L, M]
        labels[order[target]] = predicted.reshape(-1, height, width)
        on_frame()


def propagate_labels(q: torch.Tensor, k: torch.Tensor, first_labels: torch.Tensor,
                     settings: PropagationSettings = PropagationSettings(), head_weights: torch.Tensor | None = None,
                     on_frame: Callable[[], None] = lambda: None) -> torch.Tensor:
    """Soft labels of every token frame from those of the first (one forward, frames in time order).

    q, k: [H, T, h, w, d]; first_labels: [L, h, w]. Returns [T, L, h, w] (frame 0 the given labels).
    """
    labels = {0: first_labels.float().to(q.device)}
    propagate_in_order(q, k, list(range(q.shape[1])), labels, settings, head_weights, on_frame)
    return torch.stack([labels[t] for t in range(q.shape[1])])


def directions(frames: tuple[float, ...], annotated: float) -> list[list[int]]:
    """Propagation orders through one forward's token frames (source-frame positions `frames`, holding `annotated`):
    forward in time from the annotated frame, then backward from it; each order starts with the annotated frame's
    index. Orders with nothing to propagate to are left out."""
    anchor = frames.index(annotated)
    later = sorted((i for i, p in enumerate(frames) if p > annotated), key=lambda i: frames[i])
    earlier = sorted((i for i, p in enumerate(frames) if p < annotated), key=lambda i: -frames[i])
    return [[anchor, *side] for side in (later, earlier) if side]


def fused_qk(chunks: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """q, k of several blocks (or steps) of one forward as one set of heads: [sum of H, T, h, w, d] each. Every head
    keeps its own softmax, so uniform head weights average the blocks' attention."""
    return torch.cat([q for q, _ in chunks]), torch.cat([k for _, k in chunks])


def fit_head_weights(q: torch.Tensor, k: torch.Tensor, annotated_labels: torch.Tensor,
                     settings: PropagationSettings = PropagationSettings(), exclude: int = 1) -> torch.Tensor:
    """Head weights fitted to one video from its annotated frame alone: the weights under which that frame's labels,
    propagated to the frame itself with each token's own neighbourhood (Chebyshev radius `exclude`) left out of
    its window, best reproduce themselves (soft Dice plus cross-entropy, settings.fit_steps Adam steps on the
    weights' logits from equal weights). Leaving the neighbourhood out is what makes the task need the content:
    a head that attends to a token's own position would reproduce it trivially.

    q, k: [H, h, w, d] of the annotated frame; annotated_labels: [L, h, w]. Returns [H] summing to 1. Each token
    keeps 4·top_k candidate sources (by the heads' mean), so memory is O(H·h·w·top_k).
    """
    heads, height, width, dim = q.shape
    tokens = height * width
    q, k = q.detach(), k.detach()  # only the weights learn, whatever made q and k
    if settings.fit_steps <= 0:
        return torch.full((heads,), 1.0 / heads)
    temperature = settings.temperature_for(dim)
    window = _window(height, width, settings.radius, q.device)
    near = _window(height, width, exclude, q.device)
    allowed = ~near if window is None else window & ~near
    q_flat, k_flat = q.reshape(heads, tokens, dim), k.reshape(heads, 1, tokens, dim)
    candidates = min(tokens, 4 * settings.top_k if settings.top_k > 0 else tokens)
    index = torch.empty(tokens, candidates, dtype=torch.long, device=q.device)
    values = torch.empty(heads, tokens, candidates, device=q.device)
    for start in range(0, tokens, settings.row_batch):
        rows = slice(start, min(tokens, start + settings.row_batch))
        per_head = head_softmax(q_flat[:, rows], k_flat, temperature, allowed[rows])
        index[rows] = per_head.mean(dim=0).topk(candidates, dim=1).indices
        values[:, rows] = per_head.gather(2, index[rows].expand(heads, -1, -1))
    target = annotated_labels.reshape(-1, tokens).float().to(q.device)
    # The prediction under weights w is sum_h w_h·gathered[h] over sum_h w_h·mass[h] (the candidates' labels under
    # each head, the heads' candidate mass): both read once here, the Adam steps then touch [H, L, M] numbers
    # only, few enough that the steps run faster in CPU memory than as thousands of tiny GPU kernels.
    gathered = torch.einsum("hmc,lmc->hlm", values, target[:, index]).cpu()
    mass, target = values.sum(dim=-1).cpu(), target.cpu()
    with torch.inference_mode(False), torch.enable_grad():  # nodes run under inference mode; only the logits learn
        gathered, mass, target = gathered.clone(), mass.clone(), target.clone()
        logits = torch.zeros(heads, requires_grad=True)
        optimiser = torch.optim.Adam([logits], lr=settings.fit_rate)
        for _ in range(settings.fit_steps):
            weights = torch.softmax(logits, dim=0)
            predicted = (torch.einsum("h,hlm->lm", weights, gathered)
                         / (weights @ mass).clamp(min=1e-12)).clamp(1e-6, 1.0)  # [L, M]
            dice = 1 - (2 * (predicted * target).sum(1) + 1) / (predicted.sum(1) + target.sum(1) + 1)
            loss = dice.mean() - (target * predicted.log()).sum(0).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        return torch.softmax(logits, dim=0).detach()


def propagate_chunk(frames: tuple[float, ...], q: torch.Tensor, k: torch.Tensor, annotated: float,
                    labels: dict[float, torch.Tensor], settings: PropagationSettings = PropagationSettings(),
                    head_weights: torch.Tensor | None = None, on_frame: Callable[[], None] = lambda: None) -> None:
    """Propagate labels through one forward's token frames (source-frame positions `frames`, holding the annotated
    frame's position), forward then backward in time from it; labels: position -> [L, h, w], updated in place
    (frames an earlier forward labelled are kept, as context). q, k: [H, T, h, w, d]."""
    if annotated not in frames:
        raise ValueError(f"These features' forward over frames {', '.join(f'{p:g}' for p in frames)} does not hold "
                         f"the annotated frame {annotated:g}: extract the features with that frame as reference_frame.")
    for order in directions(frames, annotated):
        known = {i: labels[frames[i]] for i in order if frames[i] in labels}
        propagate_in_order(q, k, order, known, settings, head_weights, on_frame)
        labels.update({frames[i]: known[i] for i in order})


def label_image(masks: torch.Tensor) -> torch.Tensor:
    """[H, W] long of object masks [N, H, W] (> 0.5 set): 0 the background, i where object i's mask is set (where
    masks overlap, the later object wins)."""
    if masks.ndim != 3:
        raise ValueError(f"Object masks are [objects, height, width]; got {list(masks.shape)}.")
    label = torch.zeros(masks.shape[1:], dtype=torch.long, device=masks.device)
    for index, mask in enumerate(masks, start=1):
        label[mask > 0.5] = index
    return label


def masks_to_labels(masks: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Soft token labels [N + 1, h, w] of object masks [N, H, W]: channel 0 the background, channel i object i
    (as label_image assigns pixels), each token the share of its pixels with that label."""
    one_hot = torch.nn.functional.one_hot(label_image(masks), masks.shape[0] + 1).permute(2, 0, 1).float()
    return torch.nn.functional.interpolate(one_hot[None], size=grid, mode="area")[0]


def labels_at(labels: dict[float, torch.Tensor], frame: int) -> torch.Tensor:
    """Token labels [L, h, w] at a source frame: linear in time between the nearest labelled token frames on either
    side (token frames of a natively encoded video sit between source frames), the nearest one beyond the ends."""
    positions = sorted(labels)
    before = [p for p in positions if p <= frame]
    after = [p for p in positions if p >= frame]
    if not after:
        return labels[before[-1]]
    if not before:
        return labels[after[0]]
    low, high = before[-1], after[0]
    if low == high:
        return labels[low]
    weight = (frame - low) / (high - low)
    return labels[low] * (1 - weight) + labels[high] * weight


def propagate_video(forwards: Iterable[tuple[tuple[float, ...], torch.Tensor, torch.Tensor]], annotated: float,
                    masks: torch.Tensor, settings: PropagationSettings = PropagationSettings(),
                    on_frame: Callable[[], None] = lambda: None) -> tuple[dict[float, torch.Tensor], torch.Tensor]:
    """Object masks drawn on one frame, propagated to every token frame of a video.

    forwards: one (source-frame position of each token frame, q, k) per forward, q and k [H, T, h, w, d], each
    holding the annotated token frame (source-frame position `annotated`, the token frame nearest the frame the
    masks [N, H, W] were drawn on); taken one at a time, so a caller can compute each just before it is used and
    drop it after (memory flat in the video's length). Head weights are fitted on the first forward's annotated
    frame (settings.fit_steps; 0 = the heads' mean). Returns (token-frame position -> [N + 1, h, w] soft labels,
    channel 0 the background; the head weights used).
    """
    if not 0 < masks.shape[0] <= MAX_OBJECTS:
        raise ValueError(f"{masks.shape[0]} objects: propagate between 1 and {MAX_OBJECTS} at once.")
    labels: dict[float, torch.Tensor] = {}
    weights = None
    for frames, q, k in forwards:
        if weights is None and annotated in frames:
            first = masks_to_labels(masks.to(q.device), tuple(q.shape[2:4]))
            labels[annotated] = first
            index = frames.index(annotated)
            weights = fit_head_weights(q[:, index], k[:, index], first, settings).to(q.device)
        propagate_chunk(frames, q, k, annotated, labels, settings, weights, on_frame)
    if weights is None:
        raise ValueError("No features to propagate with.")
    return labels, weights


PIXEL_BATCH_LABELS = 48  # frames x label channels upsampled at once (about 10 MB each at 480x832)


def label_maps(labels: dict[float, torch.Tensor], frames: torch.Tensor, annotated_frame: int,
               annotated: torch.Tensor, on_frame: Callable[[], None] = lambda: None) -> torch.Tensor:
    """Per-pixel labels [T, H, W] (long: 0 the background, i object i) of every source frame from token-frame soft
    labels (propagate_video), upsampled edge-aware with each frame as guidance (labels_to_pixels), a few frames at
    a time (PIXEL_BATCH_LABELS); the annotated frame keeps the label image `annotated` [H, W] it was given."""
    device = next(iter(labels.values())).device
    channels = next(iter(labels.values())).shape[0]
    batch = max(1, PIXEL_BATCH_LABELS // channels)
    spans = [(start, min(frames.shape[0], start + batch)) for start in range(0, frames.shape[0], batch)]
    maps = torch.empty(frames.shape[:3], dtype=torch.long)
    with FrameCopier(frames, device, as_bytes=True) as copier:  # the frames only guide the edges
        for number, (low, high) in enumerate(spans):
            if number + 1 < len(spans):
                copier.prefetch(*spans[number + 1])  # the next frames copy while these are filtered
            soft = torch.stack([labels_at(labels, t) for t in range(low, high)])
            pixels = labels_to_pixels(soft, copier.take(low, high)).argmax(dim=1)
            maps[low:high] = pixels.to(torch.uint8).cpu()  # MAX_OBJECTS + 1 labels fit a byte: 1/8 the copy
            if low <= annotated_frame < high:
                maps[annotated_frame] = annotated.cpu()
            for _ in range(low, high):
                on_frame()
    return maps


def labels_to_pixels(labels: torch.Tensor, frames: torch.Tensor, radius: int | None = None,
                     eps: float = 1e-2) -> torch.Tensor:
    """Token-grid soft labels [T, L, h, w] at the frames' pixels [T, L, H, W]: bilinear upsampling, then the guided
    filter (guided.guided_filter, kornia's box filters) with the frame ([T, H, W, 3] in [0, 1]) as guidance, so
    label edges snap to image edges. radius: the filter's window half-width in pixels (one token when None); eps:
    its regulariser (smaller follows the image more closely). The filter's coefficients are computed on a grid an
    eighth of the radius apart (the fast guided filter: ten times faster at 16-pixel tokens, the masks as good).
    The result is renormalised to sum to 1 per pixel."""
    height, width = frames.shape[1:3]
    radius = radius if radius is not None else max(1, round(height / labels.shape[-2]))
    up = torch.nn.functional.interpolate(labels.float(), size=(height, width), mode="bilinear", align_corners=False)
    guidance = frames.permute(0, 3, 1, 2).float().to(up.device)
    smoothed = guided_filter(guidance, up, radius, eps, subsample=max(1, radius // 8)).clamp(min=0)
    return smoothed / smoothed.sum(dim=1, keepdim=True).clamp(min=1e-12)
