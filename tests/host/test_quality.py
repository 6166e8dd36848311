"""bench/quality.py runs the whole pipeline and its baselines on synthetic clips (here with tiny random models)."""
import safetensors.torch

from difftrack_bench.quality import evaluate
from difftrack_devkit.models import random_model, random_wan_vae_state_dict
from difftrack_pack.ditcorr.synthetic import make_clip


def test_quality_benchmark_runs(tmp_path):
    state = random_model("wan").get_model_object("diffusion_model").state_dict()
    safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "wan.safetensors")
    safetensors.torch.save_file({k: v.contiguous() for k, v in random_wan_vae_state_dict().items()}, tmp_path / "vae.safetensors")
    result = evaluate(str(tmp_path / "wan.safetensors"), str(tmp_path / "vae.safetensors"), seed=5, clips=2, size=64,
                      frames=5, points=16)
    per_block = result["per_block"]["refined+pixel"]
    assert sorted(per_block) == [0, 1, 2, 3] and result["best_block"] in per_block
    assert result["delta_avg"] == max(per_block.values()) == result["readouts"]["refined+pixel"]["delta_avg"]
    assert sorted(result["readouts"]) == ["argmax", "refined", "refined+pixel"]
    assert sorted(result["baselines"]) == ["hidden_nn", "latent_nn", "zero_motion"]
    for scores in (*result["readouts"].values(), *result["baselines"].values()):
        assert sorted(scores) == sorted(["delta_1", "delta_2", "delta_4", "delta_8", "delta_16", "delta_avg", "aj", "oa",
                                         "jitter"])
        assert all(0.0 <= value <= 100.0 for key, value in scores.items() if key != "jitter")  # percent
    assert result["baselines"]["zero_motion"]["jitter"] in (0.0, None)  # still predictions never move
    # A known answer: the no-motion baseline, worked out straight from the clips' exact tracks (δ^x = share of the
    # visible points after frame 0 whose true displacement is under x px on the 256x256 raster).
    expected = []
    for index in range(2):
        clip = make_clip(5 * 100_003 + index, (64, 64), 5, points=16)
        moved = (clip.tracks - clip.tracks[:, :1]).norm(dim=-1) * 256 / 64  # [N, T]
        scored = clip.visible.clone()
        scored[:, 0] = False
        expected.append(sum(((moved < x) & scored).sum().item() / scored.sum().item() for x in (1, 2, 4, 8, 16)) / 5)
    assert abs(result["baselines"]["zero_motion"]["delta_avg"] - 100 * sum(expected) / 2) < 0.01

