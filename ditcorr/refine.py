"""Pixel-level refinement of coarse tracks: pyramidal Lucas–Kanade on the frames, checked, with time.

The DiT's read-out places a point to within about a token (16 px on Wan). The
pixel step aligns a small patch around the query point, taken from its query
frame, with every other frame (inverse-compositional Lucas–Kanade, translation
only, coarse to fine over an image pyramid), starting from the coarse position.
Its result is kept only where the image says it can be trusted: the template
is textured, the aligned patch matches it, and it stays within `max_shift`
tokens of the coarse position. Time combines it with the frame-to-frame
(chained) alignment (through_time): the point moves by the chain's steps while
they hold and at its last step's velocity where they break; direct matches place
a chained run where they agree with that continuation, or where the DiT's
position sides with them, and a point coming back from an occlusion is
re-acquired by them. A point whose query patch has no texture keeps the DiT's
track.
Every frame pair and point of a chunk of frames is aligned in one batch, and
the combination through time is vectorised: no loop over frames or points.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .fused import available, lucas_kanade_level, template_level
from .streaming import FrameCopier, to_device


@dataclass
class PixelSettings:
    radius: int = 5  # patch half-width in pixels at every pyramid level: (2r+1)^2 pixels
    iterations: int = 6  # Lucas–Kanade updates per pyramid level (3: the same scores on the benchmarks, see README)
    min_texture: float = 1e-5  # smallest structure-tensor eigenvalue per pixel (grey in [0, 1]) a template needs
    similarity: float = 0.1  # grey levels: a patch pixel's weight falls as a Gaussian of its difference from the centre's
    max_residual: float = 0.25  # RMS mismatch of the aligned patch over the template's contrast above which it is refused
    max_shift: float = 1.0  # tokens the pixel step may move a point from the DiT's position
    agree: float = 4.0  # pixels within which a run's direct matches confirm the track's continuation
    median_radius: int = 4  # the coarse track's running median over 2r+1 frames (within visible runs); 0 = off
    element_budget: int = 2**24  # patch pixels (frames x points x pixels) aligned in one batch: bounds the memory
    fused_kernel: bool = True  # on CUDA, each pyramid level's template and updates in Triton kernels (ditcorr.fused)
    frames_per_chunk: int = 48  # frames held on the device at once (two chunks with the prefetch): flat in video length


@dataclass
class Alignment:
    """Where patches landed: position [G, N, 2] (x, y) pixels; residual [G, N] (RMS mismatch over the template's
    contrast); textured [G, N] (the template's smallest structure-tensor eigenvalue is high enough)."""

    position: torch.Tensor
    residual: torch.Tensor
    textured: torch.Tensor


def grey_pyramid(grey: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """grey levels [T, H, W] of frames (the mean of their channels, in [0, 1]) -> `levels` images
    [T, 1, H / 2^l, W / 2^l] (Gaussian pyramid).

    Each level is the one above blurred by the 5-tap binomial kernel (reflected at the border) and halved, as
    kornia's pyrdown does; written here because ComfyUI lists kornia among its optional requirements.
    """
    pyramid = [grey.float()[:, None]]
    for _ in range(levels - 1):
        above = pyramid[-1]
        # (1, 4, 6, 4, 1) / 16 in each direction is four 2-tap means in a row (no kernel tensor to copy over).
        blurred = F.pad(above, (2, 2, 2, 2), mode="reflect")
        for _ in range(4):
            blurred = F.avg_pool2d(blurred, 2, stride=1)
        pyramid.append(F.interpolate(blurred, size=(max(1, above.shape[-2] // 2), max(1, above.shape[-1] // 2)),
                                     mode="bilinear", align_corners=False, antialias=False))
    return pyramid


def levels_for(reach: float, radius: int) -> int:
    """Pyramid levels whose coarsest patch half-width covers `reach` pixels."""
    return 1 + max(0, math.ceil(math.log2(max(reach, 1.0) / radius)))


def _offsets(radius: int, device) -> torch.Tensor:
    """[(2r+1)^2, 2] (dx, dy) pixel offsets of a patch, row-major."""
    steps = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    dy, dx = torch.meshgrid(steps, steps, indexing="ij")
    return torch.stack([dx.flatten(), dy.flatten()], dim=1)


def _pixels_to_unit(width: int, height: int, device: torch.device) -> torch.Tensor:
    """[2] the factors that take (x, y) pixels of a width x height image to grid_sample's [-1, 1] span (less 1).
    Filled on the device: a tensor copied from the host would stall the GPU queue."""
    return torch.stack([torch.full((), 2.0 / width, device=device), torch.full((), 2.0 / height, device=device)])


def _sample(images: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
    """Bilinear values of images [G, 1, h, w] at points unit [G, ..., 2] in [-1, 1] frame coordinates (grid_sample's
    (x, y), -1 and 1 the outer edges), group g read from image g. Returns [G, ...]. Outside, the border value."""
    values = F.grid_sample(images, unit.flatten(1, -2)[:, :, None], mode="bilinear", padding_mode="border",
                           align_corners=False)
    return values.view(unit.shape[:-1])


def align(template_pyramid: list[torch.Tensor], template_frames: torch.Tensor, template_at: torch.Tensor,
          target_pyramid: list[torch.Tensor], target_frames: torch.Tensor, start: torch.Tensor,
          settings: PixelSettings = PixelSettings()) -> Alignment:
    """Align patches of one frame with another: inverse-compositional Lucas–Kanade, translation only, coarse to fine.

    template_pyramid, target_pyramid: grey_pyramid of frames (may be the same). template_frames [Gt] and
    target_frames [G]: long indices into them (Gt is G, or 1 for one template frame shared by every group);
    template_at [Gt, N, 2] and start [G, N, 2]: (x, y) pixels of each patch's centre in its template frame and of
    the first guess in its target frame. The patch is weighted by a Gaussian of half its width, so its centre
    counts most, and by how close each pixel's grey level is to the centre's (`similarity`; a bilateral support
    weight): a point on the background next to a moving sprite's outline follows the background, not the
    outline's strong edge. Patches are compared after removing their (weighted) mean and contrast: the mismatch is
    e = (t - mean(t)) c_T / c_t - T for a target patch t, the centred template T and their contrasts c. Returns
    where each patch's centre lands in its target frame, with the residual and texture of the finest level.

    The mismatch is never formed: with weights w (sum 1) and the template and its gradients gx, gy centred,
    sum(w gx e) = (c_T / c_t) sum(w gx t) - sum(w gx T), c_t^2 = sum(w t^2) - sum(w t)^2 and
    sum(w e^2) = 2 c_T^2 - 2 (c_T / c_t) sum(w T t), so each update reads the target patch into four weighted sums
    (tests/core/test_refine.py writes the mismatch out and compares).
    """
    device = start.device
    groups, count = start.shape[:2]
    here = start.float()
    fused = settings.fused_kernel and available(device)
    prepare, steps = (template_level, lucas_kanade_level) if fused else (template_terms, lucas_kanade_steps)
    for level in reversed(range(len(target_pyramid))):
        targets = target_pyramid[level][target_frames]  # selected once per level, read every iteration
        weights, terms = prepare(template_pyramid[level][template_frames], template_at * 0.5 ** level,
                                 settings.radius, settings.similarity)
        here = steps(targets, here * 0.5 ** level, weights, terms, settings.iterations, settings.radius) * 2 ** level
    # The loop ends on level 0, the frames themselves: its residual and texture decide trust.
    template_contrast, _, _, hxx, hxy, hyy, _ = terms.unbind(-1)
    target, contrast = _read(targets, here, weights[:, :, 0], settings.radius)
    correlation = (weights[:, :, 3] * target).sum(-1) / (contrast * template_contrast)
    residual = (2 - 2 * correlation).clamp(min=0).sqrt()  # sqrt(sum(w e^2)) / c_T
    smallest = (hxx + hyy) / 2 - (((hxx - hyy) / 2) ** 2 + hxy ** 2).sqrt()
    return Alignment(here, residual, (smallest >= settings.min_texture).expand(groups, count))


def template_terms(images: torch.Tensor, at: torch.Tensor, radius: int,
                   similarity: float) -> tuple[torch.Tensor, torch.Tensor]:
    """What align's updates need of the template patches on one pyramid level, in torch ops (the path off CUDA,
    and the reference of ditcorr.fused.template_level, which does the same in one kernel).

    images [Gt, 1, h, w]: the template frames; at [Gt, N, 2]: (x, y) pixels of this level. Returns weights
    [Gt, N, 4, K]: per patch pixel the weight w (sum 1 over the patch), w gx, w gy and w T, with T the centred
    template and gx, gy its centred central differences; and terms [Gt, N, 7]: the template's contrast c_T,
    sum(w gx T), sum(w gy T), hxx, hxy, hyy and the determinant hxx hyy - hxy^2."""
    device = at.device
    offsets = _offsets(radius, device)  # [K, 2]
    wide = _offsets(radius + 1, device)  # one pixel wider, for the central differences
    side = 2 * radius + 3
    spatial = torch.exp(-(offsets ** 2).sum(-1) / (2 * (radius / 2 + 0.5) ** 2))  # [K]
    unit = _pixels_to_unit(images.shape[-1], images.shape[-2], device)
    patch = _sample(images, (at[:, :, None] + wide) * unit - 1).view(*at.shape[:2], side, side)
    values = patch[:, :, 1:-1, 1:-1].flatten(2)  # [Gt, N, K]
    centre = values[..., offsets.shape[0] // 2, None]
    weight = spatial * torch.exp(-(values - centre) ** 2 / (2 * similarity ** 2))
    weight = weight / weight.sum(-1, keepdim=True)
    centred = lambda values: values - (values * weight).sum(-1, keepdim=True)  # noqa: E731
    template = centred(values)
    gx = centred(((patch[:, :, 1:-1, 2:] - patch[:, :, 1:-1, :-2]) / 2).flatten(2))
    gy = centred(((patch[:, :, 2:, 1:-1] - patch[:, :, :-2, 1:-1]) / 2).flatten(2))
    weighted_gx, weighted_gy = weight * gx, weight * gy
    hxx, hxy, hyy = (weighted_gx * gx).sum(-1), (weighted_gx * gy).sum(-1), (weighted_gy * gy).sum(-1)
    terms = torch.stack([(template ** 2 * weight).sum(-1).sqrt().clamp(min=1e-6), (weighted_gx * template).sum(-1),
                         (weighted_gy * template).sum(-1), hxx, hxy, hyy, (hxx * hyy - hxy ** 2).clamp(min=1e-12)],
                        dim=-1)
    return torch.stack([weight, weighted_gx, weighted_gy, weight * template], dim=-2), terms


def _read(targets: torch.Tensor, centre: torch.Tensor, weight: torch.Tensor,
          radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The target patches [G, N, K] around centre [G, N, 2] (pixels of targets [G, 1, h, w]) and their contrast
    [G, N] under weight [Gt, N, K]."""
    to_unit = _pixels_to_unit(targets.shape[-1], targets.shape[-2], centre.device)
    target = _sample(targets, (centre * to_unit - 1)[:, :, None] + _offsets(radius, centre.device) * to_unit)
    weighted = weight * target
    contrast = ((weighted * target).sum(-1) - weighted.sum(-1) ** 2).clamp(min=0).sqrt().clamp(min=1e-6)
    return target, contrast


def lucas_kanade_steps(targets: torch.Tensor, centre: torch.Tensor, weights: torch.Tensor,
                       terms: torch.Tensor, iterations: int, radius: int) -> torch.Tensor:
    """`iterations` updates of align's Lucas–Kanade on one pyramid level, in torch ops (the path off CUDA, and
    the reference of ditcorr.fused.lucas_kanade_level, which does the same in one kernel).

    targets [G, 1, h, w]; centre [G, N, 2] (x, y) pixels of this level; weights [Gt, N, 4, K] and terms
    [Gt, N, 7]: template_terms' (Gt is G, or 1 for a template shared by every group). Returns the centres after the
    updates, [G, N, 2]."""
    weight, weighted_gx, weighted_gy, _ = weights.unbind(-2)
    template_contrast, gx_template, gy_template, hxx, hxy, hyy, determinant = terms.unbind(-1)
    for _ in range(iterations):
        target, contrast = _read(targets, centre, weight, radius)
        scale = template_contrast / contrast
        bx = scale * (weighted_gx * target).sum(-1) - gx_template
        by = scale * (weighted_gy * target).sum(-1) - gy_template
        step = torch.stack([(hyy * bx - hxy * by) / determinant, (hxx * by - hxy * bx) / determinant], dim=-1)
        centre = centre - step.clamp(-radius, radius)
    return centre


def refine_tracks(frames: torch.Tensor, queries: torch.Tensor, path: torch.Tensor, visible: torch.Tensor,
                  token_size: tuple[float, float], settings: PixelSettings = PixelSettings(),
                  copier: FrameCopier | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-precise tracks from coarse ones.

    frames: [T, H, W, C] in [0, 1], anywhere (copied to path's device a few frames at a time); queries: [N, 3]
    (x, y, frame) pixels; path: [T, N, 2] coarse (x, y) pixels on every frame, through each query point on its own
    frame; visible: [T, N] bool, the coarse visibility; token_size: (x, y) pixels per token. Returns (path [T, N, 2],
    visible [T, N]) on path's device: a point whose patch is found again is visible there even where the coarse
    read-out lost it. copier: the frames' copier, when prefetch_frames started one before the coarse tracking.
    """
    device = path.device
    reach = settings.max_shift * max(token_size)
    levels = levels_for(reach, settings.radius)
    query_frames = queries[:, 2].round().long().cpu()
    # No host synchronisation until the end: the DiT read-out queued before may still be running on the GPU, and
    # the first frames copy (on a side stream) while it does.
    with copier or FrameCopier(frames, device, grey=True) as copier:
        return _refine(copier, queries, query_frames, path, visible, reach, levels, settings)


def prefetch_frames(frames: torch.Tensor, queries: torch.Tensor, device: torch.device,
                    settings: PixelSettings = PixelSettings()) -> FrameCopier:
    """A FrameCopier already copying what refine_tracks reads first for each query frame (and the first query frame's
    second chunk of frames): call it before the coarse tracking, so that the copies overlap it."""
    copier = FrameCopier(frames, device, grey=True)
    query_frames = queries[:, 2].round().long().cpu()
    for query_frame in query_frames.unique().tolist():
        copier.prefetch(query_frame, query_frame + 1)
    first = int(query_frames.min())
    # The first two chunks (what the refinement holds at once anyway): both copy while the DiT read-out runs.
    for _, reads in frame_spans(frames.shape[0], int((query_frames == first).sum()), settings)[:2]:
        copier.prefetch(*reads)
    return copier


def _refine(copier: FrameCopier, queries: torch.Tensor, query_frames: torch.Tensor, path: torch.Tensor,
            visible: torch.Tensor, reach: float, levels: int, settings: PixelSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """refine_tracks' work, with its frames from `copier`."""
    device, count = path.device, path.shape[0]
    refined, seen = path.clone(), visible.clone()
    times = torch.arange(count, device=device)
    for query_frame in query_frames.unique().tolist():
        rows = to_device((query_frames == query_frame).nonzero()[:, 0], device)
        coarse_visible = visible[:, rows]
        coarse = temporal_median(path[:, rows], coarse_visible, settings.median_radius)
        start = to_device(queries[query_frames == query_frame, :2], device).float()
        points = len(start)
        template_pyramid = grey_pyramid(copier.take(query_frame, query_frame + 1), levels)
        one = torch.zeros(1, dtype=torch.long, device=device)
        # The chain's step into frame t starts from its neighbour towards the query frame.
        neighbour = (times - torch.sign(times - query_frame)).clamp(0, count - 1)
        direct_at = torch.empty_like(coarse)
        direct_ok = torch.zeros_like(coarse_visible)
        chain_step = torch.zeros_like(coarse)
        chain_ok = torch.zeros_like(coarse_visible)
        # Frames in chunks, each with one frame on either side (the chain's neighbours): a contiguous slice of the
        # video, copied to the device while the chunk before computes.
        spans = frame_spans(count, points, settings)
        copier.prefetch(*spans[0][1])
        for index, ((first, end), (low, high)) in enumerate(spans):
            pyramid = grey_pyramid(copier.take(low, high), levels)
            if index + 1 < len(spans):
                copier.prefetch(*spans[index + 1][1])
            held = times[low:high]
            # (A second first guess, the point standing still, was measured: no gain in δ or jitter for a third
            # more work.)
            direct, trusted, textured = checked_align(template_pyramid, one, start[None], pyramid, held - low,
                                                      coarse[held], reach, settings)
            stage = torch.where(trusted[..., None], direct, coarse[held])
            chunk = times[first:end]
            mine, before = chunk - low, neighbour[chunk] - low
            # The chain's first guess: the direct match where trusted, else the previous frame's position moved as
            # the (median-filtered) coarse track moves.
            guess = torch.where(trusted[mine][..., None], stage[mine], stage[before] + coarse[chunk] - coarse[neighbour[chunk]])
            chain, chain_trusted, _ = checked_align(pyramid, before, stage[before], pyramid, mine, guess, reach,
                                                    settings)
            direct_at[chunk], direct_ok[chunk] = direct[mine], trusted[mine]
            chain_step[chunk], chain_ok[chunk] = chain - stage[before], chain_trusted
        # The chain is not gated by the DiT's visibility: its occlusion calls on frames where the patch aligns
        # well cost still points their steps (slow clips: static-point jitter 0.33 -> 0.11 px on seed 2000).
        direct_ok[query_frame], direct_at[query_frame] = True, start
        out = direct_at.clone()  # holds the query point on its frame, all a one-frame direction has
        # Each direction away from the query frame is one sequence starting there.
        for order in (times[query_frame:], times[:query_frame + 1].flip(0)):
            if len(order) > 1:
                out[order] = through_time(direct_at[order], direct_ok[order], chain_step[order], chain_ok[order],
                                          coarse[order], settings.agree)
        # A query patch without texture gives no pixel evidence anywhere: the DiT's positions stand.
        refined[:, rows] = torch.where(textured[0, :, None], out, coarse)
        seen[:, rows] = coarse_visible | direct_ok
    return refined, seen


def frame_spans(count: int, points: int, settings: PixelSettings) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """How refine_tracks walks a video of `count` frames with `points` points of one query frame: per chunk, the
    frames it refines [first, end) and the slice of frames it reads [low, high) (one more on either side)."""
    span = max(1, min(settings.frames_per_chunk, settings.element_budget // (points * (2 * settings.radius + 3) ** 2)))
    return [((first, min(count, first + span)), (max(0, first - 1), min(count, first + span + 1)))
            for first in range(0, count, span)]


def through_time(direct: torch.Tensor, direct_ok: torch.Tensor, step: torch.Tensor, step_ok: torch.Tensor,
                 coarse: torch.Tensor, agree: float) -> torch.Tensor:
    """Positions [L, N, 2] along frames leaving the query frame (index 0, where direct holds the query point).

    direct, step, coarse: [L, N, 2] the direct alignment, the chained step from the previous frame, the coarse
    position; direct_ok, step_ok: [L, N] whether they are trusted. The chain comes first: frames linked by trusted
    steps form a run, in which the point moves exactly by the steps (frame-to-frame alignment has no token-sized
    errors, and does not creep where a direct match slides along an edge). Where a step breaks, the point goes on
    at the velocity of the last trusted step (a still point stays still). A run with trusted direct matches is
    placed by their median (one wrong match moves nothing) when that placement is within `agree` pixels of the
    continuation, or the break before it is longer than one frame (an occlusion: re-acquisition), or the DiT's
    position (the run's median coarse position) is nearer to it than to the continuation; otherwise the run
    continues. A jump where a run is placed is spread evenly over the continued frames before it, back to the
    last frame placed by direct matches, so a track re-acquired after a gap does not lurch.

    Measured on the synthetic clips (seeds 1000, 2000; 50 each) against placing every run with direct matches by
    them and filling the frames between from placed ones (the DiT's positions where none was placed): static-point
    jitter on slow clips 2.18 -> 0.37 and 0.45 -> 0.11 px with δavg up 0.3-0.6; fast clips δavg +0.2 and -0.1.
    A sequential loop over frames (tests/core/test_refine.py) is the reference this vectorised form equals.
    """
    length = direct.shape[0]
    index = torch.arange(length, device=direct.device)[:, None].expand_as(direct_ok)
    gather = lambda values, at: values.gather(0, at[..., None].expand(-1, -1, values.shape[-1]))  # noqa: E731
    linked = step_ok & (index > 0)
    breaks = ~linked
    run_start = torch.where(breaks, index, 0).cummax(dim=0).values
    starts = torch.where(breaks, index, length)
    # The next run's first frame after each frame, less one.
    run_end = torch.cat([starts[1:], torch.full_like(starts[:1], length)]).flip(0).cummin(dim=0).values.flip(0) - 1
    travelled = torch.cumsum(torch.where(linked[..., None], step, 0.0), dim=0)
    moved = travelled - gather(travelled, run_start)  # from the run's first frame
    placed, votes = segment_median(direct - moved, direct_ok, run_start, run_end)
    placed = torch.where((run_start == 0)[..., None], direct[:1], placed)  # the query frame's run starts at the query
    beside, _ = segment_median(coarse - moved, torch.ones_like(direct_ok), run_start, run_end)
    # Each frame's move: its step where linked, else the last linked step before it (0 before any).
    increment = gather(torch.where(linked[..., None], step, 0.0), torch.where(linked, index, 0).cummax(dim=0).values)
    reached = torch.cumsum(increment, dim=0)

    def positions(anchored: torch.Tensor) -> torch.Tensor:
        """Anchored runs (whole runs; the query frame's among them) where their direct matches place them; every
        other frame moved on from the last anchored frame before it."""
        last = torch.where(anchored, index, 0).cummax(dim=0).values
        return torch.where(anchored[..., None], placed + moved,
                           gather(placed + moved, last) + reached - gather(reached, last))

    # Continuation into each frame with every run that has direct matches placed by them; then each run's decision.
    provisional = positions((votes > 0) | (run_start == 0))
    continued = torch.cat([direct[:1], provisional[:-1]]) + increment
    at_start = gather(continued, run_start)
    # A break longer than one frame: the frame before the run's first is itself unlinked (the query frame is not).
    unlinked_before = torch.cat([torch.zeros_like(linked[:1]), breaks[:-1] & (index[:-1] > 0)])
    long_break = unlinked_before.gather(0, run_start) & (run_start > 0)
    near = lambda a, b: (a - b).norm(dim=-1)  # noqa: E731
    anchored = (run_start == 0) | ((votes > 0) & ((near(placed, at_start) <= agree) | long_break
                                                  | (near(placed, beside) <= near(at_start, beside))))
    position = positions(anchored)
    # The jump at each anchored run's first frame, spread over the continued frames before it.
    jump = torch.where((anchored & breaks & (index > 0))[..., None],
                       position - torch.cat([direct[:1], position[:-1]]) - increment, 0.0)
    before = torch.where(anchored, index, 0).cummax(dim=0).values
    after = torch.where(anchored, index, length).flip(0).cummin(dim=0).values.flip(0)
    spread = ~anchored & (after < length)
    after = after.clamp(max=length - 1)
    weight = ((index - before) / (after - before).clamp(min=1)).float()[..., None]
    return torch.where(spread[..., None], position + gather(jump, after) * weight, position)


def _segment_count(valid: torch.Tensor, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """[L, N] how many frames of each frame's segment [start, end] (inclusive indices along dim 0) are valid."""
    counted = torch.cat([torch.zeros_like(valid[:1], dtype=torch.long), valid.long().cumsum(0)])
    return counted.gather(0, end + 1) - counted.gather(0, start)


def segment_median(values: torch.Tensor, valid: torch.Tensor, start: torch.Tensor,
                   end: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per coordinate, the median of values [L, N, C] over the valid [L, N] frames of each frame's segment (frames
    start .. end, [L, N] inclusive indices along dim 0, segments contiguous and in order); the mean of the two
    middle values for an even count. Returns (median [L, N, C], count [L, N] of valid frames in the segment); the
    median is meaningless where the count is 0. One sort of the whole tensor: each frame's key is its segment,
    then its value, invalid frames last; the key's scale stays a tensor, so nothing waits for the device."""
    if values.numel() == 0:
        return values.clone(), torch.zeros_like(valid, dtype=torch.long)
    span = values.detach().abs().amax().double() * 2 + 1
    offset = start[..., None].double() * (4 * span)
    ordered = (torch.where(valid[..., None], values.double(), span) + offset).sort(dim=0).values - offset
    count = _segment_count(valid, start, end)
    low, high = start + (count - 1).clamp(min=0) // 2, start + count // 2
    pick = lambda at: ordered.gather(0, at[..., None].expand(-1, -1, values.shape[-1]))  # noqa: E731
    return ((pick(low) + pick(high)) / 2).to(values.dtype), count


def temporal_median(path: torch.Tensor, visible: torch.Tensor, radius: int) -> torch.Tensor:
    """path [T, N, 2] with each coordinate replaced by its median over frames t - radius .. t + radius that lie in
    the same run of visible frames (visible [T, N]); frames where the point is hidden are left as they are, and
    no window reaches across them. radius 0 returns path."""
    if radius < 1:
        return path
    count = path.shape[0]
    index = torch.arange(count, device=path.device)[:, None].expand_as(visible)
    run_start = torch.where(~visible, index + 1, 0).cummax(dim=0).values
    run_end = torch.where(~visible, index - 1, count - 1).flip(0).cummin(dim=0).values.flip(0)
    # A window shrinks symmetrically near a run's ends, so a track is not pulled towards one side.
    half = torch.minimum(torch.minimum(index - run_start, run_end - index), torch.full_like(index, radius)).clamp(min=0)
    offsets = torch.arange(-radius, radius + 1, device=path.device)
    at = (index[None] + offsets[:, None, None]).clamp(0, count - 1)  # [W, T, N]
    window = path[at, torch.arange(path.shape[1], device=path.device)[None, None].expand_as(at)]  # [W, T, N, 2]
    inside = offsets[:, None, None].abs() <= half[None]
    # Frames outside the window are replaced by copies of the frame itself; +/- inf pairs keep the median central.
    spread = torch.where(inside[..., None], window, path[None].expand_as(window))
    spread = torch.where((~inside & (offsets[:, None, None] < 0))[..., None], -torch.inf, spread)
    spread = torch.where((~inside & (offsets[:, None, None] > 0))[..., None], torch.inf, spread)
    median = spread.median(dim=0).values
    return torch.where(visible[..., None], median, path)


def checked_align(template_pyramid: list[torch.Tensor], template_frames: torch.Tensor, template_at: torch.Tensor,
                  target_pyramid: list[torch.Tensor], target_frames: torch.Tensor, start: torch.Tensor, reach: float,
                  settings: PixelSettings = PixelSettings()) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """align, then the checks that make its result trustworthy: (position [G, N, 2], trusted [G, N] bool, textured
    [G, N] bool: the template had texture to align by).

    Trusted: the template is textured, the aligned patch matches it (residual), and the position is inside the
    frame and within `reach` pixels of `start`. (A forward-backward check, aligning the found patch back, was
    measured: it cost a second alignment and lowered δavg on the synthetic clips.)
    """
    there = align(template_pyramid, template_frames, template_at, target_pyramid, target_frames, start, settings)
    height, width = target_pyramid[0].shape[-2:]
    x, y = there.position[..., 0], there.position[..., 1]
    inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
    near = (there.position - start).norm(dim=-1) <= reach
    return there.position, there.textured & (there.residual <= settings.max_residual) & inside & near, there.textured
