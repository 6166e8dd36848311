"""The pixel step: Lucas–Kanade against an exhaustive search of its own objective, the oracle scene, time and safety."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from difftrack_pack.ditcorr.refine import (PixelSettings, align, grey_pyramid, levels_for, refine_tracks, segment_median,
                                           temporal_median, through_time)
from difftrack_pack.ditcorr.synthetic import smooth_texture
from difftrack_pack.ditcorr.track import TrackSettings, track_points

sys.path.insert(0, str(Path(__file__).parent))
import test_track_oracle as oracle  # noqa: E402  (the oracle scene and its unambiguous points)


def shifted_frames(shifts: torch.Tensor, size: int = 96, seed: int = 0, gain: torch.Tensor | None = None) -> torch.Tensor:
    """A smooth random texture translated by shifts [T, 2] (x, y) pixels: frames [T, size, size, 3] (content at x in
    frame 0 is at x + shift in frame t), optionally with its contrast scaled by gain [T] around mid-grey."""
    texture = smooth_texture(torch.Generator().manual_seed(seed), 2 * size, 12)
    steps = (torch.arange(size) + 0.5)
    ys, xs = torch.meshgrid(steps, steps, indexing="ij")
    frames = []
    for t, (dx, dy) in enumerate(shifts.tolist()):
        where = torch.stack([(xs - dx + size / 2) / size - 1, (ys - dy + size / 2) / size - 1], -1)
        frame = torch.nn.functional.grid_sample(texture[None], where[None], align_corners=False)[0].permute(1, 2, 0)
        if gain is not None:
            frame = 0.5 + (frame - 0.5) * gain[t]
        frames.append(frame)
    return torch.stack(frames)


def objective(pyramid, template_at, target, candidates, radius, similarity=PixelSettings().similarity):
    """The alignment's own cost, evaluated directly: weighted SSD of the level-0 patch at each candidate position
    [N, M, 2] of frame `target` against the patch at template_at [N, 2] of frame 0, both with their weighted mean
    removed and the candidate scaled to the template's contrast; each template pixel weighted by a Gaussian of its
    distance and of its grey level's difference from the centre's. Returns [N, M]."""
    steps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    dy, dx = torch.meshgrid(steps, steps, indexing="ij")
    offsets = torch.stack([dx.flatten(), dy.flatten()], 1)
    weight = torch.exp(-(offsets ** 2).sum(-1) / (2 * (radius / 2 + 0.5) ** 2))
    image = pyramid[0]
    h, w = image.shape[-2:]

    def patch(frame, centres):  # centres [N, M, 2] -> [N, M, K]
        where = (centres[..., None, :] + offsets) * torch.tensor([2 / w, 2 / h]) - 1
        return torch.nn.functional.grid_sample(image[frame:frame + 1], where.reshape(1, 1, -1, 2), padding_mode="border",
                                               align_corners=False).reshape(*centres.shape[:-1], -1)

    values = patch(0, template_at[:, None])  # [N, 1, K]
    weight = weight * torch.exp(-(values - values[..., len(offsets) // 2, None]) ** 2 / (2 * similarity ** 2))
    weight = weight / weight.sum(-1, keepdim=True)
    centred = lambda values: values - (values * weight).sum(-1, keepdim=True)  # noqa: E731
    contrast = lambda values: (values ** 2 * weight).sum(-1, keepdim=True).sqrt()  # noqa: E731
    target, template = centred(patch(target, candidates)), centred(values)
    difference = target * contrast(template) / contrast(target) - template
    return (difference ** 2 * weight).sum(-1)


def test_alignment_reaches_the_minimum_of_its_objective_found_by_exhaustive_search():
    generator = torch.Generator().manual_seed(3)
    shift = torch.tensor([[0.0, 0.0], [2.37, -1.61]])
    frames = shifted_frames(shift)
    pyramid = grey_pyramid(frames.mean(dim=-1), 3)
    points = 30 + torch.rand(12, 2, generator=generator) * 36
    start = points + shift[1] + (torch.rand(12, 2, generator=generator) - 0.5) * 8  # up to half a 16-px token off
    found = align(pyramid, torch.tensor([0]), points[None], pyramid, torch.tensor([1]), start[None]).position[0]
    # Exhaustive: every position on a 0.02-px grid within 2 px of the truth.
    steps = torch.arange(-2, 2.0001, 0.02)
    grid = torch.stack(torch.meshgrid(steps, steps, indexing="xy"), -1).reshape(-1, 2)
    candidates = points[:, None] + shift[1] + grid
    values = objective(pyramid, points, 1, candidates, PixelSettings().radius)
    best = candidates[torch.arange(12), values.argmin(1)]
    # Lucas-Kanade stops where the objective's gradient (linearised on the template) vanishes; the exhaustive
    # minimum of bilinearly interpolated patches sits a little towards the pixel grid, where the objective is flat
    # (within 0.2 px of the truth it changes by a few percent of its minimum, across the grid by 30-500x). Both are
    # near the truth, and Lucas-Kanade's objective is within 15 % of the exhaustive minimum.
    at_found = objective(pyramid, points, 1, found[:, None], PixelSettings().radius)[:, 0]
    assert (at_found <= 1.15 * values.min(1).values).all()
    assert (values.max(1).values > 20 * values.min(1).values).all()
    assert (found - (points + shift[1])).norm(dim=-1).max() <= 0.1
    assert (best - (points + shift[1])).norm(dim=-1).max() <= 0.25


def lucas_kanade_written_out(image, template_at, start, settings, iterations):
    """Translation-only Lucas–Kanade on one level, the mismatch formed pixel by pixel: image [2, 1, H, W] (frame 0
    the template's, frame 1 the target), template_at and start [N, 2]. Returns (position [N, 2], residual [N])."""
    r = settings.radius
    steps = torch.arange(-r - 1, r + 2, dtype=torch.float32)
    dy, dx = torch.meshgrid(steps, steps, indexing="ij")
    wide = torch.stack([dx.flatten(), dy.flatten()], 1)
    inner = (wide.abs() <= r).all(1)
    h, w = image.shape[-2:]

    def patch(frame, centres):  # [N, 2] -> [N, (2r+3)^2]
        where = (centres[:, None] + wide) * torch.tensor([2 / w, 2 / h]) - 1
        return torch.nn.functional.grid_sample(image[frame:frame + 1], where[None], padding_mode="border",
                                               align_corners=False)[0, 0]

    big = patch(0, template_at).view(-1, 2 * r + 3, 2 * r + 3)
    values = big[:, 1:-1, 1:-1].flatten(1)
    spatial = torch.exp(-(wide[inner] ** 2).sum(-1) / (2 * (r / 2 + 0.5) ** 2))
    weight = spatial * torch.exp(-(values - values[:, values.shape[1] // 2, None]) ** 2 / (2 * settings.similarity ** 2))
    weight = weight / weight.sum(1, keepdim=True)
    centred = lambda v: v - (v * weight).sum(1, keepdim=True)  # noqa: E731
    contrast = lambda v: (v ** 2 * weight).sum(1, keepdim=True).sqrt()  # noqa: E731
    template = centred(values)
    gx = centred(((big[:, 1:-1, 2:] - big[:, 1:-1, :-2]) / 2).flatten(1))
    gy = centred(((big[:, 2:, 1:-1] - big[:, :-2, 1:-1]) / 2).flatten(1))
    hessian = torch.stack([torch.stack([(w_ * a * b).sum(1) for a, b, w_ in ((gx, gx, weight), (gx, gy, weight))], 1),
                           torch.stack([(weight * gy * gx).sum(1), (weight * gy * gy).sum(1)], 1)], 1)  # [N, 2, 2]
    here = start.clone()
    for _ in range(iterations):
        target = centred(patch(1, here)[:, inner])
        mismatch = target * contrast(template) / contrast(target) - template
        b = torch.stack([(gx * mismatch * weight).sum(1), (gy * mismatch * weight).sum(1)], 1)
        here = here - torch.linalg.solve(hessian, b).clamp(-r, r)
    target = centred(patch(1, here)[:, inner])
    mismatch = target * contrast(template) / contrast(target) - template
    return here, (contrast(mismatch) / contrast(template))[:, 0]


@pytest.mark.parametrize("seed", [0, 1])
def test_alignment_equals_lucas_kanade_written_out(seed):
    """align's updates, read from four weighted sums of the target patch, against the mismatch formed explicitly."""
    generator = torch.Generator().manual_seed(seed)
    frames = shifted_frames(torch.tensor([[0.0, 0.0], [1.7, -2.4]]), seed=seed)
    image = grey_pyramid(frames.mean(dim=-1), 1)[0]
    settings = PixelSettings(iterations=3)
    points = 20 + torch.rand(40, 2, generator=generator) * 56
    start = points + torch.tensor([1.7, -2.4]) + (torch.rand(40, 2, generator=generator) - 0.5) * 6
    found = align([image], torch.tensor([0]), points[None], [image], torch.tensor([1]), start[None], settings)
    position, residual = lucas_kanade_written_out(image, points, start, settings, settings.iterations)
    assert torch.allclose(found.position[0], position, atol=1e-3)
    assert torch.allclose(found.residual[0], residual, atol=1e-3)
    assert found.textured.all() and (residual < 0.25).float().mean() > 0.5  # mostly aligned: not degenerate cases


def test_pyramid_levels_cover_the_reach():
    assert levels_for(4, 5) == 1 and levels_for(16, 5) == 3 and levels_for(16, 4) == 3 and levels_for(17, 4) == 4


@pytest.mark.parametrize("mode", oracle.MODES)
@pytest.mark.parametrize("query_frame", [0, 4])
def test_pixel_step_recovers_sub_token_motion_from_the_argmax(mode, query_frame):
    """The coarse argmax is off by up to half a token (and more between latent frames); on textured frames the
    pixel step lands within a quarter pixel."""
    coarse, truth, visible, clean = oracle.run(mode, query_frame, "argmax")
    assert (coarse.path - truth).norm(dim=-1)[clean].max() > 0.4 * oracle.TOKEN  # really off
    path, seen = refine_tracks(oracle.SCENE.render(), oracle.SCENE.queries(800, query_frame), coarse.path,
                               coarse.visible, (oracle.TOKEN, oracle.TOKEN))
    assert (path - truth).norm(dim=-1)[clean].max() <= 0.25
    assert oracle.f1(seen, visible) >= 0.95


def coarse_tracks(frames: torch.Tensor, shifts: torch.Tensor, points: torch.Tensor, offset: float):
    """Queries on frame 0 and a coarse path off the true one by `offset` px in x on every later frame."""
    queries = torch.cat([points, torch.zeros(len(points), 1)], 1)
    truth = points[None] + shifts[:, None]
    coarse = truth + torch.tensor([offset, 0.0])
    coarse[0] = points
    return queries, truth, coarse, torch.ones(len(shifts), len(points), dtype=torch.bool)


def test_chunks_of_frames_give_the_same_tracks():
    shifts = torch.arange(9.0)[:, None] * torch.tensor([1.3, -0.7])
    frames = shifted_frames(shifts)
    queries, _, coarse, visible = coarse_tracks(frames, shifts, 30 + torch.rand(20, 2) * 36, 4.0)
    whole = refine_tracks(frames, queries, coarse, visible, (16.0, 16.0))
    parts = refine_tracks(frames, queries, coarse, visible, (16.0, 16.0), PixelSettings(element_budget=1))
    for a, b in zip(whole, parts):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_flat_frames_keep_the_coarse_tracks():
    frames = torch.full((5, 64, 64, 3), 0.4)
    shifts = torch.zeros(5, 2)
    queries, _, coarse, visible = coarse_tracks(frames, shifts, torch.tensor([[20.0, 30.0], [40.0, 12.5]]), 3.0)
    visible[2, 0] = False
    path, seen = refine_tracks(frames, queries, coarse, visible, (16.0, 16.0))
    assert torch.equal(path, coarse) and torch.equal(seen, visible)


def xy(*values: float) -> torch.Tensor:
    """A point's x = y along frames: [T, 1, 2]."""
    return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1).expand(-1, 1, 2).clone()


def flags(*values: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.bool)[:, None]


def test_time_continues_through_breaks_and_places_runs_where_the_evidence_agrees():
    """One point over 10 frames (hand-worked). Steps of +2 are trusted into frames 1, 2, 4, 5, 8, 9 (breaks into 3,
    6 and 7). Frame 5's direct match (40) puts its run at 36, 20 px from the continuation (16) with the DiT (17)
    beside the continuation: the run continues. Frames 7-9 come after a two-frame break with matches 31, 33, 35:
    re-acquired at 31, and the 7 px jump there is spread over frames 3-6."""
    direct = xy(10, 99, 99, 99, 99, 40, 99, 31, 33, 35)
    direct_ok = flags(1, 0, 0, 0, 0, 1, 0, 1, 1, 1)
    step = xy(0, 2, 2, 50, 2, 2, 50, 50, 2, 2)
    step_ok = flags(1, 1, 1, 0, 1, 1, 0, 0, 1, 1)
    coarse = xy(10, 12, 14, 17, 19, 21, 23, 30, 32, 34)
    out = through_time(direct, direct_ok, step, step_ok, coarse, agree=4.0)[:, 0, 0]
    # 3-6 continue at 2 px a frame (16, 18, 20, 22), then take 1/5 .. 4/5 of the jump 31 - (22 + 2) = 7.
    torch.testing.assert_close(out, torch.tensor([10, 12, 14, 17.4, 20.8, 24.2, 27.6, 31, 33, 35]))
    # With the DiT beside the direct match instead, the run from frame 3 is placed by it (36, 38, 40).
    sided = through_time(direct, direct_ok, step, step_ok, coarse + xy(0, 0, 0, 20, 20, 20, 0, 0, 0, 0), agree=4.0)
    assert sided[3:6, 0, 0].tolist() == [36, 38, 40]


def test_a_chained_run_moves_by_its_steps_and_is_placed_by_the_median_of_its_direct_matches():
    """A still point over 8 frames (hand-worked): the chain holds on 1-3, breaks into frame 4 and holds again on 5-7.
    Direct matches slide along an edge on 1-3 (creeping 3 px a frame) and are mixed on 4-7 (41, 40, 70, 40)."""
    direct = xy(10, 13, 16, 19, 41, 40, 70, 40)
    step = xy(0, 0, 0, 0, 30, 0, 0, 0)
    step_ok = flags(0, 1, 1, 1, 0, 1, 1, 1)
    coarse = xy(10, 12, 12, 12, 40, 40, 40, 40)
    out = through_time(direct, torch.ones(8, 1, dtype=torch.bool), step, step_ok, coarse, agree=4.0)[:, 0, 0]
    # 0-3: the query frame's run, at the query point whatever the direct matches say; 4-7: the median (40.5) of the
    # run's matches, 30.5 px from the continuation (10) but with the DiT (40): one wrong match (70) moves nothing.
    assert out.tolist() == [10, 10, 10, 10, 40.5, 40.5, 40.5, 40.5]
    # A match within `agree` of a still point's continuation places its run precisely.
    near = through_time(xy(10, 99, 99, 99, 11, 99, 99, 99), flags(1, 0, 0, 0, 1, 0, 0, 0), step, step_ok, coarse,
                        agree=4.0)[:, 0, 0]
    assert near.tolist() == [10, 10, 10, 10, 11, 11, 11, 11]


def through_time_by_frames(direct, direct_ok, step, step_ok, coarse, agree):
    """through_time written out point by point and run by run, as its docstring states it (slow, plain)."""
    length, count, _ = direct.shape
    out = torch.empty_like(direct)

    def median(values):  # per coordinate; the mean of the two middle values for an even count
        ordered = torch.stack(values).sort(dim=0).values
        return (ordered[(len(values) - 1) // 2] + ordered[len(values) // 2]) / 2

    for n in range(count):
        linked = [t > 0 and bool(step_ok[t, n]) for t in range(length)]
        runs = []
        for t in range(length):
            if linked[t]:
                runs[-1].append(t)
            else:
                runs.append([t])
        run_of = {t: r for r, frames in enumerate(runs) for t in frames}
        moved = {t: sum((step[u, n] for u in range(runs[run_of[t]][0] + 1, t + 1)), torch.zeros(2)) for t in range(length)}
        increment, last = [], torch.zeros(2)
        for t in range(length):
            last = step[t, n] if linked[t] else last
            increment.append(last)
        votes = {r: [direct[t, n] - moved[t] for t in frames if direct_ok[t, n]] for r, frames in enumerate(runs)}
        placed = {r: (direct[0, n] if r == 0 else median(votes[r])) for r in range(len(runs)) if r == 0 or votes[r]}

        def walk(anchored):
            positions = []
            for t in range(length):
                r = run_of[t]
                positions.append(placed[r] + moved[t] if r in anchored else positions[t - 1] + increment[t])
            return positions

        provisional = walk(set(placed))
        anchored = {0}
        for r in placed:
            if r == 0:
                continue
            first = runs[r][0]
            continuation = provisional[first - 1] + increment[first]
            beside = median([coarse[t, n] - moved[t] for t in runs[r]])
            long_break = first - 1 > 0 and not linked[first - 1]
            if ((placed[r] - continuation).norm() <= agree or long_break
                    or (placed[r] - beside).norm() <= (continuation - beside).norm()):
                anchored.add(r)
        positions = walk(anchored)
        spread = list(positions)
        for t in range(length):
            if run_of[t] in anchored:
                continue
            before = max(u for u in range(t) if run_of[u] in anchored)
            after = [u for u in range(t + 1, length) if run_of[u] in anchored]
            if after:
                jump = positions[after[0]] - positions[after[0] - 1] - increment[after[0]]
                spread[t] = positions[t] + jump * (t - before) / (after[0] - before)
        out[:, n] = torch.stack(spread)
    return out


@pytest.mark.parametrize("seed", range(3))
def test_through_time_equals_its_statement_written_out_frame_by_frame(seed):
    generator = torch.Generator().manual_seed(seed)
    length, count = 12, 40
    truth = torch.cumsum(torch.randn(length, count, 2, generator=generator) * 2, dim=0)
    noisy = lambda scale: truth + torch.randn(length, count, 2, generator=generator) * scale  # noqa: E731
    direct, coarse = noisy(1.0), noisy(6.0)
    direct[:, ::3] += 30 * (torch.rand(length, (count + 2) // 3, 1, generator=generator) < 0.3)  # wrong matches
    step = torch.cat([torch.zeros(1, count, 2), noisy(0.3).diff(dim=0)])
    direct_ok = torch.rand(length, count, generator=generator) < 0.4
    step_ok = torch.rand(length, count, generator=generator) < 0.7
    direct_ok[0] = True
    expected = through_time_by_frames(direct, direct_ok, step, step_ok, coarse, 4.0)
    torch.testing.assert_close(through_time(direct, direct_ok, step, step_ok, coarse, 4.0), expected, rtol=0, atol=1e-4)


def test_segment_median_equals_a_loop_over_segments():
    generator = torch.Generator().manual_seed(3)
    length, count = 11, 6
    values = torch.randn(length, count, 2, generator=generator) * 20
    valid = torch.rand(length, count, generator=generator) > 0.3
    breaks = torch.rand(length, count, generator=generator) > 0.6
    breaks[0] = True
    index = torch.arange(length)[:, None].expand(length, count)
    start = torch.where(breaks, index, 0).cummax(dim=0).values
    end = torch.stack([torch.tensor([max(u for u in range(length) if start[u, n] == start[t, n]) for n in range(count)])
                       for t in range(length)])
    median, count_valid = segment_median(values, valid, start, end)
    for n in range(count):
        for t in range(length):
            kept = sorted(values[u, n, 0].item() for u in range(start[t, n], end[t, n] + 1) if valid[u, n])
            assert count_valid[t, n] == len(kept)
            if kept:
                middle = (kept[(len(kept) - 1) // 2] + kept[len(kept) // 2]) / 2
                assert median[t, n, 0].item() == pytest.approx(middle, abs=1e-4)


def test_temporal_median_stays_inside_runs_of_visible_frames():
    values = torch.tensor([0.0, 0, 16, 0, 0, 5, 5, 5, 5, 100])
    path = values.view(10, 1, 1).expand(10, 1, 2).clone()
    visible = torch.ones(10, 1, dtype=torch.bool)
    visible[4] = False
    smooth = temporal_median(path, visible, 2)[:, 0, 0]
    # The outlier on frame 2 goes; the hidden frame 4 stays; frame 9 ends its run, so its window is itself.
    assert smooth.tolist() == [0, 0, 0, 0, 0, 5, 5, 5, 5, 100]
    assert torch.equal(temporal_median(path, visible, 0), path)


def test_pixel_readout_needs_the_frames_of_the_tracked_video():
    queries = oracle.SCENE.queries(10, 0)
    selection = oracle.features("per_frame", 0)
    settings = TrackSettings(readout="refined+pixel")
    with pytest.raises(ValueError, match="connect the images.*'refined'"):
        track_points([selection], queries, oracle.SCENE.frame_size, oracle.SCENE.frames, settings)
    with pytest.raises(ValueError, match="not the tracked video's 9 frames of 128x96"):
        track_points([selection], queries, oracle.SCENE.frame_size, oracle.SCENE.frames, settings,
                     frames=torch.zeros(9, 64, 64, 3))


def test_pyramid_equals_kornias():
    from kornia.geometry.transform import build_pyramid  # installed with ComfyUI's requirements, optional there

    frames = torch.rand(3, 61, 96, 3, generator=torch.Generator().manual_seed(0))
    for ours, theirs in zip(grey_pyramid(frames.mean(dim=-1), 4), build_pyramid(frames.mean(dim=-1)[:, None], 4)):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
