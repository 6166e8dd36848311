"""The pixel step's Triton kernels (ditcorr.fused.template_level and lucas_kanade_level are their entry points).

Imported only where Triton is installed, on first use.
"""
import triton
import triton.language as tl


@triton.jit
def bilinear(image, x, y, height, width, mask):
    """grid_sample's bilinear read at (x, y) pixels (align_corners=False: pixel x sits at x - 0.5), border
    padding."""
    ix = tl.minimum(tl.maximum(x - 0.5, 0.0), width - 1.0)
    iy = tl.minimum(tl.maximum(y - 0.5, 0.0), height - 1.0)
    x0, y0 = tl.floor(ix), tl.floor(iy)
    fx, fy = ix - x0, iy - y0
    left, top = x0.to(tl.int32), y0.to(tl.int32)
    right, bottom = tl.minimum(left + 1, width - 1), tl.minimum(top + 1, height - 1)
    return ((1 - fy) * ((1 - fx) * tl.load(image + top * width + left, mask=mask, other=0.0)
                        + fx * tl.load(image + top * width + right, mask=mask, other=0.0))
            + fy * ((1 - fx) * tl.load(image + bottom * width + left, mask=mask, other=0.0)
                    + fx * tl.load(image + bottom * width + right, mask=mask, other=0.0)))


@triton.jit
def template_kernel(images, at, weights, terms, pairs, count, height, width, similarity,
                    RADIUS: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr):
    """One program per BLOCK_P (group, point) pairs, each patch's pixels along the second axis: the patch,
    its central differences, weights and sums, written as template_level's [pairs, 4, K] and [pairs, 7]."""
    pair = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    pair_ok = pair < pairs
    group = pair // count
    side: tl.constexpr = 2 * RADIUS + 1
    pixel = tl.arange(0, BLOCK_K)
    pixel_ok = pixel < side * side
    dx, dy = (pixel % side - RADIUS).to(tl.float32), (pixel // side - RADIUS).to(tl.float32)
    both = pair_ok[:, None] & pixel_ok[None, :]
    image = images + group[:, None] * (height * width)
    x = tl.load(at + pair * 2, mask=pair_ok, other=0.0)[:, None] + dx[None, :]
    y = tl.load(at + pair * 2 + 1, mask=pair_ok, other=0.0)[:, None] + dy[None, :]
    value = bilinear(image, x, y, height, width, both)
    gx = (bilinear(image, x + 1, y, height, width, both) - bilinear(image, x - 1, y, height, width, both)) / 2
    gy = (bilinear(image, x, y + 1, height, width, both) - bilinear(image, x, y - 1, height, width, both)) / 2
    centre = tl.sum(tl.where(pixel[None, :] == side * side // 2, value, 0.0), axis=1)
    spread = RADIUS / 2 + 0.5
    spatial = tl.exp(-(dx * dx + dy * dy) / (2 * spread * spread))
    difference = value - centre[:, None]
    weight = tl.where(both, spatial[None, :] * tl.exp(-difference * difference / (2 * similarity * similarity)),
                      0.0)
    weight = weight / tl.sum(weight, axis=1)[:, None]
    template = value - tl.sum(weight * value, axis=1)[:, None]
    gx = gx - tl.sum(weight * gx, axis=1)[:, None]
    gy = gy - tl.sum(weight * gy, axis=1)[:, None]
    weighted_gx, weighted_gy = weight * gx, weight * gy
    hxx, hxy, hyy = tl.sum(weighted_gx * gx, axis=1), tl.sum(weighted_gx * gy, axis=1), tl.sum(weighted_gy * gy, axis=1)
    row = pair[:, None] * (4 * side * side) + pixel[None, :]
    tl.store(weights + row, weight, mask=both)
    tl.store(weights + row + side * side, weighted_gx, mask=both)
    tl.store(weights + row + 2 * side * side, weighted_gy, mask=both)
    tl.store(weights + row + 3 * side * side, weight * template, mask=both)
    tl.store(terms + pair * 7, tl.maximum(tl.sqrt(tl.sum(weight * template * template, axis=1)), 1e-6),
             mask=pair_ok)
    tl.store(terms + pair * 7 + 1, tl.sum(weighted_gx * template, axis=1), mask=pair_ok)
    tl.store(terms + pair * 7 + 2, tl.sum(weighted_gy * template, axis=1), mask=pair_ok)
    tl.store(terms + pair * 7 + 3, hxx, mask=pair_ok)
    tl.store(terms + pair * 7 + 4, hxy, mask=pair_ok)
    tl.store(terms + pair * 7 + 5, hyy, mask=pair_ok)
    tl.store(terms + pair * 7 + 6, tl.maximum(hxx * hyy - hxy * hxy, 1e-12), mask=pair_ok)


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
    row = template[:, None] * (4 * side * side) + pixel[None, :]
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
        value = bilinear(image, x[:, None] + dx[None, :], y[:, None] + dy[None, :], height, width, both)
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
