"""The GPU benchmarks run as documented at their tiny size on the CPU and print one JSON line each, with the
invariants they exist to show (capture keeps what it should; prefix-reuse CAG equals the naive pass; the tracks and
the encodings' frame counts do not depend on how they were computed)."""
import json
import os
import subprocess
import sys

import pytest

from difftrack_devkit.host import REPO, find_comfyui


def run(script: str, *args: str) -> dict:
    result = subprocess.run([sys.executable, str(REPO / "bench" / script), "--device", "cpu", *args],
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "COMFYUI_PATH": str(find_comfyui())})
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    return json.loads(lines[0])


@pytest.mark.parametrize("script, args, keys", [
    ("capture.py", (), {"plain_s", "capture_s", "overhead_ratio", "extract_s", "extract_ratio", "captured_bytes"}),
    ("track.py", ("--points", "40", "--frames", "9", "--repeats", "1", "--storage", "gpu,cpu,auto"),
     {"forward_s", "track_s", "track_to_forward_ratio", "tracks_equal"}),
    ("extract_e2e.py", ("--frames", "9", "--points", "40", "--repeats", "1", "--sweep", "1,4"),
     {"encode_s", "forward_s", "track_s", "total_s", "native", "one_call_per_frame_encode_s", "batched_3d_encode_s"}),
    ("cag.py", ("--repeats", "1"), {"cfg_step_s", "naive_cag_step_s", "cag_step_s", "max_abs_diff_vs_naive",
                                   "published_step_s", "published_ratio_vs_cfg"}),
    ("cag_quality.py", ("--clips", "1", "--steps", "2", "--variants", "renormalised", "--blocks", "best"),
     {"arms", "real", "seconds", "clips", "steps"}),
    ("analysis.py", ("--size", "tiny", "--frames", "9", "--repeats", "1"),
     {"sweep_s", "forward_s", "sweep_to_forward_ratio", "sweep_forwards_s", "peak_mem_gib"}),
    ("analysis.py", ("--clips", "1", "--sigmas", "0.2"),
     {"grid", "best_block_by_gt", "best_sigma_by_gt", "auto_block", "auto_sigma", "best_delta_avg", "auto_delta_avg",
      "seconds"}),
    ("generation.py", ("--clips", "2", "--steps", "2", "--batch", "2", "--from-real", "0.2", "--one-step", "0.5",
                       "--motion", "one-way-slow"),
     {"generated", "real", "meets", "seconds", "from_real", "one_step"}),
    ("vos.py", ("--clips", "1", "--sigmas", "0.2,0.5", "--fuse", "6+7"),
     {"jf", "j", "f", "best_sigma", "best_block", "by_sigma", "settings", "baselines", "margin"}),
    ("vos.py", ("--clips", "1", "--sigmas", "0.5", "--fuse", "6+7", "--upscale", "2"),
     {"jf", "j", "f", "best_sigma", "best_block", "by_sigma", "settings", "baselines", "margin"}),
    ("vos.py", ("--speed", "--size", "tiny", "--frames", "9", "--repeats", "1", "--upscale", "2"),
     {"forward_s", "propagate_s", "propagate_to_forward_ratio", "frame_size", "upscale"}),
    ("motion_transfer.py", ("--cost", "--steps", "5", "--schedules", "0:1,1:2", "--embeddings"),
     {"plain_s", "by_schedule", "guided_steps", "iterations"}),
    ("motion_transfer.py", ("--clips", "1", "--steps", "3", "--iterations", "2", "--rate", "0.005,0.005",
                            "--embeddings"),
     {"mf_guided", "mf_unguided", "pan_match_guided", "amf_loss_before", "amf_loss_after", "embeddings"}),
])
def test_benchmark_prints_its_json_line(script, args, keys):
    out = run(script, *args)
    assert keys <= set(out) and out["device"] == "cpu" and out["model"] == "wan2.1-tiny"
    if script == "capture.py":  # one block of 5 x 8 x 8 tokens (2 heads x 128), q and k, float32
        assert out["captured_bytes"] == 2 * 2 * 5 * 8 * 8 * 128 * 4 and sorted(out["by_storage"]) == ["cpu", "gpu"]
    if script == "track.py":  # the storage of the features does not change the tracks
        assert out["tracks_equal"] is True and sorted(out["by_storage"]) == ["auto", "cpu", "gpu"]
    if script == "extract_e2e.py":  # per-frame: a latent frame per frame; native: Wan's 4x temporal compression
        assert out["latent_frames"] == 9 and out["native"]["latent_frames"] == 3
        assert out["total_s"] >= out["encode_s"] > 0 and sorted(out["encode_s_by_max_batch"]) == ["1", "4"]
    if script == "motion_transfer.py" and "embeddings" in out:  # both optimisations lower the flow loss; the
        # embeddings' scores are motion fidelities (0-1) of a learning run and a zero-shot run
        assert out["amf_loss_after"] < out["amf_loss_before"]
        embeddings = out["embeddings"]
        assert embeddings["amf_loss_after"] < embeddings["amf_loss_before"]
        assert all(0 <= embeddings[key] <= 1 for key in ("mf_learning", "mf_zero_shot", "mf_unguided_other_seed"))
    elif script == "motion_transfer.py":  # 5 latent frames: 20 ordered pairs, 8 of them neighbours; one guided step
        # of 5 iterations: a gradient on each, or on iterations 0, 2 and 4, for the latent and for motion embeddings
        schedules = out["by_schedule"]
        assert {name: (r["pairs"], r["gradients"]) for name, r in schedules.items()} == {
            "0:1": (20, 5), "1:2": (8, 3), "0:1:embeddings": (20, 5), "1:2:embeddings": (8, 3)}
        assert out["guided_steps"] == 1
    if script == "cag.py":
        assert out["max_abs_diff_vs_naive"] <= 1e-4
    if script == "vos.py" and "--speed" in args:  # timed at the tiny model's 128 x 128 frames, enlarged twice
        assert out["frame_size"] == [128, 128] and out["upscale"] == 2 and out["propagate_to_forward_ratio"] > 0
    elif script == "vos.py":  # the best setting is one of those scored, the first mask copied scores below it
        sigmas = args[args.index("--sigmas") + 1].split(",")
        assert sorted(out["by_sigma"], key=float) == sigmas and out["best_sigma"] in map(float, sigmas)
        assert out["upscale"] == (2 if "--upscale" in args else 1)
        assert {"0", "7", "6+7"} <= set(out["settings"])  # every block, and the fused set
        assert out["jf"] == max(row["jf"] for row in out["by_sigma"].values()) > out["baselines"]["static"]["jf"]
        # exact masks at the latent's grid (twice the tokens' in each direction) score at least those at the tokens'
        ceiling = out["ceiling"]
        assert ceiling["latent_grid"]["jf"] >= ceiling["token_grid"]["jf"] > out["baselines"]["static"]["jf"]
    if script == "generation.py":  # the rendered clips (here of a one-way regime) are the yardstick: they pan
        # coherently, their sprites persist
        assert out["motion"] == "one-way-slow"
        assert out["real"]["coherent_fraction"] == 1 and out["real"]["persistent_fraction"] == 1
        assert out["real"]["mean_speed"] >= 0.5 and set(out["meets"]) == {"coherent", "speed", "sprites"}
        # sampled from the rendered clips, the last 2 steps of a 10-step schedule: it starts part-way down the noise
        assert set(out["from_real"]) == {"0.2"} and set(out["real"]) < set(out["from_real"]["0.2"])
        assert 0 < out["from_real"]["0.2"]["start_sigma"] < 1
        # at half noise the trained DiT's prediction keeps most of the clips' motion, seen in training or not
        assert all(0.5 < out["one_step"][clips]["0.5"] <= 1 for clips in ("rendered", "training"))
    if script == "cag_quality.py":  # same noise for every arm; rendered clips keep their sprites on all 13 frames
        assert sorted(out["arms"]) == ["cag_renormalised_best_1", "plain"] and out["real"]["sprite_persistence"]["mean"] == 13
        assert out["best_block"] == 7  # Correspondence Analysis's pick for the trained tiny DiT
        assert all(arm["warp_error"]["low"] <= arm["warp_error"]["mean"] <= arm["warp_error"]["high"]
                   for arm in out["arms"].values())
    if script == "analysis.py" and "grid" in out:  # the trained tiny DiT tracks with its last block only
        assert out["auto_block"] == out["best_block_by_gt"] == 7 and set(out["grid"]) == {str(b) for b in range(8)}
        assert out["auto_delta_avg"] == out["grid"]["7"]["0.2"]["delta_avg"] > 30


def test_guided_filter_benchmark_times_ours_and_kornias_on_the_same_labels():
    out = run("guided.py", "--frames", "2", "--height", "64", "--width", "96", "--repeats", "1")
    assert out["device"] == "cpu" and out["frame_size"] == [64, 96] and out["ours_s"] > 0 and out["kornia_s"] > 0
    assert out["max_abs_diff"] <= 2e-4  # the same filter
