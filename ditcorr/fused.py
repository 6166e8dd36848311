"""Tracking's fine-grained work as Triton kernels on CUDA: the mean over heads of attention probabilities without
the per-head maps, the refined read-out's peak, and the pixel step's template and Lucas–Kanade updates.

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

The others replace runs of small torch ops whose launches, not their arithmetic, made tracking host-bound on a GPU
(2,817 launches for 1,000 points over 81 frames, 48 ms of GPU work in 110 ms): `refined_peaks` (track.read_out's
refined read-out, one program per few maps), and per pyramid level `template_level` and `lucas_kanade_level`
(refine.template_terms and refine.lucas_kanade_steps, one program per 32 patches; in pixel_kernels.py). Each has
its torch version as the path off CUDA and its reference in the same tests.
"""
from __future__ import annotations

import functools

import torch


@functools.cache
def _triton():
    """(triton, triton.language), or None when Triton is not installed (imported on first use: ComfyUI on a CPU or
    a machine without Triton never needs it)."""
    try:
        import triton
        import triton.language as tl
    except ImportError:
        return None
    return triton, tl


@functools.cache
def _attention_kernels():
    """The two kernels of head_mean_softmax."""
    triton, tl = _triton()

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


@functools.cache
def _peak_kernel():
    """The kernel of refined_peaks."""
    triton, tl = _triton()

    @triton.jit
    def refined_peak_kernel(cost, out, rows, height, width, WINDOW: tl.constexpr, BLOCK_N: tl.constexpr,
                            BLOCK_M: tl.constexpr):
        """One program per BLOCK_N maps, each map's cells along the second axis: out [rows, 3] (column, row, peak)."""
        row = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        cell = tl.arange(0, BLOCK_M)
        cells = height * width
        row_ok, cell_ok = row < rows, cell < cells
        values = tl.load(cost + row[:, None] * cells + cell[None, :], mask=row_ok[:, None] & cell_ok[None, :],
                         other=float("-inf"))
        peak, flat = tl.max(values, axis=1, return_indices=True, return_indices_tie_break_left=True)
        peak_row, peak_column = flat // width, flat % width
        reach_row = tl.minimum(tl.minimum(peak_row, height - 1 - peak_row), WINDOW)
        reach_column = tl.minimum(tl.minimum(peak_column, width - 1 - peak_column), WINDOW)
        cell_row, cell_column = cell // width, cell % width
        inside = ((tl.abs(cell_row[None, :] - peak_row[:, None]) <= reach_row[:, None])
                  & (tl.abs(cell_column[None, :] - peak_column[:, None]) <= reach_column[:, None]) & cell_ok[None, :])
        weight = tl.where(inside, values, 0.0)
        total = tl.maximum(tl.sum(weight, axis=1), 1e-12)
        tl.store(out + row * 3, tl.sum(weight * cell_column[None, :].to(tl.float32), axis=1) / total, mask=row_ok)
        tl.store(out + row * 3 + 1, tl.sum(weight * cell_row[None, :].to(tl.float32), axis=1) / total, mask=row_ok)
        tl.store(out + row * 3 + 2, peak, mask=row_ok)

    return refined_peak_kernel


@functools.cache
def _pixel_kernels():
    """(template_kernel, lucas_kanade_kernel): in their own module, imported on first use (Triton resolves a jit
    function's helpers among its module's globals, and that module imports Triton)."""
    from . import pixel_kernels

    return pixel_kernels.template_kernel, pixel_kernels.lucas_kanade_kernel


def available(device: torch.device, head_dim: int | None = None) -> bool:
    """Whether the kernels run on `device`: CUDA with Triton installed (and, for head_mean_softmax, heads of size
    `head_dim` a power of two from 16 to 256)."""
    if torch.device(device).type != "cuda" or _triton() is None:
        return False
    return head_dim is None or (16 <= head_dim <= 256 and head_dim & (head_dim - 1) == 0)


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
    log_sum_exp_kernel, head_mean_kernel = _attention_kernels()
    row_tiles, key_tiles = (rows + block_n - 1) // block_n, (columns + block_m - 1) // block_m
    shapes = dict(HEADS=heads, DIM=dim, BLOCK_N=block_n, BLOCK_M=block_m, EXACT=query.dtype == torch.float32)
    log_sum_exp_kernel[(row_tiles, heads, groups)](query, keys, lse, rows, columns, float(scale), *query.stride()[:3],
                                                   *keys.stride(), **shapes)
    head_mean_kernel[(row_tiles, key_tiles, groups)](query, keys, lse, out, rows, columns, float(scale),
                                                     *query.stride()[:3], *keys.stride(), out.stride(0), out.stride(1),
                                                     **shapes)
    return out


