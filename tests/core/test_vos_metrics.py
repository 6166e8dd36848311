"""DAVIS J, F and J&F against values worked out by hand."""
import pytest
import torch

from difftrack_pack.ditcorr.vos_metrics import boundary_map, boundary_measure, davis_scores, region_similarity


def stripes(starts: list[int], height: int = 12, width: int = 20) -> torch.Tensor:
    """One frame per start: the columns from `start` on are set. [T, height, width] bool."""
    columns = torch.arange(width)
    return torch.stack([(columns >= start).expand(height, width) for start in starts])


def test_region_similarity():
    truth, predicted = stripes([10]), stripes([13])
    assert region_similarity(predicted, truth).tolist() == [pytest.approx(7 / 10)]  # 7 shared columns of 10
    empty = torch.zeros(1, 4, 4, dtype=torch.bool)
    assert region_similarity(empty, empty).tolist() == [1.0]
    assert region_similarity(empty, stripes([2], 4, 4)).tolist() == [0.0]


def test_boundary_map_marks_pixels_that_differ_from_their_east_south_or_south_east_neighbour():
    single = torch.zeros(1, 4, 4, dtype=torch.bool)
    single[0, 1, 1] = True
    assert sorted(map(tuple, boundary_map(single)[0].nonzero().tolist())) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    # A stripe from column 10 on: its boundary is column 9, every row (the last column's pixels match their
    # southern neighbours).
    boundary = boundary_map(stripes([10]))[0]
    assert boundary[:, 9].all() and boundary.sum() == 12


def test_boundary_measure_counts_boundaries_within_the_tolerance():
    truth, predicted = stripes([10]), stripes([13])  # boundaries in columns 9 and 12: 3 px apart
    assert boundary_measure(predicted, truth, tolerance=2).tolist() == [0.0]
    assert boundary_measure(predicted, truth, tolerance=3).tolist() == [1.0]
    assert boundary_measure(truth, truth).tolist() == [1.0]
    empty = torch.zeros(1, 12, 20, dtype=torch.bool)
    assert boundary_measure(empty, empty).tolist() == [1.0]
    assert boundary_measure(empty, truth).tolist() == [0.0] and boundary_measure(truth, empty).tolist() == [0.0]


def test_default_tolerance_is_davis_s_share_of_the_diagonal():
    # 480 x 854: ceil(0.008 * 979.6) = 8 pixels.
    truth = stripes([400], 480, 854)
    assert boundary_measure(stripes([408], 480, 854), truth).tolist() == [1.0]
    assert boundary_measure(stripes([409], 480, 854), truth).tolist() == [0.0]


def test_davis_scores_leave_out_the_first_and_last_frames():
    truth = stripes([10, 10, 10, 10])
    predicted = stripes([0, 10, 13, 19])  # first and last frames wrong: not scored
    scores = davis_scores(predicted, truth)
    j = (1 + 7 / 10) / 2
    f = (1 + 0) / 2  # 12 x 20 frames: a tolerance of ceil(0.008 * 23.3) = 1 px, the 3-px shift misses
    assert scores == pytest.approx({"j": j, "f": f, "jf": (j + f) / 2})
    with pytest.raises(ValueError, match="at least 3 frames"):
        davis_scores(predicted[:2], truth[:2])
    with pytest.raises(ValueError, match=r"must both be \[frames, height, width\]"):
        davis_scores(predicted, truth[:, :6])
