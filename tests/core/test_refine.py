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


def objective(pyramid, template_at, target, candidates, radius):
    """The alignment's own cost, evaluated directly: weighted SSD of the level-0 patch at each candidate position
    [N, M, 2] of frame `target` against the patch at template_at [N, 2] of frame 0, both with their weighted mean
    removed and the candidate scaled to the template's contrast. Returns [N, M]."""
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

    weight = weight / weight.sum()
    centred = lambda values: values - (values * weight).sum(-1, keepdim=True)  # noqa: E731
    contrast = lambda values: (values ** 2 * weight).sum(-1, keepdim=True).sqrt()  # noqa: E731
    target, template = centred(patch(target, candidates)), centred(patch(0, template_at[:, None]))
    difference = target * contrast(template) / contrast(target) - template
    return (difference ** 2 * weight).sum(-1)


def test_alignment_reaches_the_minimum_of_its_objective_found_by_exhaustive_search():
    generator = torch.Generator().manual_seed(3)
    shift = torch.tensor([[0.0, 0.0], [2.37, -1.61]])
    frames = shifted_frames(shift)
    pyramid = grey_pyramid(frames, 3)
    points = 30 + torch.rand(12, 2, generator=generator) * 36
    start = points + shift[1] + (torch.rand(12, 2, generator=generator) - 0.5) * 8  # up to half a 16-px token off
    found = align(pyramid, torch.tensor([0]), points[None], pyramid, torch.tensor([1]), start[None]).position[0]
    # Exhaustive: every position on a 0.02-px grid within 2 px of the truth.
    steps = torch.arange(-2, 2.0001, 0.02)
    grid = torch.stack(torch.meshgrid(steps, steps, indexing="xy"), -1).reshape(-1, 2)
    candidates = points[:, None] + shift[1] + grid
    best = candidates[torch.arange(12), objective(pyramid, points, 1, candidates, PixelSettings().radius).argmin(1)]
    # Lucas-Kanade stops where the objective's gradient (linearised on the template) vanishes; the exhaustive
    # minimum of bilinearly interpolated patches sits a little towards the pixel grid. Both are near the truth.
    assert (found - best).norm(dim=-1).max() <= 0.15
    assert (found - (points + shift[1])).norm(dim=-1).max() <= 0.1
    assert (best - (points + shift[1])).norm(dim=-1).max() <= 0.15


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


def test_time_chains_from_direct_matches_and_fills_gaps_from_trusted_frames_only():
    """One point along 7 frames leaving its query frame (hand-worked). Direct matches are trusted on frames 0 and 4;
    the chained steps into frames 1 and 5 are trusted, the steps into 2, 3 (the DiT calls frame 2 occluded) and 6
    are not."""
    xy = lambda *values: torch.tensor(values, dtype=torch.float32).view(-1, 1, 1).expand(-1, 1, 2).clone()  # noqa: E731
    direct = xy(10, 99, 99, 99, 30, 99, 99)
    direct_ok = torch.tensor([1, 0, 0, 0, 1, 0, 0], dtype=torch.bool)[:, None]
    step = xy(0, 2, 50, 50, 0, 3, 50)
    step_ok = torch.tensor([0, 1, 0, 0, 0, 1, 0], dtype=torch.bool)[:, None]
    coarse = xy(10, 14, 60, 60, 28, 36, 70)
    out = through_time(direct, direct_ok, step, step_ok, coarse, coarse_reach=16.0)[:, 0, 0]
    # 1: chained from 0; 2, 3: between 1 (12) and 4 (30), never the chain; 5: chained from 4; 6: on at 5's velocity.
    assert out.tolist() == [10, 12, 18, 24, 30, 33, 36]
    assert through_time(direct, direct_ok, step, step_ok, coarse, coarse_reach=3.0)[1, 0, 0] == 12  # 12 vs coarse 14
    far = through_time(direct, direct_ok, step, step_ok, coarse + xy(0, 9, 0, 0, 0, 0, 0), coarse_reach=3.0)
    assert far[1, 0, 0] == 15  # the chained 12 is 11 px from the coarse 23: refused, so a quarter of the way 10 -> 30
    alone = through_time(direct, torch.tensor([1, 0, 0, 0, 0, 0, 0], dtype=torch.bool)[:, None], step,
                         torch.zeros(7, 1, dtype=torch.bool), coarse, coarse_reach=16.0)
    assert torch.equal(alone[1:], coarse[1:])  # no pixel evidence at all past the query frame: the DiT's positions


def test_a_chained_run_moves_by_its_steps_and_is_placed_by_the_median_of_its_direct_matches():
    """A still point over 8 frames (hand-worked): the chain holds on 1-3, breaks into frame 4 (an occlusion, say) and
    holds again on 5-7. Direct matches slide along an edge on 1-3 (creeping 3 px a frame) and are mixed on 4-7."""
    xy = lambda *values: torch.tensor(values, dtype=torch.float32).view(-1, 1, 1).expand(-1, 1, 2).clone()  # noqa: E731
    direct = xy(10, 13, 16, 19, 41, 40, 70, 40)
    direct_ok = torch.ones(8, 1, dtype=torch.bool)
    step = xy(0, 0, 0, 0, 30, 0, 0, 0)
    step_ok = torch.tensor([0, 1, 1, 1, 0, 1, 1, 1], dtype=torch.bool)[:, None]
    coarse = xy(10, 12, 12, 12, 40, 40, 40, 40)
    out = through_time(direct, direct_ok, step, step_ok, coarse, coarse_reach=64.0)[:, 0, 0]
    # 0-3: the query frame's run, at the query point whatever the direct matches say; 4-7: the median of 41, 40,
    # 70, 40 (40.5): one wrong match (70) moves nothing.
    assert out.tolist() == [10, 10, 10, 10, 40.5, 40.5, 40.5, 40.5]


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
    for ours, theirs in zip(grey_pyramid(frames, 4), build_pyramid(frames.mean(dim=-1)[:, None], 4)):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
