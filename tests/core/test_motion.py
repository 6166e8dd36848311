"""Motion metrics against hand-made videos with known answers: exact flows, then OpenCV's DIS flow as the
benchmarks use it."""
import math

import pytest
import torch

from difftrack_devkit.flow import dis_flows
from difftrack_pack.ditcorr.motion import (consistent_flow, dominant_motion, integrate_tracks, motion_fidelity, motion_magnitude,
                                           pan_shifts, pan_statistics, phase_shift, warp_error)
from difftrack_pack.ditcorr.points import grid_points
from difftrack_pack.ditcorr.synthetic import Scene, make_clip, smooth_texture

SIZE, FRAMES = 96, 6


def texture(seed=0) -> torch.Tensor:
    """A smooth colour texture [SIZE, SIZE, 3] that tiles (so rolled copies are exact translations)."""
    return smooth_texture(torch.Generator().manual_seed(seed), SIZE, 8).permute(1, 2, 0)


def translating(dx: int, dy: int, frames: int = FRAMES, seed: int = 0) -> torch.Tensor:
    """Frame t is the texture moved by (t dx, t dy) pixels."""
    base = texture(seed)
    return torch.stack([torch.roll(base, shifts=(t * dy, t * dx), dims=(0, 1)) for t in range(frames)])


def constant_flow(dx: float, dy: float, frames: int = FRAMES) -> torch.Tensor:
    return torch.tensor([float(dx), float(dy)]).expand(frames - 1, SIZE, SIZE, 2).clone()


def test_warp_error_of_an_exact_flow_is_zero_and_the_check_drops_what_leaves_the_frame():
    video = translating(2, 1)
    forward, backward = constant_flow(2, 1), constant_flow(-2, -1)
    assert warp_error(video, forward, backward) == pytest.approx(0.0, abs=1e-6)
    valid = consistent_flow(forward[0], backward[0])
    assert not valid[:, -2:].any() and not valid[-1:].any() and valid[:-1, :-2].all()
    assert not consistent_flow(forward[0], forward[0]).any()  # a backward flow that does not undo the forward one
    assert motion_magnitude(forward) == pytest.approx(math.sqrt(5))


def test_a_translation_gives_the_translation_as_flow_no_warp_error_and_full_fidelity_to_itself():
    video = translating(2, 1)
    forward, backward = dis_flows(video)
    inner = forward[:, 8:-8, 8:-8]  # DIS cannot know what entered at the borders
    assert inner.reshape(-1, 2).median(0).values.tolist() == pytest.approx([2.0, 1.0], abs=0.05)
    assert warp_error(video, forward, backward) < 0.01
    tracks = integrate_tracks(forward, grid_points(6, (SIZE, SIZE))[:, :2])
    assert motion_fidelity(tracks, tracks, same_grid=True) == pytest.approx(1.0, abs=0.01)
    assert (tracks[-1] - tracks[0]).mean(0).tolist() == pytest.approx([10.0, 5.0], abs=0.3)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_shuffled_frames_give_a_high_warp_error(seed):
    """A synthetic clip (panning background, sprites that move, turn and occlude) in order and shuffled; and frames
    with nothing in common. (A shuffled pure translation would still be a translation between any two frames.)"""
    clip = make_clip(seed, (128, 128), 8).frames
    steady = warp_error(clip, *dis_flows(clip))
    shuffled = clip[torch.tensor([0, 4, 1, 6, 2, 7, 3, 5])]
    unrelated = torch.stack([translating(0, 0, seed=s)[0] for s in range(FRAMES)])  # a new texture every frame
    assert warp_error(shuffled, *dis_flows(shuffled)) > 1.6 * steady
    assert warp_error(unrelated, *dis_flows(unrelated)) > 5 * steady


def test_videos_moving_in_opposite_directions_score_low_fidelity():
    right, left = translating(2, 0), translating(-2, 0)
    points = grid_points(6, (SIZE, SIZE))[:, :2]
    to_right, to_left = (integrate_tracks(dis_flows(video)[0], points) for video in (right, left))
    assert motion_fidelity(to_right, to_left, same_grid=True) < -0.9
    assert motion_fidelity(to_right, translating_tracks(points, 2, 0)) == pytest.approx(1.0, abs=0.01)


def translating_tracks(points: torch.Tensor, dx: float, dy: float) -> torch.Tensor:
    return torch.stack([points + torch.tensor([float(dx), float(dy)]) * t for t in range(FRAMES)])


def test_motion_fidelity_by_hand():
    points = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    right, up = translating_tracks(points, 1, 0), translating_tracks(points, 0, -1)
    mixed = torch.stack([right[:, 0], up[:, 1]], dim=1)  # one track right, one up
    assert motion_fidelity(right, up) == pytest.approx(0.0)  # perpendicular
    assert motion_fidelity(right, mixed) == pytest.approx(1.0)  # each has a best match moving right
    assert motion_fidelity(mixed, right) == pytest.approx(0.5)  # the upward track finds no match
    assert motion_fidelity(mixed, mixed, same_grid=True) == pytest.approx(0.0)  # its own pair left out
    still = translating_tracks(points, 0, 0)
    assert motion_fidelity(still, right) == 0.0  # zero displacements: similarity 0, never NaN


def test_pan_by_phase_correlation():
    video = translating(2, 1)
    shifts = pan_shifts(video)
    assert all(shift == pytest.approx([2.0, 1.0], abs=0.05) for shift in shifts.tolist())
    assert phase_shift(video[1, ..., 0], video[0, ..., 0]) == pytest.approx((-2.0, -1.0), abs=0.05)
    stats = pan_statistics(shifts)
    assert stats["coherent"] and stats["moving"] and stats["mean_speed"] == pytest.approx(math.sqrt(5), abs=0.05)
    assert not pan_statistics(pan_shifts(translating(0, 0)))["moving"]
    jerky = torch.tensor([[2.0, 0.0], [0.0, 0.0], [2.0, 0.0], [0.0, 0.0]])  # 1 px/frame on average, 1 px off each time
    assert pan_statistics(jerky) == {"mean_speed": 1.0, "moving": True, "coherent": False}


@pytest.mark.parametrize("seed", [0, 1, 3])
def test_the_flows_dominant_motion_is_the_background_pan_of_a_synthetic_clip(seed):
    """The renderer's exact pan (the background moves by -pan a frame) against the flow's median, with sprites
    moving over it; on seed 0 a large sprite draws phase correlation off the background."""
    scene = Scene(seed, (256, 256), 8)
    shifts = dominant_motion(dis_flows(scene.render())[0])
    assert (shifts + scene.pan).norm(dim=-1).max() < 0.3
    stats = pan_statistics(shifts)
    assert stats["mean_speed"] == pytest.approx(float(scene.pan.norm()), abs=0.2) and stats["coherent"]
