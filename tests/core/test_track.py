import math

import pytest
import torch

from difftrack_pack.ditcorr import QK
from difftrack_pack.ditcorr.track import TrackSettings, read_out, track_points


def gaussian_map(h, w, col, row, sigma=0.8):
    rows, cols = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    return torch.exp(-((rows - row) ** 2 + (cols - col) ** 2) / (2 * sigma ** 2))


@pytest.mark.parametrize("col, row", [(3.3, 2.7), (6.6, 3.4), (4.0, 2.0), (2.45, 4.49)])
def test_refined_read_out_finds_a_sub_token_peak(col, row):
    cost = gaussian_map(7, 10, col, row)[None]  # peaks at least two tokens from the border
    (found_argmax, _), (found, peak) = read_out(cost, "argmax"), read_out(cost, "refined", window=2)
    assert torch.equal(found_argmax[0], torch.tensor([float(round(col)), float(round(row))]))
    assert abs(found[0, 0] - col) < 0.02 and abs(found[0, 1] - row) < 0.02
    assert peak[0] == cost.max()


def test_refined_window_stays_symmetric_at_the_border():
    cost = gaussian_map(6, 6, 0.0, 3.0)[None]  # peak on the left edge: a clipped window would pull it inward
    found, _ = read_out(cost, "refined", window=2)
    assert abs(found[0, 0]) < 1e-6 and abs(found[0, 1] - 3.0) < 1e-3


def test_unknown_read_out():
    with pytest.raises(ValueError, match="Unknown read-out 'best'"):
        read_out(torch.rand(1, 3, 3), "best")


def selection():
    generator = torch.Generator().manual_seed(0)
    return [((0.0, 1.0, 2.0), QK(torch.randn(2, 3, 4, 4, 8, generator=generator), torch.randn(2, 3, 4, 4, 8, generator=generator), 0.1))]


@pytest.mark.parametrize("queries, message", [
    (torch.zeros(0, 3), "non-empty"),
    (torch.tensor([[10.0, 5.0, 0.0], [40.0, 5.0, 0.0]]), r"Point 1 \(40, 5\) is outside the 32x32 frame"),
    (torch.tensor([[10.0, 5.0, 3.0]]), "Point 0 is on frame 3, outside the video's 3 frames"),
])
def test_bad_queries(queries, message):
    with pytest.raises(ValueError, match=message):
        track_points([selection()], queries, (32, 32), 3)


def test_frames_sharing_no_chunk_with_the_query_frame():
    chunks = selection() + [((0.0, 3.0, 4.0), selection()[0][1])]
    with pytest.raises(ValueError, match="Frame 3 shares no chunk with query frame 1: extract the features with reference_frame 1"):
        track_points([chunks], torch.tensor([[5.0, 5.0, 1.0]]), (32, 32), 5)


def test_query_point_sits_on_its_own_frame_and_output_shapes():
    queries = torch.tensor([[5.0, 6.0, 0.0], [20.0, 9.0, 2.0]])
    tracks = track_points([selection()], queries, (32, 32), 3, TrackSettings(readout="argmax"))
    assert tracks.path.shape == (3, 2, 2) and tracks.visible.shape == (3, 2) and tracks.visible.dtype == torch.bool
    assert torch.equal(tracks.path[0, 0], queries[0, :2]) and torch.equal(tracks.path[2, 1], queries[1, :2])
    assert tracks.visible[0, 0] and tracks.visible[2, 1]
    assert math.isfinite(tracks.confidence.sum().item())


def test_nearest_neighbour_baseline_finds_identical_features():
    from difftrack_pack.ditcorr.track import nearest_neighbour_tracks
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, 16, generator=generator)  # [h, w, C] of frame 0
    shifted = torch.roll(base, shifts=(1, 2), dims=(0, 1))  # frame 1: everything moved 1 row down, 2 columns right
    features = torch.stack([base, shifted])
    queries = torch.tensor([[(1 + 0.5) * 8, (2 + 0.5) * 8, 0.0]])  # token (row 2, col 1) centre, 8-px tokens
    path = nearest_neighbour_tracks(features, queries, (32, 48))
    assert path[0, 0].tolist() == [12.0, 20.0] and path[1, 0].tolist() == [(3 + 0.5) * 8, (3 + 0.5) * 8]
