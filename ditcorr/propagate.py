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
from typing import Callable

import torch


@dataclass
class PropagationSettings:
    temperature: float | None = None  # softmax temperature of q·k; sqrt(head dim) when None
    context: int = 3  # predicted frames before the target in its context, besides the annotated frame
    radius: int | None = 6  # window half-width in tokens around the target's own position; None = the whole frame
    top_k: int = 16  # context tokens each target keeps (0 = all)
    row_batch: int = 512  # target tokens per computation


def _window(height: int, width: int, radius: int | None, device) -> torch.Tensor | None:
    """[hw, hw] bool: token j lies within `radius` tokens (Chebyshev) of token i; None for no window."""
    if radius is None:
        return None
    rows = torch.arange(height, device=device).repeat_interleave(width)
    cols = torch.arange(width, device=device).repeat(height)
    return ((rows[:, None] - rows[None, :]).abs() <= radius) & ((cols[:, None] - cols[None, :]).abs() <= radius)


def affinities(q_target: torch.Tensor, k_context: torch.Tensor, head_weights: torch.Tensor, temperature: float,
               allowed: torch.Tensor | None, top_k: int) -> torch.Tensor:
    """Affinity of target tokens to context tokens.

    q_target: [H, R, d] (R target tokens); k_context: [H, C, M, d] (C context frames of M tokens); head_weights: [H]
    summing to 1; allowed: [R, M] bool (the window, the same for every context frame) or None. Returns [R, C * M]:
    per head a softmax over every allowed context token, summed with the head weights, the top_k kept per row and
    renormalised to sum to 1.
    """
    heads, rows, _ = q_target.shape
    contexts, tokens = k_context.shape[1:3]
    logits = torch.einsum("hrd,hcmd->hrcm", q_target.float(), k_context.float()) / temperature
    if allowed is not None:
        logits = logits.masked_fill(~allowed[None, :, None, :], -math.inf)
    weights = torch.softmax(logits.reshape(heads, rows, contexts * tokens), dim=-1)
    combined = torch.einsum("h,hrn->rn", head_weights.float(), weights)
    if 0 < top_k < combined.shape[1]:
        kept, index = combined.topk(top_k, dim=1)
        combined = torch.zeros_like(combined).scatter_(1, index, kept)
    return combined / combined.sum(dim=1, keepdim=True).clamp(min=1e-12)


def propagate_labels(q: torch.Tensor, k: torch.Tensor, first_labels: torch.Tensor,
                     settings: PropagationSettings = PropagationSettings(), head_weights: torch.Tensor | None = None,
                     on_frame: Callable[[], None] = lambda: None) -> torch.Tensor:
    """Soft labels of every token frame from those of the first.

    q, k: [H, T, h, w, d] of one video (token frames in time order, the annotated one first); first_labels:
    [L, h, w] soft labels of frame 0 (one channel per object and the background, summing to 1 per token);
    head_weights: [H], the heads' mean when None. Returns [T, L, h, w] (frame 0 the given labels). on_frame is
    called after each frame (progress, cancellation).
    """
    heads, frames, height, width, dim = q.shape
    if first_labels.shape[1:] != (height, width):
        raise ValueError(f"The first frame's labels are {tuple(first_labels.shape[1:])} tokens, the features "
                         f"{(height, width)}: give them at the features' token grid.")
    tokens = height * width
    temperature = settings.temperature or math.sqrt(dim)
    weights = head_weights if head_weights is not None else torch.full((heads,), 1.0 / heads)
    weights = weights.to(q.device)
    allowed = _window(height, width, settings.radius, q.device)
    q_flat, k_flat = q.reshape(heads, frames, tokens, dim), k.reshape(heads, frames, tokens, dim)
    labels = torch.zeros(frames, first_labels.shape[0], tokens, device=q.device)
    labels[0] = first_labels.reshape(-1, tokens).to(labels)
    for target in range(1, frames):
        context = [0, *range(max(1, target - settings.context), target)]
        keys = k_flat[:, context]  # [H, C, M, d]
        context_labels = labels[context].permute(1, 0, 2).reshape(labels.shape[1], -1)  # [L, C * M]
        for start in range(0, tokens, settings.row_batch):
            rows = slice(start, min(tokens, start + settings.row_batch))
            affinity = affinities(q_flat[:, target, rows], keys, weights, temperature,
                                  None if allowed is None else allowed[rows], settings.top_k)
            labels[target, :, rows] = context_labels @ affinity.T
        on_frame()
    return labels.reshape(frames, -1, height, width)


def labels_to_pixels(labels: torch.Tensor, frames: torch.Tensor, radius: int | None = None,
                     eps: float = 1e-2) -> torch.Tensor:
    """Token-grid soft labels [T, L, h, w] at the frames' pixels [T, L, H, W]: bilinear upsampling, then kornia's
    guided filter with the frame ([T, H, W, 3] in [0, 1]) as guidance, so label edges snap to image edges.
    radius: the filter's window half-width in pixels (one token when None); eps: its regulariser (smaller follows
    the image more closely). The result is renormalised to sum to 1 per pixel."""
    try:
        from kornia.filters import guided_blur
    except ImportError as error:  # ComfyUI lists kornia among its requirements; a trimmed install may lack it
        raise ImportError("Edge-aware mask upsampling needs kornia (in ComfyUI's requirements.txt): "
                          "pip install kornia.") from error
    height, width = frames.shape[1:3]
    radius = radius if radius is not None else max(1, round(height / labels.shape[-2]))
    up = torch.nn.functional.interpolate(labels.float(), size=(height, width), mode="bilinear", align_corners=False)
    guidance = frames.permute(0, 3, 1, 2).float().to(up.device)
    smoothed = guided_blur(guidance, up, 2 * radius + 1, eps).clamp(min=0)
    return smoothed / smoothed.sum(dim=1, keepdim=True).clamp(min=1e-12)
