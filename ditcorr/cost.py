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

from .features import QK, FeatureChunk
from .fused import available, head_mean_softmax
from .streaming import DeviceWindow, to_device


def sample_tokens(grid: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinearly sample a token grid at points.

    grid: [C, h, w, d]; points: [N, 2] as (x, y) in [-1, 1] over the frame
    (-1 and 1 are the frame's outer edges). Returns [C, N, d] (float32).
    """
    c, h, w, d = grid.shape
    image = grid.permute(0, 3, 1, 2).float()  # [C, d, h, w]
    # C on grid_sample's batch axis (its kernel runs in parallel over batch x points and loops over channels),
    # with one stride-0 grid shared by all C.
    where = points.to(image).view(1, 1, -1, 2).expand(c, 1, -1, 2)
    sampled = F.grid_sample(image, where, mode="bilinear", padding_mode="border", align_corners=False)
    return sampled[:, :, 0, :].transpose(1, 2)  # [C, N, d]


def sample_pairs(grids: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """sample_tokens for G grids, each at its own points: grids [G, C, h, w, d], points [G, N, 2] -> [G, C, N, d]."""
    g, c, h, w, d = grids.shape
    image = grids.reshape(g * c, h, w, d).permute(0, 3, 1, 2).float()  # [G*C, d, h, w]
    where = points.to(image)[:, None, None].expand(g, c, 1, -1, 2).reshape(g * c, 1, -1, 2)  # G*C*N*2 floats: small
    sampled = F.grid_sample(image, where, mode="bilinear", padding_mode="border", align_corners=False)
    return sampled.view(g, c, d, -1).transpose(2, 3)


def scores(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Batched a @ b in float32. bf16/fp16 operands on CUDA use tensor cores with float32 output: their products
    are exact in float32 and accumulate in float32, so this is the float32 product of those operands up to
    summation order."""
    if a.is_cuda and a.dtype == b.dtype and a.dtype in (torch.bfloat16, torch.float16):
        shape = a.shape[:-2]
        return torch.bmm(a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:]),
                         out_dtype=torch.float32).view(*shape, a.shape[-2], b.shape[-1])
    return a.float() @ b.float()


