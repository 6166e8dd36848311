"""What Wan users combine with this pack (issue 19), one case at a time on the tiny models through the real nodes.

LoRA: a tiny LoRA file on q and k of every block, loaded by the stock LoraLoaderModelOnly before the pack's patches
(Extract Features on the LoRA'd model) and after them (Attention Capture, then the LoRA, then a sampler): the
captured q/k equal those of the same model with the LoRA merged into its weights by hand.

torch.compile: core TorchCompileModel (inductor) with capture, CAG and Track Points: the same results as eager, and
no recompilation from one step or run to the next (dynamo's graph count stays put).

GGUF: the tiny trained Wan written as GGUF (Q8_0, Q4_0, Q5_1 weights; the `gguf` writer cannot make K-quants) and
loaded by city96's UnetLoaderGGUF (its GGUFModelPatcher and GGMLOps): captures equal those of the same weights
dequantised and loaded by the stock loader; Track Points and CAG give the same results on both.

fp8 scaled weights: the tiny trained Wan stored the way ComfyUI's fp8-scaled files are (e4m3fn block weights, a
`scale_weight` per layer, the `scaled_fp8` marker), loaded by the stock UNETLoader under inference mode as
ComfyUI's executor runs it: the layers are ComfyUI's mixed-precision ops on QuantizedTensor weights, and with
`weight_dtype` default captures, Track Points and CAG equal those of the dequantised weights (w * scale) loaded
plainly, within float rounding; with fp8_e4m3fn (every other weight stored in fp8 too) q/k stay within fp8's
relative precision of them, and tracking and CAG run.

Wan 2.2 TI2V-5B: its layout (a 48-channel DiT of WAN22_T2V) with its VAE (48 channels, 16x spatial) through the
stock VAE loader, the network built narrower (ComfyUI 0.8's loader builds this VAE at its full 700M-parameter width
only): extraction, Track Points and the points editor's frame in pixels of the video, 32-pixel tokens.

Wan 2.2's two experts: a high-noise and a low-noise model, each with its own Attention Capture and KSamplerAdvanced on
split steps; Captured Features reads both as one set of features, steps in the order they ran, and Track Points
fuses them.

Another attention backend: KJNodes' own `optimized_attention_override` (GGUFLoaderKJ's sdpa override, from its
module file loaded alone: the pack's __init__ imports ComfyUI's server) on a GGUF model before the pack's patches:
every attention call still reaches it, and with capture on the sampler's output equals running it alone, with the
same captures as the model without the override.
"""
from __future__ import annotations

import sys
from pathlib import Path

import comfy.model_management
import folder_paths
import nodes as comfy_nodes
import pytest
import torch
from safetensors.torch import save_file

from difftrack_devkit.gguf_files import GGUF_PACK, load_node_module, load_node_pack, write_gguf
from difftrack_devkit.models import random_model, random_wan_vae, sample
from difftrack_devkit.testbed import TRAINED, TRAINED_DIT
from PIL import Image
from difftrack_devkit.nodes import run_node
from difftrack_pack.nodes.cag_nodes import CAGModelPatch
from difftrack_pack.nodes.capture_nodes import AttentionCapture, CapturedFeatures, ExtractVideoFeatures
from difftrack_pack.nodes.track_nodes import TrackPoints

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


@pytest.fixture
def compiled():
    from comfy_extras.nodes_torch_compile import TorchCompileModel

    model = random_model("wan")
    yield model, TorchCompileModel.execute(model, "inductor").args[0]
    torch._dynamo.reset()


