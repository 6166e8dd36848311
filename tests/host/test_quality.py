"""bench/quality.py runs the whole pipeline and its baselines on synthetic clips (here with tiny random models)."""
import safetensors.torch

from difftrack_bench.quality import evaluate
from difftrack_devkit.models import random_model, random_wan_vae_state_dict


def test_quality_benchmark_runs(tmp_path):
    state = random_model("wan").get_model_object("diffusion_model").state_dict()
    safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "wan.safetensors")
    safetensors.torch.save_file({k: v.contiguous() for k, v in random_wan_vae_state_dict().items()}, tmp_path / "vae.safetensors")
    result = evaluate(str(tmp_path / "wan.safetensors"), str(tmp_path / "vae.safetensors"), seed=5, clips=2, size=64,
                      frames=5, points=16)
    assert sorted(result["per_block"]) == [0, 1, 2, 3] and result["best_block"] in result["per_block"]
    assert result["delta_avg"] == max(result["per_block"].values())
    for value in (result["delta_avg"], result["aj"], result["oa"], result["argmax_delta_avg"], *result["baselines"].values()):
        assert 0.0 <= value <= 100.0  # percent
    assert sorted(result["baselines"]) == ["hidden_nn", "latent_nn", "zero_motion"]
