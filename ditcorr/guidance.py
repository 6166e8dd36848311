"""Cross-Attention Guidance (DiffTrack's CAG): guide away from a branch whose cross-frame attention is cut.

Per step: uncond u, cond c and perturbed p, the cond pass with, in chosen
blocks, every video query attending only to keys of its own latent frame (plus
text keys in joint-attention models). out = u + cfg (c - u) + s (c - p).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

VARIANTS = ("renormalised", "published")


def add_guidance(guided: torch.Tensor, cond: torch.Tensor, perturbed: torch.Tensor, scale: float) -> torch.Tensor:
    """A CFG result pushed away from the perturbed prediction: guided + s (c - p)."""
    return guided + scale * (cond - perturbed)


def cag_combine(cond: torch.Tensor, uncond: torch.Tensor | None, perturbed: torch.Tensor, cfg: float,
                scale: float) -> torch.Tensor:
    """u + cfg (c - u) + s (c - p); without an uncond prediction (cfg = 1), c + s (c - p)."""
    return add_guidance(cond if uncond is None else uncond + cfg * (cond - uncond), cond, perturbed, scale)


def _local_keys(video: slice, frame_tokens: int, text: slice, device) -> torch.Tensor:
    """Key indices each frame's queries may see: [T, frame_tokens + text tokens]."""
    frames = (video.stop - video.start) // frame_tokens
    own = video.start + torch.arange(frames, device=device)[:, None] * frame_tokens + torch.arange(frame_tokens, device=device)
    text_keys = torch.arange(text.start, text.stop, device=device)[None].expand(frames, -1)
    return torch.cat([own, text_keys], dim=1)


def logsumexp_over(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None, budget_bytes: int = 2**28,
                   key_slice: int = 4096) -> torch.Tensor:
    """logsumexp over keys of q.k^T/sqrt(d) (+ additive key mask [B, 1, 1, Lk]): [B, H, Lq].

    Queries and keys go in slices so that no logits block exceeds `budget_bytes` (a whole video's logits would not fit).
    """
    b, h, length, d = q.shape
    keys = min(k.shape[2], key_slice)
    queries = max(1, budget_bytes // (4 * b * h * keys))
    scale = 1 / math.sqrt(d)
    rows = []
    for q_start in range(0, length, queries):
        total = None
        for k_start in range(0, k.shape[2], keys):
            logits = (q[:, :, q_start:q_start + queries].float() @ k[:, :, k_start:k_start + keys].float().transpose(2, 3)) * scale
            if mask is not None:
                logits = logits + mask[..., k_start:k_start + keys].float()
            part = torch.logsumexp(logits, dim=-1)
            total = part if total is None else torch.logaddexp(total, part)
        rows.append(total)
    return torch.cat(rows, dim=2)


def frame_local_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, video: slice, frame_tokens: int,
                          text: slice = slice(0, 0), mask: torch.Tensor | None = None,
                          variant: str = "renormalised") -> torch.Tensor:
    """Self-attention in which video queries see only their own frame's keys (and text keys).

    q, k, v: [B, H, L, D]; video: the video tokens' positions (frame-major,
    frame_tokens per frame); text: positions of text tokens that stay visible
    (joint-attention models); mask: additive key mask broadcastable to
    [B, 1, 1, L] or None. Other queries (text, prefixes) attend to everything.
    variant "renormalised": softmax over the allowed keys; "published": the
    full softmax with cross-frame probabilities zeroed (not renormalised), i.e.
    the renormalised output scaled by each query's own-frame probability mass.
    Frames are folded into the batch, so the cost is that of T small attentions.
    Returns [B, H, L, D].
    """
    if variant not in VARIANTS:
        raise ValueError(f"Unknown CAG variant {variant!r}; use one of {VARIANTS}.")
    b, h, length, d = q.shape
    frames = (video.stop - video.start) // frame_tokens
    keys = _local_keys(video, frame_tokens, text, q.device)  # [T, K]
    width = keys.shape[1]

    def per_frame(t: torch.Tensor) -> torch.Tensor:  # [B, H, L, D] -> [B*T, H, K, D]
        return t[:, :, keys.flatten()].view(b, h, frames, width, d).transpose(1, 2).reshape(b * frames, h, width, d)

    q_video = q[:, :, video].view(b, h, frames, frame_tokens, d).transpose(1, 2).reshape(b * frames, h, frame_tokens, d)
    local_mask = None
    if mask is not None:  # the text-padding masks joint-attention models pass: one additive value per key
        if mask.shape[-1] != length or mask.numel() != mask.shape[0] * length or mask.shape[0] not in (1, b):
            raise ValueError(f"CAG supports key-padding masks only ([B, 1, {length}]), got {tuple(mask.shape)}.")
        mask = mask.reshape(mask.shape[0], 1, 1, length).to(q.dtype)
        local_mask = mask[:, 0, 0].expand(b, -1)[:, keys.flatten()].reshape(b * frames, 1, 1, width)
    out_video = F.scaled_dot_product_attention(q_video, per_frame(k), per_frame(v), attn_mask=local_mask)
    if variant == "published":
        own = logsumexp_over(q_video, per_frame(k), local_mask)  # [B*T, H, S]
        full = logsumexp_over(q[:, :, video], k, mask)  # [B, H, T*S]
        full = full.view(b, h, frames, frame_tokens).transpose(1, 2).reshape(b * frames, h, frame_tokens)
        out_video = out_video * torch.exp(own - full)[..., None].to(out_video.dtype)
    out = torch.empty_like(q)
    out[:, :, video] = out_video.view(b, frames, h, frame_tokens, d).transpose(1, 2).reshape(b, h, -1, d)
    others = torch.ones(length, dtype=torch.bool, device=q.device)
    others[video] = False
    if others.any():
        out[:, :, others] = F.scaled_dot_product_attention(q[:, :, others], k, v, attn_mask=mask)
    return out
