"""Oracle: descriptors built from the ground truth make the tracker return the ground truth.

The scene (tests/core/oracle_scene.py) has a panning background and two
sprites, one passing over the other, 128x96 pixels in 4-pixel tokens. Position
accuracy is asserted where the descriptors themselves are unambiguous: at least
two tokens (the read-out window) from any layer or frame edge at the query,
anchor and target frames. Visibility is scored on every point.
"""
from __future__ import annotations

import pytest
import torch
from difftrack_devkit.oracle_scene import Scene

from difftrack_pack.ditcorr import latent_frame_positions, plan_chunks
from difftrack_pack.ditcorr.track import TrackSettings, track_points, track_token_frames

TOKEN = 4.0
CLEAR = 2 * TOKEN
SCENE = Scene()


def features(mode: str, query_frame: int):
    frames = SCENE.frames
    if mode == "native":  # 9 frames of a 4x causal VAE: latent frames at source positions 0, 2.5, 6.5
        positions = latent_frame_positions(3, 4)
        return [(positions, SCENE.descriptors(list(positions)))]
    size = {"per_frame": 0, "per_frame_chunked": 4}[mode]
    return [(tuple(map(float, chunk)), SCENE.descriptors(list(map(float, chunk))))
            for chunk in plan_chunks(frames, size, query_frame)]


def run(mode: str, query_frame: int, readout: str):
    queries = SCENE.queries(800, query_frame)
    truth, visible = SCENE.truth(queries)
    selection = features(mode, query_frame)
    frames = SCENE.render() if readout == "refined+pixel" else None
    tracks = track_points([selection], queries, SCENE.frame_size, SCENE.frames, TrackSettings(readout=readout), frames=frames)
    positions = sorted({p for frames, _ in selection for p in frames})
    anchor = min(positions, key=lambda p: abs(p - query_frame))
    clear = SCENE.margin(queries[:, 0], queries[:, 1], float(query_frame)) > CLEAR
    low, high = int(anchor), min(int(anchor) + 1, SCENE.frames - 1)  # positions at the anchor time: motion is linear
    at_anchor = truth[low] + (truth[high] - truth[low]) * (anchor - low)
    clear &= SCENE.margin(at_anchor[:, 0], at_anchor[:, 1], anchor) > CLEAR
    clean = torch.stack([visible[t] & clear & (SCENE.margin(truth[t, :, 0], truth[t, :, 1], float(t)) > CLEAR)
                         for t in range(SCENE.frames)])
    return tracks, truth, visible, clean


def f1(predicted: torch.Tensor, actual: torch.Tensor) -> float:
    tp = (predicted & actual).sum().item()
    return 2 * tp / (2 * tp + (predicted & ~actual).sum().item() + (~predicted & actual).sum().item())


MODES = ["per_frame", "per_frame_chunked", "native"]


@pytest.mark.parametrize("readout", ["refined", "refined+pixel"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("query_frame", [0, 4])
def test_refined_returns_the_truth_within_half_a_pixel(mode, query_frame, readout):
    tracks, truth, visible, clean = run(mode, query_frame, readout)
    assert clean.sum() > 150  # enough unambiguous (point, frame) pairs to mean something
    error = (tracks.path - truth).norm(dim=-1)[clean]
    assert error.max() <= 0.5, f"worst refined error {error.max():.3f} px"
    assert f1(tracks.visible, visible) >= 0.95
    assert 0.03 < (~visible).float().mean() < 0.5  # the clip really has occlusions and exits


def truth_at(truth: torch.Tensor, time: float) -> torch.Tensor:
    """Ground-truth positions at a fractional time (the scene's motion is linear)."""
    low = min(int(time), SCENE.frames - 2)
    return truth[low] + (truth[low + 1] - truth[low]) * (time - low)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("query_frame", [0, 4])
def test_argmax_returns_the_truth_within_half_a_token(mode, query_frame):
    tracks, truth, visible, clean = run(mode, query_frame, "argmax")
    assert f1(tracks.visible, visible) >= 0.95
    # Half a token, plus the oracle's own sub-token peak error (<= 0.5 px, shown by the refined test).
    bound = TOKEN / 2 + 0.5
    if mode != "native":
        assert (tracks.path - truth).abs()[clean].max() <= bound
        return
    queries = SCENE.queries(800, query_frame)
    selection = features(mode, query_frame)
    positions, raw = track_token_frames([selection], queries, SCENE.frame_size, SCENE.frames, TrackSettings(readout="argmax"))
    if query_frame == 0:  # on a latent frame: the token frames themselves are within half a token
        for slot, time in enumerate(positions):
            near = clean[round(time)]
            assert (raw.path[slot] - truth_at(truth, time)).abs()[near].max() <= bound
    else:
        # A query between latent frames is shifted onto its own frame along the quantised track: the shift adds at
        # most half of the next latent frame's half-token error, so between latent frames the bound is 3/4 token.
        inside = [t for t in range(SCENE.frames) if positions[0] <= t <= positions[-1]]
        error = torch.stack([(tracks.path[t] - truth[t]).abs()[clean[t]].max() for t in inside])
        assert error.max() <= 0.75 * TOKEN + 0.5


def test_refined_beats_argmax():
    refined, truth, _, clean = run("per_frame", 0, "refined")
    argmax, *_ = run("per_frame", 0, "argmax")
    assert (refined.path - truth).norm(dim=-1)[clean].mean() < 0.25 * (argmax.path - truth).norm(dim=-1)[clean].mean()
