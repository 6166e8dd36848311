"""bench/tapvid_eval.py runs end to end on a TAP-Vid-layout pickle and model files the stock loaders read."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import safetensors.torch
import torch

from difftrack_bench.tapvid_eval import evaluate, queries_of
from difftrack_devkit.models import random_model, random_wan_vae_state_dict


def test_tapvid_queries():
    points = torch.tensor([[[0.5, 0.25]] * 6, [[0.1, 0.9]] * 6])
    occluded = torch.tensor([[True, False, False, False, False, False], [False] * 5 + [True]])
    queries, owners = queries_of(points, occluded, (40, 80), "first")
    assert queries.tolist() == [[40.0, 10.0, 1.0], [8.0, 36.0, 0.0]] and owners.tolist() == [0, 1]
    strided, owners = queries_of(points, occluded, (40, 80), "strided")
    assert strided[:, 2].tolist() == [5.0, 0.0] and owners.tolist() == [0, 1]


@pytest.fixture
def tiny_davis(tmp_path):
    rng = np.random.default_rng(0)
    videos = {}
    for name in ("bear", "cows"):
        points = rng.uniform(0.1, 0.9, (3, 1, 2)).repeat(9, axis=1).astype(np.float32)
        occluded = np.zeros((3, 9), dtype=bool)
        occluded[0, :2] = True
        videos[name] = {"video": rng.integers(0, 255, (9, 48, 64, 3), dtype=np.uint8), "points": points,
                        "occluded": occluded}
    (tmp_path / "davis.pkl").write_bytes(pickle.dumps(videos))
    state = random_model("wan").get_model_object("diffusion_model").state_dict()
    safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "wan.safetensors")
    safetensors.torch.save_file({k: v.contiguous() for k, v in random_wan_vae_state_dict().items()}, tmp_path / "vae.safetensors")
    return tmp_path


def test_evaluate_runs_the_pipeline(tiny_davis):
    result = evaluate(str(tiny_davis / "davis.pkl"), str(tiny_davis / "wan.safetensors"), str(tiny_davis / "vae.safetensors"),
                      size=(32, 48), frames_per_chunk=5, log=lambda line: None)
    assert result["videos"] == 2 and sorted(result["per_video"]) == ["bear", "cows"]
    for key in ("aj", "delta_avg", "oa", "jaccard_8", "delta_16"):
        assert 0.0 <= result["mean"][key] <= 100.0  # percent


def test_the_evaluation_scores_known_trackers_exactly(tiny_davis):
    """Known answers for the evaluation itself (resizing, query selection, rasterising, averaging): the exact tracks
    score 100 everywhere; the exact tracks moved 3 px right on the 256x256 raster miss the 1 and 2 px thresholds
    and meet the 4, 8 and 16 px ones: delta_avg = AJ = 60, OA 100."""
    videos = pickle.loads((tiny_davis / "davis.pkl").read_bytes())
    size = (32, 48)

    def shifted(raster_px):
        def tracker(name, images, queries):
            points, occluded = torch.as_tensor(videos[name]["points"]), torch.as_tensor(videos[name]["occluded"])
            _, owners = queries_of(points, occluded, size, "first")
            path = points[owners].transpose(0, 1) * torch.tensor([size[1], size[0]])
            return path + torch.tensor([raster_px * size[1] / 256, 0.0]), ~occluded[owners].T
        return tracker

    exact = evaluate(str(tiny_davis / "davis.pkl"), None, None, size=size, log=lambda line: None, tracker=shifted(0))
    assert exact["videos"] == 2 and exact["mean"]["delta_avg"] == exact["mean"]["aj"] == exact["mean"]["oa"] == 100.0
    off = evaluate(str(tiny_davis / "davis.pkl"), None, None, size=size, log=lambda line: None, tracker=shifted(3))
    assert [off["mean"][f"delta_{t}"] for t in (1, 2, 4, 8, 16)] == [0.0, 0.0, 100.0, 100.0, 100.0]
    assert off["mean"]["delta_avg"] == off["mean"]["aj"] == 60.0 and off["mean"]["oa"] == 100.0

