import io
import json

import numpy as np
import pytest
import torch

from difftrack_pack.ditcorr.points import grid_points, parse_points, tracks_to_csv, tracks_to_json, tracks_to_npz


@pytest.mark.parametrize("text, expected", [
    ('[{"x": 10, "y": 20}, {"x": 3.5, "y": 4}]', [[10, 20, 7], [3.5, 4, 7]]),  # KJNodes PointsEditor
    ('[{"x": 10, "y": 20, "t": 4}]', [[10, 20, 4]]),
    ("[[10, 20], [1, 2, 3]]", [[10, 20, 7], [1, 2, 3]]),
    ('{"x": 1, "y": 2}', [[1, 2, 7]]),
])
def test_parse_point_forms(text, expected):
    assert parse_points(text, default_frame=7).tolist() == expected


@pytest.mark.parametrize("text, message", [
    ("[{x: 1}]", r"not JSON \(Expecting property name enclosed in double quotes at line 1, column 3\)"),
    ("[]", "No points given"),
    ('"12"', "must be a JSON list"),
    ('[{"x": 1}]', r'Point 0 \(\{"x": 1\}\) is neither'),
    ('[["a", 2]]', "not a finite number"),
])
def test_malformed_points(text, message):
    with pytest.raises(ValueError, match=message):
        parse_points(text)


def test_grid_and_mask():
    grid = grid_points(4, (40, 80), frame=2)
    assert grid.shape == (16, 3) and grid[0].tolist() == [10.0, 5.0, 2.0] and grid[-1].tolist() == [70.0, 35.0, 2.0]
    mask = torch.zeros(40, 80)
    mask[:, :40] = 1
    assert (grid_points(4, (40, 80), mask)[:, 0] < 40).all() and grid_points(4, (40, 80), mask).shape[0] == 8
    with pytest.raises(ValueError, match="No grid point falls inside the mask"):
        grid_points(4, (40, 80), torch.zeros(40, 80))
    with pytest.raises(ValueError, match="The mask is 40x40 but the frames are 80x40"):
        grid_points(4, (40, 80), torch.zeros(40, 40))


def test_exports_round_trip():
    path = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[1.5, 2.5], [3.5, 4.5]], [[2.0, 3.0], [4.0, 5.0]]])  # [T=3, N=2, 2]
    visible = torch.tensor([[True, True], [True, False], [False, True]])
    tracks = json.loads(tracks_to_json(path))
    assert len(tracks) == 2 and tracks[1][2] == {"x": 4.0, "y": 5.0}
    npz = np.load(io.BytesIO(tracks_to_npz(path, visible)))
    assert npz["tracks"].shape == (2, 3, 2) and npz["tracks"][1, 2].tolist() == [4.0, 5.0]
    assert npz["occluded"].tolist() == [[False, False, True], [False, True, False]]
    rows = tracks_to_csv(path, visible).strip().splitlines()
    assert rows[0] == "point,frame,x,y,visible" and rows[5] == "1,1,3.50,4.50,0" and len(rows) == 7