PEAK_CELLS = 8192  # the most cells a map may have for refined_peaks (a 720p Wan frame has 3,600 tokens)


def refined_peaks(cost: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """track.read_out's refined read-out in one kernel: cost [N, h, w] (h * w <= PEAK_CELLS) -> (positions [N, 2]
    (column, row) in token units, peak [N]), float32: each map's largest cell, refined by the cost-weighted mean
    position over a (2 window + 1)^2 window that shrinks symmetrically at the grid's border."""
    rows, height, width = cost.shape
    if height * width > PEAK_CELLS:
        raise ValueError(f"Maps of {height}x{width} cells are more than refined_peaks holds ({PEAK_CELLS}).")
    block_m = 1 << (height * width - 1).bit_length()
    block_n = max(1, 8192 // block_m)
    out = torch.empty(rows, 3, device=cost.device, dtype=torch.float32)
    _peak_kernel()[((rows + block_n - 1) // block_n,)](cost.float().contiguous(), out, rows, height, width,
                                                       WINDOW=window, BLOCK_N=block_n, BLOCK_M=block_m)
    return out[:, :2], out[:, 2]


def _patch_block(radius: int) -> int:
    """The power of two that holds a patch's (2r+1)^2 pixels."""
    return 1 << ((2 * radius + 1) ** 2 - 1).bit_length()


def template_level(images: torch.Tensor, at: torch.Tensor, radius: int, similarity: float,
                   block_p: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """refine.template_terms in one kernel: same arguments and results (images [Gt, 1, h, w] float32, at [Gt, N, 2]
    pixels of this level -> weights [Gt, N, 4, K], terms [Gt, N, 7])."""
    groups, count = at.shape[:2]
    pixels = (2 * radius + 1) ** 2
    weights = torch.empty(groups, count, 4, pixels, device=at.device, dtype=torch.float32)
    terms = torch.empty(groups, count, 7, device=at.device, dtype=torch.float32)
    _pixel_kernels()[0][((groups * count + block_p - 1) // block_p,)](
        images.float().contiguous(), at.float().contiguous(), weights, terms, groups * count, count,
        images.shape[-2], images.shape[-1], float(similarity), RADIUS=radius, BLOCK_P=block_p,
        BLOCK_K=_patch_block(radius))
    return weights, terms


def lucas_kanade_level(targets: torch.Tensor, centre: torch.Tensor, weights: torch.Tensor, terms: torch.Tensor,
                       iterations: int, radius: int, block_p: int = 32) -> torch.Tensor:
    """refine.lucas_kanade_steps in one kernel: every update of every (group, point) pair of one pyramid level,
    each pair's patch read, summed and stepped on chip. Same arguments and result (float32 tensors; targets
    [G, 1, h, w], centre [G, N, 2], the template's weights [Gt, N, 4, K] and terms [Gt, N, 7], Gt 1 or G)."""
    groups, count = centre.shape[:2]
    pixels = (2 * radius + 1) ** 2
    if weights.shape[-2:] != (4, pixels) or weights.shape[0] not in (1, groups):
        raise ValueError(f"Template weights {list(weights.shape)} do not fit {groups} groups of {count} "
                         f"points with patches of radius {radius}.")
    out = centre.float().contiguous().clone()
    _pixel_kernels()[1][((groups * count + block_p - 1) // block_p,)](
        targets.float().contiguous(), out, weights.float().contiguous(), terms.float().contiguous(),
        groups * count, count, targets.shape[-2], targets.shape[-1], weights.shape[0],
        ITERATIONS=iterations, RADIUS=radius, BLOCK_P=block_p, BLOCK_K=_patch_block(radius))
    return out
