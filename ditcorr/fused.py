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
def _lucas_kanade_kernel():
    """The kernel of lucas_kanade_level."""
    triton, tl = _triton()

    @triton.jit
    def lucas_kanade_kernel(images, centre, weights, terms, pairs, count, height, width, template_groups,
                            ITERATIONS: tl.constexpr, RADIUS: tl.constexpr, BLOCK_P: tl.constexpr,
                            BLOCK_K: tl.constexpr):
        """One program per BLOCK_P (group, point) pairs, each patch's pixels along the second axis; the centres
        [pairs, 2] are updated in place."""
        pair = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
        pair_ok = pair < pairs
        group, point = pair // count, pair % count
        template = tl.where(template_groups == 1, point, pair)  # the template's (group, point) row
        side: tl.constexpr = 2 * RADIUS + 1
        pixel = tl.arange(0, BLOCK_K)
        pixel_ok = pixel < side * side
        dx, dy = (pixel % side - RADIUS).to(tl.float32), (pixel // side - RADIUS).to(tl.float32)
        both = pair_ok[:, None] & pixel_ok[None, :]
        row = template[:, None] * (3 * side * side) + pixel[None, :]
        weight = tl.load(weights + row, mask=both, other=0.0)
        weight_gx = tl.load(weights + row + side * side, mask=both, other=0.0)
        weight_gy = tl.load(weights + row + 2 * side * side, mask=both, other=0.0)
        template_contrast = tl.load(terms + template * 7, mask=pair_ok, other=1.0)
        gx_template = tl.load(terms + template * 7 + 1, mask=pair_ok, other=0.0)
        gy_template = tl.load(terms + template * 7 + 2, mask=pair_ok, other=0.0)
        hxx = tl.load(terms + template * 7 + 3, mask=pair_ok, other=0.0)
        hxy = tl.load(terms + template * 7 + 4, mask=pair_ok, other=0.0)
        hyy = tl.load(terms + template * 7 + 5, mask=pair_ok, other=0.0)
        determinant = tl.load(terms + template * 7 + 6, mask=pair_ok, other=1.0)
        x = tl.load(centre + pair * 2, mask=pair_ok, other=0.0)
        y = tl.load(centre + pair * 2 + 1, mask=pair_ok, other=0.0)
        image = images + group[:, None] * (height * width)
        for _ in range(ITERATIONS):
            # grid_sample's bilinear read with border padding (align_corners=False: pixel x sits at x - 0.5).
            ix = tl.minimum(tl.maximum(x[:, None] + dx[None, :] - 0.5, 0.0), width - 1.0)
            iy = tl.minimum(tl.maximum(y[:, None] + dy[None, :] - 0.5, 0.0), height - 1.0)
            x0, y0 = tl.floor(ix), tl.floor(iy)
            fx, fy = ix - x0, iy - y0
            left, top = x0.to(tl.int32), y0.to(tl.int32)
            right, bottom = tl.minimum(left + 1, width - 1), tl.minimum(top + 1, height - 1)
            value = ((1 - fy) * ((1 - fx) * tl.load(image + top * width + left, mask=both, other=0.0)
                                 + fx * tl.load(image + top * width + right, mask=both, other=0.0))
                     + fy * ((1 - fx) * tl.load(image + bottom * width + left, mask=both, other=0.0)
                             + fx * tl.load(image + bottom * width + right, mask=both, other=0.0)))
            weighted = weight * value
            mean = tl.sum(weighted, axis=1)
            contrast = tl.maximum(tl.sqrt(tl.maximum(tl.sum(weighted * value, axis=1) - mean * mean, 0.0)), 1e-6)
            scale = template_contrast / contrast
            bx = scale * tl.sum(weight_gx * value, axis=1) - gx_template
            by = scale * tl.sum(weight_gy * value, axis=1) - gy_template
            x -= tl.minimum(tl.maximum((hyy * bx - hxy * by) / determinant, -RADIUS), RADIUS)
            y -= tl.minimum(tl.maximum((hxx * by - hxy * bx) / determinant, -RADIUS), RADIUS)
        tl.store(centre + pair * 2, x, mask=pair_ok)
        tl.store(centre + pair * 2 + 1, y, mask=pair_ok)

    return lucas_kanade_kernel


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


def lucas_kanade_level(targets: torch.Tensor, centre: torch.Tensor, template_weights: torch.Tensor,
                       template_terms: torch.Tensor, iterations: int, radius: int,
                       block_p: int = 32) -> torch.Tensor:
    """refine.lucas_kanade_steps in one kernel: every update of every (group, point) pair of one pyramid level,
    each pair's patch read, summed and stepped on chip. Same arguments and result (float32 tensors; targets
    [G, 1, h, w], centre [G, N, 2], template_weights [Gt, N, 3, K], template_terms [Gt, N, 7], Gt 1 or G)."""
    groups, count = centre.shape[:2]
    pixels = (2 * radius + 1) ** 2
    if template_weights.shape[-1] != pixels or template_weights.shape[0] not in (1, groups):
        raise ValueError(f"Template weights {list(template_weights.shape)} do not fit {groups} groups of {count} "
                         f"points with patches of radius {radius}.")
    out = centre.float().contiguous().clone()
    _lucas_kanade_kernel()[((groups * count + block_p - 1) // block_p,)](
        targets.float().contiguous(), out, template_weights.float().contiguous(), template_terms.float().contiguous(),
        groups * count, count, targets.shape[-2], targets.shape[-1], template_weights.shape[0],
        ITERATIONS=iterations, RADIUS=radius, BLOCK_P=block_p, BLOCK_K=1 << (pixels - 1).bit_length())
    return out
