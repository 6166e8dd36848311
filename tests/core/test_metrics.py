"""TAP-Vid metrics and PCK against values worked out by hand."""
import math

import pytest
import torch

from difftrack_pack.ditcorr.metrics import average, evaluation_mask, pck, static_jitter, tapvid_metrics, to_raster


def test_evaluation_masks():
    queries = torch.tensor([0, 2])
    assert evaluation_mask(queries, 4, "first").tolist() == [[False, True, True, True], [False, False, False, True]]
    assert evaluation_mask(queries, 4, "strided").tolist() == [[False, True, True, True], [True, True, False, True]]
    with pytest.raises(ValueError, match="Unknown query mode 'all'"):
        evaluation_mask(queries, 4, "all")


def test_hand_computed_video():
    # Two points, four frames, both queried on frame 0 ("first": frames 1-3 scored, 6 pairs).
    gt = torch.zeros(2, 4, 2)
    gt_visible = torch.tensor([[True, True, True, False],    # point 0 occluded on frame 3
                               [True, True, True, True]])
    pred = gt.clone()
    pred[0, 1] = torch.tensor([3.0, 0.0])  # 3 px off: correct from threshold 4 on
    pred[1, 2] = torch.tensor([0.0, 1.5])  # 1.5 px off: correct from threshold 2 on
    pred[1, 3] = torch.tensor([20.0, 0.0])  # 20 px off: never correct
    pred_visible = torch.tensor([[True, True, True, True],   # claims visible where occluded: a false positive
                                 [True, True, False, True]])  # misses a visible point on frame 2
    m = tapvid_metrics(pred, pred_visible, gt, gt_visible, torch.tensor([0, 0]))
    # 5 visible scored pairs: (0,1) 3px, (0,2) 0px, (1,1) 0px, (1,2) 1.5px, (1,3) 20px
    assert m["delta_1"] == pytest.approx(2 / 5)
    assert m["delta_2"] == pytest.approx(3 / 5)
    assert m["delta_4"] == m["delta_8"] == m["delta_16"] == pytest.approx(4 / 5)
    assert m["delta_avg"] == pytest.approx((2 + 3 + 4 + 4 + 4) / 25)
    # OA: predicted visibility matches on 4 of 6 scored pairs ((0,3) wrong, (1,2) wrong)
    assert m["oa"] == pytest.approx(4 / 6)
    # Jaccard at 1: TP = correct & predicted visible = (0,2), (1,1) = 2;
    # FP = predicted visible & (occluded or too far) = (0,1), (0,3), (1,3) = 3; GT positives 5
    assert m["jaccard_1"] == pytest.approx(2 / (5 + 3))
    # at 2: (1,2) is within but predicted occluded, so TP stays 2; FP = (0,1), (0,3), (1,3)
    assert m["jaccard_2"] == pytest.approx(2 / 8)
    # at 4..16: TP = (0,1), (0,2), (1,1) = 3; FP = (0,3), (1,3) = 2
    assert m["jaccard_4"] == m["jaccard_16"] == pytest.approx(3 / 7)
    assert m["aj"] == pytest.approx((2 / 8 + 2 / 8 + 3 * 3 / 7) / 5)


def test_all_occluded_and_perfect_edge_cases():
    gt = torch.rand(3, 5, 2) * 255
    hidden = torch.zeros(3, 5, dtype=torch.bool)
    hidden[:, 0] = True  # visible only on the query frame, which is never scored
    m = tapvid_metrics(gt, hidden, gt, hidden, torch.zeros(3))
    assert m["oa"] == 1.0 and math.isnan(m["delta_avg"]) and math.isnan(m["aj"])  # nothing visible to score: NaN
    shown = torch.ones(3, 5, dtype=torch.bool)
    perfect = tapvid_metrics(gt, shown, gt, shown, torch.tensor([0, 2, 4]), "strided")
    assert perfect["delta_avg"] == perfect["aj"] == perfect["oa"] == 1.0
    all_hidden_claim = tapvid_metrics(gt, ~shown, gt, shown, torch.zeros(3))
    assert all_hidden_claim["aj"] == 0.0 and all_hidden_claim["delta_avg"] == 1.0 and all_hidden_claim["oa"] == 0.0


def test_average_leaves_out_videos_with_nothing_to_score():
    scored = {"delta_avg": 0.5, "aj": 0.25, "oa": 1.0}
    empty = {"delta_avg": math.nan, "aj": math.nan, "oa": 0.5}
    assert average([scored, empty]) == {"delta_avg": 0.5, "aj": 0.25, "oa": 0.75}  # not 0.25 / 0.125
    assert math.isnan(average([empty])["delta_avg"])


def test_raster_and_pck():
    points = torch.tensor([[[480.0, 270.0]]])
    assert to_raster(points, (540, 960)).tolist() == [[[128.0, 128.0]]]
    gt = torch.zeros(1, 2, 2)
    pred = torch.tensor([[[5.0, 0.0], [10.0, 0.0]]])  # frame 360x540 -> 720x480 reference doubles x distances
    assert pck(pred, gt, torch.ones(1, 2, dtype=torch.bool), (240, 360), threshold=12.0) == pytest.approx(0.5)


def test_static_jitter_counts_only_still_visible_frame_pairs():
    truth = torch.tensor([[[5.0, 5.0], [5.0, 5.0], [5.0, 5.0], [9.0, 5.0]],  # still, still, then moves
                          [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]])  # still, but hidden on frame 2
    visible = torch.tensor([[True, True, True, True], [True, True, False, True]])
    predicted = truth.clone()
    predicted[0, 1] += torch.tensor([3.0, 4.0])  # pairs (0,1) and (1,2) of point 0 each move 5 px
    predicted[1, 1] += torch.tensor([0.0, 1.0])  # pair (0,1) of point 1 moves 1 px; (1,2), (2,3) are not counted
    # counted: point 0 pairs (0,1), (1,2); point 1 pair (0,1) -> RMS of (5, 5, 1)
    assert static_jitter(predicted, truth, visible) == pytest.approx(math.sqrt((25 + 25 + 1) / 3))
    assert static_jitter(truth, truth, visible) == 0.0
    assert math.isnan(static_jitter(predicted, truth, torch.zeros_like(visible)))
