"""The mean over heads of attention probabilities, computed without the per-head maps (a Triton kernel on CUDA).

Tracking's cost reads, for G frame pairs, mean_h softmax(scale * q_h . k_h) over a frame's tokens: a
[G, N, M] map. Written with torch ops it goes through a float32 [G, H, N, M] tensor (logits, then their softmax
in place, then the head mean): H times the map's size, written and read three times. Two kernels keep the
logits on chip instead: the first finds every head's log-sum-exp per row (a program per row tile and head, online
over the keys), the second recomputes each tile of logits for every head and adds up their probabilities (a
program per row tile and key tile), so only the [G, H, N] log-sum-exps and the [G, N, M] result reach memory.
Their products are the tensor cores' with float32 accumulation, as torch's batched product with a float32 output
(cost.scores).

`head_mean_softmax` is the entry point; `available` says whether it can run (on CUDA, with Triton, for a
power-of-two head size from 16 to 256). cost.py keeps the torch expression as the path everywhere else and as the
reference the kernel is tested against (in Triton's interpreter on the CPU: tests/core/test_fused.py).
"""
from __future__ import annotations

import functools

import torch


@functools.cache
def _kernels():
    """The two compiled kernels, or None when Triton is not installed (imported on first use: ComfyUI on a CPU or
    a machine without Triton never needs it)."""
    try:
        import triton
        import triton.language as tl
    except ImportError:
        return None

    @triton.jit
    def log_sum_exp_kernel(q, k, lse, rows, columns, scale, q_g, q_h, q_n, k_g, k_h, k_m, k_d,
                           HEADS: tl.constexpr, DIM: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
                           EXACT: tl.constexpr):
        """lse [G, H, N] of the logits' rows: one program per (row tile, head, group), online over key tiles."""
        tile, head, group = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        row = tile * BLOCK_N + tl.arange(0, BLOCK_N)
        row_ok = row < rows
        dim = tl.arange(0, DIM)
        query = tl.load(q + group * q_g + head * q_h + row[:, None] * q_n + dim[None, :], mask=row_ok[:, None], other=0.0)
        running_max = tl.full((BLOCK_N,), float("-inf"), dtype=tl.float32)
        running_sum = tl.zeros((BLOCK_N,), dtype=tl.float32)
        for start in range(0, columns, BLOCK_M):
            column = start + tl.arange(0, BLOCK_M)
            key = tl.load(k + group * k_g + head * k_h + column[None, :] * k_m + dim[:, None] * k_d,
                          mask=(column < columns)[None, :], other=0.0)
            logits = tl.dot(query, key, input_precision="ieee" if EXACT else "tf32") * scale
            logits = tl.where((column < columns)[None, :], logits, float("-inf"))
            new_max = tl.maximum(running_max, tl.max(logits, axis=1))
            running_sum = running_sum * tl.exp(running_max - new_max) + tl.sum(tl.exp(logits - new_max[:, None]), axis=1)
            running_max = new_max
        tl.store(lse + (group * HEADS + head) * rows + row, running_max + tl.log(running_sum), mask=row_ok)

    @triton.jit
    def head_mean_kernel(q, k, lse, out, rows, columns, scale, q_g, q_h, q_n, k_g, k_h, k_m, k_d, out_g, out_n,
                         HEADS: tl.constexpr, DIM: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
                         EXACT: tl.constexpr):
        """out [G, N, M]: one program per (row tile, key tile, group), the heads' probabilities added up."""
        tile, key_tile, group = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        row = tile * BLOCK_N + tl.arange(0, BLOCK_N)
        column = key_tile * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok, column_ok = row < rows, column < columns
        dim = tl.arange(0, DIM)
        total = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
        for head in range(HEADS):
            query = tl.load(q + group * q_g + head * q_h + row[:, None] * q_n + dim[None, :], mask=row_ok[:, None],
                            other=0.0)
            key = tl.load(k + group * k_g + head * k_h + column[None, :] * k_m + dim[:, None] * k_d,
                          mask=column_ok[None, :], other=0.0)
            head_lse = tl.load(lse + (group * HEADS + head) * rows + row, mask=row_ok, other=0.0)
            total += tl.exp(tl.dot(query, key, input_precision="ieee" if EXACT else "tf32") * scale - head_lse[:, None])
        tl.store(out + group * out_g + row[:, None] * out_n + column[None, :], total / HEADS,
                 mask=row_ok[:, None] & column_ok[None, :])

    return log_sum_exp_kernel, head_mean_kernel


def available(device: torch.device, dim: int) -> bool:
    """Whether head_mean_softmax runs on `device` for heads of size `dim`: CUDA, Triton installed, dim a power of
    two from 16 to 256."""
    return torch.device(device).type == "cuda" and 16 <= dim <= 256 and dim & (dim - 1) == 0 and _kernels() is not None


def head_mean_softmax(query: torch.Tensor, keys: torch.Tensor, scale: float = 1.0,
                      block_n: int = 64, block_m: int = 64) -> torch.Tensor:
    """mean over heads of softmax over keys of scale * query . key.

    query [G, H, N, d], keys [G, H, M, d] (any strides, the same dtype: bfloat16, float16, or float32, whose
    products are then exact rather than TF32). Returns [G, N, M] float32, on their device. The kernel runs under
    Triton's interpreter as well (TRITON_INTERPRET=1), on CPU tensors: that is how the tests check it.
    """
    if query.dtype != keys.dtype:
        raise ValueError(f"Queries ({query.dtype}) and keys ({keys.dtype}) must have the same dtype.")
    groups, heads, rows, dim = query.shape
    columns = keys.shape[2]
    query = query if query.stride(-1) == 1 else query.contiguous()
    lse = torch.empty(groups, heads, rows, device=query.device, dtype=torch.float32)
    out = torch.empty(groups, rows, columns, device=query.device, dtype=torch.float32)
    log_sum_exp_kernel, head_mean_kernel = _kernels()
    row_tiles, key_tiles = (rows + block_n - 1) // block_n, (columns + block_m - 1) // block_m
    shapes = dict(HEADS=heads, DIM=dim, BLOCK_N=block_n, BLOCK_M=block_m, EXACT=query.dtype == torch.float32)
    log_sum_exp_kernel[(row_tiles, heads, groups)](query, keys, lse, rows, columns, float(scale), *query.stride()[:3],
                                                   *keys.stride(), **shapes)
    head_mean_kernel[(row_tiles, key_tiles, groups)](query, keys, lse, out, rows, columns, float(scale),
                                                     *query.stride()[:3], *keys.stride(), out.stride(0), out.stride(1),
                                                     **shapes)
    return out
