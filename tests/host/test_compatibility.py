"""What Wan users combine with this pack (issue 19), one case at a time on the tiny models through the real loaders.

LoRA: a tiny LoRA file on q and k of every block, loaded by the stock LoraLoaderModelOnly before the pack's patches
(Extract Features on the LoRA'd model) and after them (Attention Capture, then the LoRA, then a sampler): the
captured q/k equal those of the same model with the LoRA merged into its weights by hand.
"""
from __future__ import annotations

import comfy.model_management
import folder_paths
import nodes as comfy_nodes
import pytest
import torch
from safetensors.torch import save_file

from difftrack_devkit.models import random_model, random_wan_vae, sample
from difftrack_devkit.nodes import run_node
from difftrack_pack.nodes.capture_nodes import AttentionCapture, CapturedFeatures, ExtractVideoFeatures

RANK = 4


def lora_deltas(model, seed: int = 0) -> dict[str, torch.Tensor]:
    """A low-rank update (up @ down) for q and k of every self-attention, keyed by the weight it changes."""
    generator = torch.Generator().manual_seed(seed)
    deltas = {}
    for index, block in enumerate(model.get_model_object("diffusion_model").blocks):
        for name in ("q", "k"):
            weight = getattr(block.self_attn, name).weight
            up = torch.randn(weight.shape[0], RANK, generator=generator) * 0.2
            down = torch.randn(RANK, weight.shape[1], generator=generator) * 0.2
            deltas[f"blocks.{index}.self_attn.{name}"] = (up, down)
    return deltas


@pytest.fixture
def lora(tmp_path, monkeypatch):
    """(the user's model, the LoRA file's name in a loras folder ComfyUI searches, the model with it merged)."""
    model, merged = random_model("wan"), random_model("wan")  # the same seeded weights
    deltas = lora_deltas(model)
    save_file({f"diffusion_model.{key}.lora_{part}.weight": tensor.contiguous()
               for key, (up, down) in deltas.items() for part, tensor in (("up", up), ("down", down))},
              str(tmp_path / "tiny_lora.safetensors"))
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras", ([str(tmp_path)], {".safetensors"}))
    monkeypatch.setattr(folder_paths, "filename_list_cache", {})
    diffusion_model = merged.get_model_object("diffusion_model")
    for key, (up, down) in deltas.items():
        diffusion_model.get_submodule(key).weight.data += up @ down
    return model, "tiny_lora.safetensors", merged


def with_lora(model, name: str):
    return comfy_nodes.LoraLoaderModelOnly().load_lora_model_only(model, name, 1.0)[0]


def assert_same_captures(got, expected):
    assert sorted(got.captures) == sorted(expected.captures) and got.captures
    for key, qk in expected.captures.items():
        torch.testing.assert_close(got.captures[key].q, qk.q, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(got.captures[key].k, qk.k, rtol=1e-4, atol=1e-4)


def test_extraction_on_a_lora_model_reads_the_lora_s_q_and_k(lora):
    model, name, merged = lora
    images = torch.rand(5, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    vae = random_wan_vae()
    extract = lambda m: run_node(ExtractVideoFeatures, model=m, vae=vae, images=images, blocks="1, 3",  # noqa: E731
                                 storage="cpu", storage_dtype="float32").args[0]
    plain, lora_features = extract(model), extract(with_lora(model, name))
    assert_same_captures(lora_features, extract(merged))
    difference = (lora_features.captures[next(iter(plain.captures))].q - plain.captures[next(iter(plain.captures))].q)
    assert difference.abs().max() > 1e-2  # the LoRA did change q: the equality above is not vacuous


def test_a_lora_loaded_after_attention_capture_is_captured_and_the_users_weights_come_back(lora):
    model, name, merged = lora
    before = {key: value.clone() for key, value in model.get_model_object("diffusion_model").state_dict().items()}

    def captured(base, lora_after: bool):
        patched, handle = run_node(AttentionCapture, model=base, blocks="2", branches="both", storage="cpu",
                                   storage_dtype="float32").args
        samples = sample(with_lora(patched, name) if lora_after else patched, "wan")
        return samples, run_node(CapturedFeatures, capture=handle, latent={"samples": samples}).args[0]

    samples, features = captured(model, lora_after=True)
    expected_samples, expected = captured(merged, lora_after=False)
    assert_same_captures(features, expected)
    torch.testing.assert_close(samples, expected_samples, rtol=1e-4, atol=1e-4)
    comfy.model_management.unload_all_models()  # ComfyUI keeps a LoRA's weights patched in while the model is loaded
    after = model.get_model_object("diffusion_model").state_dict()
    assert all(torch.equal(after[key], value) for key, value in before.items())  # and restores them on unload