def graphs() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def test_torch_compile_gives_eager_results_and_compiles_once(compiled):
    model, fast = compiled

    def captured(base, steps):
        patched, handle = run_node(AttentionCapture, model=base, blocks="1", branches="both", storage="cpu",
                                   storage_dtype="float32").args
        samples = sample(patched, "wan", steps=steps)
        return samples, run_node(CapturedFeatures, capture=handle, latent={"samples": samples}).args[0]

    samples, features = captured(fast, steps=1)
    after_first = graphs()
    more_samples, more_features = captured(fast, steps=4)  # more steps, a new capture session: nothing to recompile
    assert graphs() == after_first > 0
    for (got_samples, got_features), steps in (((samples, features), 1), ((more_samples, more_features), 4)):
        eager_samples, eager_features = captured(model, steps)
        torch.testing.assert_close(got_samples, eager_samples, rtol=1e-4, atol=1e-4)
        assert_same_captures(got_features, eager_features)

    guided, eager_guided = run_node(CAGModelPatch, model=fast).args[0], run_node(CAGModelPatch, model=model).args[0]
    first = sample(guided, "wan", steps=3)
    with_cag = graphs()
    torch.testing.assert_close(sample(guided, "wan", steps=3), first)
    assert graphs() == with_cag
    torch.testing.assert_close(first, sample(eager_guided, "wan", steps=3), rtol=1e-4, atol=1e-4)

    images = torch.rand(5, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    track = lambda m: run_node(TrackPoints, model=m, vae=random_wan_vae(), images=images, points="[[20, 30], [40, 12]]",  # noqa: E731
                               frames_per_chunk=5).args[0]["track_path"]
    torch.testing.assert_close(track(fast), track(model), rtol=1e-4, atol=1e-3)


def tiny_gguf_model(folder: Path, quantisation: str):
    """The tiny trained Wan written to folder/tiny.gguf and loaded by ComfyUI-GGUF's UnetLoaderGGUF, with ComfyUI's
    model folders pointed at `folder` only while it loads: (the model, the weights the gguf package wrote)."""
    import comfy.utils

    written = write_gguf(comfy.utils.load_torch_file(str(TRAINED / TRAINED_DIT)), folder / "tiny.gguf", quantisation)
    pack = load_node_pack(GGUF_PACK)
    with pytest.MonkeyPatch.context() as patch:
        for key in ("unet", "diffusion_models", "unet_gguf"):
            patch.setitem(folder_paths.folder_names_and_paths, key, ([str(folder)], {".gguf"}))
        patch.setattr(folder_paths, "filename_list_cache", {})
        return pack.NODE_CLASS_MAPPINGS["UnetLoaderGGUF"]().load_unet("tiny.gguf")[0], written


@pytest.fixture(scope="module", params=["Q8_0", "Q4_0", "Q5_1"])
def gguf_models(request, tmp_path_factory):
    """(the tiny trained Wan as GGUF through UnetLoaderGGUF, its weights as the pack dequantises them loaded by the stock
    loader, what the gguf package reads back from the file)."""
    import comfy.sd

    folder = tmp_path_factory.mktemp("gguf")
    quantised, held = tiny_gguf_model(folder, request.param)
    dequantise = sys.modules[f"{GGUF_PACK}.dequant"].dequantize_tensor
    read = sys.modules[f"{GGUF_PACK}.loader"].gguf_sd_loader(str(folder / "tiny.gguf"))  # the pack's own reader
    weights = {key: dequantise(tensor, torch.float32) for key, tensor in read.items()}
    yield quantised, comfy.sd.load_diffusion_model_state_dict(dict(weights)), weights, held
    comfy.model_management.unload_all_models()


def test_gguf_models_capture_track_and_guide_as_their_dequantised_weights(gguf_models):
    quantised, dequantised, weights, written = gguf_models
    assert type(quantised).__name__ == "GGUFModelPatcher"
    for key, weight in written.items():  # the pack reads what was written (it dequantises in float16: rounding only)
        torch.testing.assert_close(weights[key], weight, rtol=1e-3, atol=1e-3)
    layer = quantised.get_model_object("diffusion_model").blocks[0].self_attn.q
    assert type(layer.weight).__name__ == "GGMLTensor"  # computed from the quantised blocks, not a converted copy
    images = torch.rand(5, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    vae = random_wan_vae()
    extract = lambda m: run_node(ExtractVideoFeatures, model=m, vae=vae, images=images, blocks="2, 7",  # noqa: E731
                                 storage="cpu", storage_dtype="float32").args[0]
    assert_same_captures(extract(quantised), extract(dequantised))
    track = lambda m: run_node(TrackPoints, model=m, vae=vae, images=images, points="[[20, 30], [40, 12]]",  # noqa: E731
                               frames_per_chunk=5).args[0]["track_path"]
    torch.testing.assert_close(track(quantised), track(dequantised), rtol=1e-4, atol=1e-3)
    guided = lambda m: sample(run_node(CAGModelPatch, model=m, blocks="3, 4").args[0], "wan", steps=2)  # noqa: E731
    torch.testing.assert_close(guided(quantised), guided(dequantised), rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def fp8_files(tmp_path_factory):
    """(folder holding tiny_fp8_scaled.safetensors, its weights dequantised)."""
    import comfy.utils

    folder = tmp_path_factory.mktemp("fp8")
    stored, dequantised = {}, {}
    for key, value in comfy.utils.load_torch_file(str(TRAINED / TRAINED_DIT)).items():
        if key.startswith("blocks.") and key.endswith(".weight") and value.ndim == 2:
            scale = value.float().abs().max() / torch.finfo(torch.float8_e4m3fn).max
            weight = (value.float() / scale).to(torch.float8_e4m3fn)
            stored[key], stored[f"{key[:-len('weight')]}scale_weight"] = weight, scale.reshape(())
            dequantised[key] = weight.float() * scale
        else:
            stored[key], dequantised[key] = value, value.float()
    stored["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)  # the marker of the (pre-0.8) scaled format
    save_file(stored, str(folder / "tiny_fp8_scaled.safetensors"))
    return folder, dequantised


@pytest.mark.parametrize("weight_dtype", ["default", "fp8_e4m3fn"])
def test_fp8_scaled_models_capture_track_and_guide_as_their_dequantised_weights(fp8_files, weight_dtype, monkeypatch):
    import comfy.sd

    folder, dequantised = fp8_files
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "diffusion_models", ([str(folder)], {".safetensors"}))
    monkeypatch.setattr(folder_paths, "filename_list_cache", {})
    with torch.inference_mode():  # as ComfyUI's executor runs the loader
        fp8 = comfy_nodes.UNETLoader().load_unet("tiny_fp8_scaled.safetensors", weight_dtype)[0]
    plain = comfy.sd.load_diffusion_model_state_dict(dict(dequantised))
    layer = fp8.get_model_object("diffusion_model").blocks[0].self_attn.q
    assert type(layer.weight).__name__ == "QuantizedTensor"  # ComfyUI's fp8 path, not a converted copy
    images = torch.rand(5, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    vae = random_wan_vae()
    with torch.inference_mode():
        extract = lambda m: run_node(ExtractVideoFeatures, model=m, vae=vae, images=images, blocks="2, 7",  # noqa: E731
                                     storage="cpu", storage_dtype="float32").args[0]
        got, expected = extract(fp8), extract(plain)
        track = lambda m: run_node(TrackPoints, model=m, vae=vae, images=images,  # noqa: E731
                                   points="[[20, 30], [40, 12]]", frames_per_chunk=5).args[0]["track_path"]
        guided = lambda m: sample(run_node(CAGModelPatch, model=m, blocks="3, 4").args[0], "wan", steps=2)  # noqa: E731
        if weight_dtype == "fp8_e4m3fn":
            # The loader also stores every other weight in e4m3fn (unscaled): q/k move by fp8 rounding, no more,
            # and tracking and CAG run on it.
            for key, qk in expected.captures.items():
                for name in ("q", "k"):
                    error = (getattr(got.captures[key], name) - getattr(qk, name)).norm() / getattr(qk, name).norm()
                    assert error < 0.0625  # e4m3fn's relative precision (3 mantissa bits)
            assert torch.isfinite(track(fp8)).all() and torch.isfinite(guided(fp8)).all()
            return
        assert_same_captures(got, expected)
        torch.testing.assert_close(track(fp8), track(plain), rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(guided(fp8), guided(plain), rtol=1e-4, atol=1e-4)


@pytest.fixture
def ti2v_vae(monkeypatch):
    """Wan 2.2 TI2V-5B's VAE through the stock loader (comfy.sd.VAE), its network 16 wide instead of 160."""
    import comfy.ldm.wan.vae2_2 as wan22
    import comfy.sd

    from difftrack_devkit.models import randomize_

    narrow = dict(dim=16, dec_dim=16)
    network = wan22.WanVAE(z_dim=48, temperal_downsample=[False, True, True], **narrow)
    randomize_(network, 4)
    full_width = wan22.WanVAE
    monkeypatch.setattr(wan22, "WanVAE", lambda **config: full_width(**{**config, **narrow}))
    vae = comfy.sd.VAE(sd=network.state_dict())
    monkeypatch.undo()
    assert vae.latent_channels == 48 and vae.downscale_index_formula == (4, 16, 16)  # the loader took it for 2.2's
    return vae


def test_ti2v_5b_extracts_and_tracks_in_pixels_of_the_video(ti2v_vae):
    model = random_model("wan22_ti2v")
    images = torch.rand(9, 128, 96, 3, generator=torch.Generator().manual_seed(0))
    features = run_node(ExtractVideoFeatures, model=model, vae=ti2v_vae, images=images, blocks="1",
                        frames_per_chunk=0).args[0]
    qk = next(iter(features.captures.values()))
    assert features.frame_size == (128, 96) and tuple(qk.q.shape[2:4]) == (4, 3)  # 32-pixel tokens
    result = run_node(TrackPoints, model=model, vae=ti2v_vae, images=images, points="[[40, 72], [70, 20, 4]]",
                      frames_per_chunk=0)
    path = result.args[0]["track_path"]
    assert path.shape == (9, 2, 2) and torch.isfinite(path).all()
    assert path[0, 0].tolist() == [40.0, 72.0] and path[4, 1].tolist() == [70.0, 20.0]  # through its query points
    (frame,) = result.ui["difftrack_frame"]  # what the points editor shows and maps clicks on: the frame itself
    assert Image.open(Path(folder_paths.get_temp_directory(), frame["subfolder"], frame["filename"])).size == (96, 128)


def test_two_experts_captured_as_one_set_of_features_in_the_order_they_ran():
    from difftrack_devkit.models import text_conditioning

    high, low = random_model("wan", seed=1), random_model("wan", seed=2)
    positive, negative = text_conditioning(high, 1), text_conditioning(high, 2)
    capture = lambda model: run_node(AttentionCapture, model=model, blocks="1, 2", storage="cpu",  # noqa: E731
                                     storage_dtype="float32").args
    (high_patched, high_capture), (low_patched, low_capture) = capture(high), capture(low)
    sampler = comfy_nodes.KSamplerAdvanced()
    latent = {"samples": torch.zeros(1, 16, 3, 8, 8)}
    (mid,) = sampler.sample(high_patched, "enable", 0, 4, 1.0, "euler", "simple", positive, negative, latent, 0, 2, "enable")
    (out,) = sampler.sample(low_patched, "disable", 0, 4, 1.0, "euler", "simple", positive, negative, mid, 2, 4, "disable")
    features = run_node(CapturedFeatures, capture=high_capture, latent=out, capture_2=low_capture).args[0]
    steps = sorted({key.step for key in features.captures})
    assert steps == [0, 1, 2, 3]  # each sampler alone numbered its two steps 0 and 1
    sigmas = [next(qk.sigma for key, qk in features.captures.items() if key.step == step) for step in steps]
    assert sigmas == sorted(sigmas, reverse=True)
    for key, qk in high_capture.session.captures.items():  # the high-noise expert's steps come first, as they ran
        assert torch.equal(features.captures[key].q, qk.q)
    for key, qk in low_capture.session.captures.items():
        moved = type(key)(key.block, key.step + 2, key.branch, key.sample, key.chunk)
        assert torch.equal(features.captures[moved].q, qk.q)
    tracks = run_node(TrackPoints, features=features, readout="refined", points="[[20, 30]]").args[0]
    assert torch.isfinite(tracks["track_path"]).all() and tracks["difftrack_blocks"] == [1, 2]
    unused = run_node(AttentionCapture, model=low, blocks="1").args[1]
    with pytest.raises(RuntimeError, match="capture 2: The capture saw no forward"):
        run_node(CapturedFeatures, capture=high_capture, latent=out, capture_2=unused)
    small_patched, small_capture = capture(low)
    sampler.sample(small_patched, "disable", 0, 4, 1.0, "euler", "simple", positive, negative,
                   {"samples": torch.zeros(1, 16, 3, 4, 4)}, 2, 4, "disable")
    with pytest.raises(ValueError, match="latents of different sizes.*run both experts' samplers on the same latent"):
        run_node(CapturedFeatures, capture=high_capture, latent=out, capture_2=small_capture)


def test_kjnodes_attention_override_runs_under_the_pack_and_keeps_its_samples(tmp_path, monkeypatch):
    import comfy.ldm.modules.attention as attention

    plain, _ = tiny_gguf_model(tmp_path, "Q8_0")
    kjnodes = load_node_module("ComfyUI-KJNodes", "nodes/model_optimization_nodes.py", "kjnodes_model_optimization")
    # What GGUFLoaderKJ does with attention_override "sdpa" (the node itself expects a newer ComfyUI-GGUF's loader,
    # returning (state dict, metadata), than the snapshot here): KJNodes' own override on the loaded model.
    theirs = plain.clone()
    theirs.model_options["transformer_options"]["optimized_attention_override"] = \
        kjnodes.GGUFLoaderKJ.ATTENTION_OVERRIDES["sdpa"]

    calls = []
    sdpa = attention.attention_pytorch.__wrapped__
    def counted(*args, **kwargs):
        calls.append(1)
        return sdpa(*args, **kwargs)
    counting = lambda *args, **kwargs: counted(*args, **kwargs)  # noqa: E731
    counting.__wrapped__ = counted  # what KJNodes' override calls
    monkeypatch.setattr(attention, "attention_pytorch", counting)

    alone = sample(theirs, "wan")
    calls_alone = len(calls)
    patched, handle = run_node(AttentionCapture, model=theirs, blocks="3", branches="both", storage="cpu",
                               storage_dtype="float32").args
    calls.clear()
    torch.testing.assert_close(sample(patched, "wan"), alone, rtol=0, atol=0)
    assert len(calls) == calls_alone > 0  # every attention call still reached KJNodes' backend
    captured = run_node(CapturedFeatures, capture=handle, latent={"samples": alone}).args[0]
    reference, reference_handle = run_node(AttentionCapture, model=plain, blocks="3", branches="both", storage="cpu",
                                           storage_dtype="float32").args
    samples = sample(reference, "wan")
    assert_same_captures(captured, run_node(CapturedFeatures, capture=reference_handle, latent={"samples": samples}).args[0])