def softmax_(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension, written over `logits`. A batch of cost maps is the largest tensor tracking
    holds; torch.softmax would hold a second one of the same size next to it. Its kernels (CPU and CUDA) finish
    reading a row before writing it, so `out=logits` gives torch.softmax's values bit for bit (tests/core/test_cost.py
    checks it; the two-tensor version measured no faster on an H200)."""
    return torch.softmax(logits, dim=-1, out=logits)


def head_mean_probabilities(query: torch.Tensor, keys: torch.Tensor, scale: float = 1.0,
                            fused_kernel: bool = True) -> torch.Tensor:
    """mean over heads of softmax over keys of scale * query . key: query [G, H, N, d], keys [G, H, M, d] ->
    [G, N, M] float32. fused_kernel: the Triton kernel where it runs (ditcorr.fused: CUDA), without the float32
    [G, H, N, M] logits the torch ops go through (the path everywhere else, and the kernel's reference)."""
    if fused_kernel and available(query.device, query.shape[-1]):
        return head_mean_softmax(query, keys, scale)
    logits = scores(query, keys.transpose(-1, -2))
    return softmax_(logits if scale == 1.0 else logits.mul_(scale)).mean(1)


def _token_frames(qk_part: torch.Tensor, frames: list[int]) -> torch.Tensor:
    """[H, T, h, w, d] -> [H, G, h, w, d] for the listed token frames: a view, without a copy, when they are one
    frame repeated (a query frame against many targets) or consecutive frames. (Indexing a GPU tensor with a list
    would copy the list there and wait for the GPU first.)"""
    first = frames[0]
    if all(frame == first for frame in frames):
        return qk_part[:, first:first + 1].expand(-1, len(frames), -1, -1, -1)
    if frames == list(range(first, first + len(frames))):
        return qk_part[:, first:first + len(frames)]
    return qk_part.index_select(1, to_device(torch.tensor(frames), qk_part.device))


def _frames(qk_part: torch.Tensor, frames: list[int]) -> torch.Tensor:
    """[H, T, h, w, d] -> [G, H, M, d] for the listed token frames (_token_frames' views where it can)."""
    heads, _, h, w, d = qk_part.shape
    return _token_frames(qk_part, frames).reshape(heads, len(frames), h * w, d).transpose(0, 1)


def forward_rows(source: QK, source_frames: list[int], target: QK, target_frames: list[int], points: torch.Tensor,
                 temperature: float | None = None, fused_kernel: bool = True) -> torch.Tensor:
    """Where each query point goes, for G frame pairs: mean over heads of softmax over the target's tokens.

    source/target: captured QK ([heads, T, h, w, d]); *_frames: G token-frame
    indices inside each. points: [G, N, 2] (x, y) in [-1, 1] on each source
    frame. temperature: sqrt(d) when None. fused_kernel: head_mean_probabilities'. Returns [G, N, h, w] (float32).
    """
    heads, _, h, w, d = target.q.shape
    tau = math.sqrt(d) if temperature is None else temperature
    keys = _frames(target.k, target_frames)  # [G, H, Md, d]
    # Interpolated queries are rounded to the keys' precision: the precision the model's own attention works in.
    query = (sample_pairs(_token_frames(source.q, source_frames).transpose(0, 1), points) / tau).to(keys.dtype)  # [G, H, N, d]
    return head_mean_probabilities(query, keys, fused_kernel=fused_kernel).view(len(target_frames), -1, h, w)


def backward_rows(source: QK, source_frames: list[int], target: QK, target_frames: list[int], points: torch.Tensor,
                  temperature: float | None = None, budget_bytes: int = 2**28,
                  fused_kernel: bool = True) -> torch.Tensor:
    """Which target tokens come back to each query point, for G frame pairs: every target token's softmax over the
    source tokens, averaged over heads and sampled at the points (the two commute: both are linear). [G, N, h, w].
    With torch ops, target tokens go in slices that keep the [G, H, slice, Ms] logits within `budget_bytes`; the
    fused kernel holds no such tensor and takes them all at once."""
    heads, _, h, w, d = target.q.shape
    tau = math.sqrt(d) if temperature is None else temperature
    hs, ws = source.q.shape[2:4]
    k_src = _frames(source.k, source_frames)  # [G, H, Ms, d]
    q_dst = _frames(target.q, target_frames)  # [G, H, Md, d]
    pairs = len(target_frames)
    whole = fused_kernel and available(q_dst.device, d)
    step = q_dst.shape[2] if whole else max(1, budget_bytes // (4 * pairs * heads * hs * ws))
    rows = []
    for start in range(0, q_dst.shape[2], step):
        maps = head_mean_probabilities(q_dst[:, :, start:start + step], k_src, 1 / tau, fused_kernel)  # [G, m, Ms]
        maps = maps.view(pairs, -1, hs, ws, 1)  # a map over the source frame per target token
        rows.append(sample_pairs(maps, points)[..., 0])  # [G, m, N]
    return torch.cat(rows, dim=1).transpose(1, 2).reshape(pairs, -1, h, w)


def pair_costs(source: QK, source_frames: list[int], target: QK, target_frames: list[int], points: torch.Tensor,
               temperature: float | None = None, budget_bytes: int = 2**28, fused_kernel: bool = True) -> torch.Tensor:
    """Symmetric cost of query points against every target token for G frame pairs, [G, N, h, w]: the mean of
    forward_rows and backward_rows (DiffTrack's cost volume, query rows only)."""
    return 0.5 * (forward_rows(source, source_frames, target, target_frames, points, temperature, fused_kernel)
                  + backward_rows(source, source_frames, target, target_frames, points, temperature, budget_bytes,
                                  fused_kernel))


def point_cost(source: QK, source_frame: int, target: QK, target_frame: int, points: torch.Tensor,
               temperature: float | None = None) -> torch.Tensor:
    """pair_costs for one frame pair: [N, h, w], each row a probability-like map."""
    return pair_costs(source, [source_frame], target, [target_frame], points[None], temperature)[0]


def point_cost_over_video(chunks: list[FeatureChunk], query_frame: float, points: torch.Tensor,
                          temperature: float | None = None,
                          device_window: DeviceWindow | None = None) -> tuple[list[float], torch.Tensor]:
    """Cost maps of query points on one frame against every frame of the video.

    chunks: as DitFeatures.select returns.
    query_frame: source-frame position of the query frame (the nearest token
    frame is used). A frame's cost is averaged over the chunks that hold both
    it and the query frame. Returns (frame positions, maps [F, N, h, w]); a
    frame that shares no chunk with the query frame gets an all-zero map.
    device_window: where to compute (chunks are brought there one at a time); None = where they live.
    """
    device_window = device_window or DeviceWindow(capacity=1)
    positions = sorted({p for frames, _ in chunks for p in frames})
    anchor = min(positions, key=lambda p: abs(p - query_frame))
    h, w = chunks[0][1].q.shape[2:4]
    total = torch.zeros(len(positions), points.shape[0], h, w)
    count = torch.zeros(len(positions))
    for frames, qk in chunks:
        if anchor not in frames:
            continue
        source_frame = frames.index(anchor)
        qk = device_window.get(qk)
        for target_frame, position in enumerate(frames):
            slot = positions.index(position)
            total[slot] += point_cost(qk, source_frame, qk, target_frame, points, temperature).cpu()
            count[slot] += 1
    return positions, total / count.clamp(min=1).view(-1, 1, 1, 1)
