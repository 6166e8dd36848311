"""Cross-frame correspondence cost from captured queries and keys (DiffTrack).

For a query point p on a source frame s and a target frame j:
    forward  P_sj(p, .) = mean_h softmax_over_j( q_s(p) . k_j / tau )
    backward P_js(., p) = mean_h softmax_over_s( q_j . k_s / tau ) evaluated at p
    cost     = (P_sj + P_js) / 2
Only the rows of the query points are computed, target tokens in slices, so no
full [hw x hw] map is ever held for a whole video.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .features import QK


def sample_tokens(grid: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinearly sample a token grid at points.

    grid: [C, h, w, d]; points: [N, 2] as (x, y) in [-1, 1] over the frame
    (-1 and 1 are the frame's outer edges). Returns [C, N, d].
    """
    c, h, w, d = grid.shape
    image = grid.permute(0, 3, 1, 2).float()  # [C, d, h, w]
    where = points.to(image).view(1, 1, -1, 2).expand(c, 1, -1, 2)
    sampled = F.grid_sample(image, where, mode="bilinear", padding_mode="border", align_corners=False)
    return sampled[:, :, 0, :].transpose(1, 2)  # [C, N, d]


def point_cost(source: QK, source_frame: int, target: QK, target_frame: int, points: torch.Tensor,
               temperature: float | None = None, slice_tokens: int = 4096) -> torch.Tensor:
    """Symmetric cost of query points on one frame against every token of another.

    source/target: captured QK ([heads, T, h, w, d]); *_frame: token frame
    index inside each. points: [N, 2] (x, y) in [-1, 1]. temperature: softmax
    temperature, sqrt(d) when None. Returns [N, h, w] (float32), each row a
    probability-like map summing to 1.
    """
    heads, _, h, w, d = target.q.shape
    tau = math.sqrt(d) if temperature is None else temperature
    q_src = source.q[:, source_frame].float()
    k_src = source.k[:, source_frame].float().reshape(heads, -1, d)  # [H, Ms, d]
    q_dst = target.q[:, target_frame].float().reshape(heads, -1, d)  # [H, Md, d]
    k_dst = target.k[:, target_frame].float().reshape(heads, -1, d)

    query = sample_tokens(q_src, points)  # [H, N, d]
    forward = torch.softmax(query @ k_dst.transpose(1, 2) / tau, dim=-1).mean(0)  # [N, Md]

    hs, ws = source.q.shape[2:4]
    backward = []
    for start in range(0, q_dst.shape[1], slice_tokens):
        rows = torch.softmax(q_dst[:, start:start + slice_tokens] @ k_src.transpose(1, 2) / tau, dim=-1)
        rows = rows.reshape(-1, hs, ws, 1)  # [H*m, hs, ws, 1]: a map over the source frame per target token
        backward.append(sample_tokens(rows, points)[..., 0].reshape(heads, -1, points.shape[0]).mean(0))
    backward = torch.cat(backward, dim=0).transpose(0, 1)  # [N, Md]
    return (0.5 * (forward + backward)).reshape(-1, h, w)


def point_cost_over_video(chunks: list[tuple[tuple[float, ...], QK]], query_frame: float, points: torch.Tensor,
                          temperature: float | None = None) -> tuple[list[float], torch.Tensor]:
    """Cost maps of query points on one frame against every frame of the video.

    chunks: (frame positions, QK) per chunk, as DitFeatures.select returns.
    query_frame: source-frame position of the query frame (the nearest token
    frame is used). A frame's cost is averaged over the chunks that hold both
    it and the query frame. Returns (frame positions, maps [F, N, h, w]); a
    frame that shares no chunk with the query frame gets an all-zero map.
    """
    positions = sorted({p for frames, _ in chunks for p in frames})
    anchor = min(positions, key=lambda p: abs(p - query_frame))
    h, w = chunks[0][1].q.shape[2:4]
    total = torch.zeros(len(positions), points.shape[0], h, w)
    count = torch.zeros(len(positions))
    for frames, qk in chunks:
        if anchor not in frames:
            continue
        source_frame = frames.index(anchor)
        for target_frame, position in enumerate(frames):
            slot = positions.index(position)
            total[slot] += point_cost(qk, source_frame, qk, target_frame, points, temperature).cpu()
            count[slot] += 1
    return positions, total / count.clamp(min=1).view(-1, 1, 1, 1)
