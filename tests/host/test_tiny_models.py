"""The tiny trained models in assets/tiny_wan/: the stock loaders read them, the VAE reconstructs, the DiT samples
clips that move as its training clips do (issue 20's criteria).

Writes test-artifacts/tiny_wan_samples.png (generated frames over real ones) for people to look at.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import comfy.sd
import folder_paths
import nodes
from PIL import Image

from difftrack_bench.cag_quality import clip_metrics, generate, rendered_clips
from difftrack_bench.generation import acceptance, motion_summary
from difftrack_bench.train_tiny import encode, load, new_dit, new_vae, normalise_latents
from difftrack_devkit.host import REPO, find_comfyui
from difftrack_devkit.testbed import TRAINED, TRAINED_DIT, TRAINED_MOTION, TRAINED_VAE
from difftrack_devkit.nodes import run_node
from difftrack_devkit.sprites import longest_run_with_sprites
from difftrack_pack.ditcorr.synthetic import make_clip
from difftrack_pack.nodes.cag_nodes import ZeroConditioning

SIZE, FRAMES = 256, 13
ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(scope="module")
def models():
    for folder, name in (("diffusion_models", TRAINED_DIT), ("vae", TRAINED_VAE)):
        folder_paths.add_model_folder_path(folder, str(TRAINED))
    return nodes.UNETLoader().load_unet(TRAINED_DIT, "default")[0], nodes.VAELoader().load_vae(TRAINED_VAE)[0]


def test_weights_fit_the_budget():
    sizes = [path.stat().st_size for path in TRAINED.glob("*.safetensors")]
    assert len(sizes) == 2 and sum(sizes) <= 32 * 10 ** 6


def test_latent_normalisation_keeps_reconstructions():
    """normalise_latents rescales the 1x1 latent convolutions exactly: same reconstructions, N(0, 1) after process_in."""
    import comfy.latent_formats

    torch.manual_seed(0)
    vae = new_vae("cpu").float()
    frames = (torch.rand(6, 32, 32, 3) * 255).byte()
    before = vae.decode(encode(vae, frames, "cpu")[:, :, None])
    normalise_latents(vae, encode(vae, frames, "cpu"))
    latents = encode(vae, frames, "cpu")
    torch.testing.assert_close(vae.decode(latents[:, :, None]), before, rtol=1e-4, atol=1e-4)
    normalised = comfy.latent_formats.Wan21().process_in(latents[:, :, None])
    torch.testing.assert_close(normalised.mean(dim=(0, 2, 3, 4)), torch.zeros(16), atol=1e-4, rtol=0)
    torch.testing.assert_close(normalised.std(dim=(0, 2, 3, 4)), torch.ones(16), atol=1e-4, rtol=0)


def test_models_load_through_stock_loaders(models):
    model, vae = models
    diffusion_model = model.get_model_object("diffusion_model")
    assert type(diffusion_model).__name__ == "WanModel" and len(diffusion_model.blocks) == 8 and diffusion_model.dim == 384
    clip = make_clip(11, (SIZE, SIZE), FRAMES)
    frames = clip.frames[:4]
    reconstructed = torch.cat([vae.decode(vae.encode(frame[None])) for frame in frames]).reshape(frames.shape)
    psnr = -10 * torch.log10((reconstructed - frames).pow(2).mean())
    assert psnr > 20, f"VAE reconstruction PSNR {psnr:.1f} dB"


def test_sprite_detector_sees_the_training_sprites_and_nothing_in_the_background():
    assert [longest_run_with_sprites(make_clip(seed, (SIZE, SIZE), FRAMES).frames) >= 8 for seed in (21, 22, 23)] == [True] * 3
    assert [longest_run_with_sprites(make_clip(seed, (SIZE, SIZE), FRAMES, sprites=0).frames) for seed in (21, 22)] == [0, 0]


def test_sampling_from_noise_moves_as_the_training_clips_do(models):
    """Issue 20's acceptance on a handful of clips: real KSampler runs from noise (euler, 20 steps, Zero
    Conditioning; seed 1000, never a training seed) decode to clips whose colour statistics match the training
    clips', of which >= 75 % pan coherently at >= half the training clips' mean pan and keep an outlined sprite
    >= 10 of 13 frames (bench/generation.py's metrics and acceptance; its 16-clip runs are in bench/results). The
    written grid shows them (rows: two generated clips, then two real ones; columns: frames 0, 4, 8, 12)."""
    model, vae = models
    positive = run_node(ZeroConditioning, model=model).args[0]
    generated = generate(model, vae, positive, 1000, 4, 20, None)[0]
    real = rendered_clips(1000, 4, TRAINED_MOTION)
    ARTIFACTS.mkdir(exist_ok=True)
    grid = torch.cat([torch.cat(list(clip[::4]), dim=1) for clip in generated[:2] + real[:2]], dim=0)
    Image.fromarray((grid.clamp(0, 1) * 255).byte().numpy()).save(ARTIFACTS / "tiny_wan_samples.png")
    real_mean, real_std = torch.stack(real).mean(dim=(0, 1, 2, 3)), torch.stack(real).std()
    for clip in generated:
        torch.testing.assert_close(clip.mean(dim=(0, 1, 2)), real_mean, atol=0.05, rtol=0)
        assert 0.7 * real_std < clip.std() < 1.3 * real_std
    scores = [motion_summary([clip_metrics(clip) for clip in clips]) for clips in (generated, real)]
    assert acceptance(*scores) == {"coherent": True, "speed": True, "sprites": True}, scores


def test_training_runs_in_parts(tmp_path):
    """bench/train_tiny.py end to end at toy size on CPU, then a second part that resumes from the first: it keeps the
    VAE, trains the DiT further (here into a moving average, on crops of the latents, on clips that pan one way and
    so are not played backwards) and nests the first part's record in its own."""
    def train(out, *extra):
        subprocess.run([sys.executable, str(REPO / "bench" / "train_tiny.py"), "--out", str(out), "--clips", "4", "--size", "32",
                        "--frames", "3", "--vae-steps", "2", "--vae-batch", "2", "--dit-steps", "3", "--dit-batch", "2",
                        "--workers", "1", "--device", "cpu", *extra],
                       check=True, capture_output=True, env={**os.environ, "COMFYUI_PATH": str(find_comfyui())}, timeout=300)
        return json.loads((out / "training.json").read_text())

    first = train(tmp_path / "first")
    second = train(tmp_path / "second", "--resume", str(tmp_path / "first"), "--ema-decay", "0.5", "--crop", "2",
                   "--motion", "one-way")
    assert first["dit_steps_done"] == second["dit_steps_done"] == 3 and first["resumed_from"] is None
    assert second["resumed_from"] == first and "vae" not in second["seconds"]
    assert "--crop 2" in second["command"] and "--motion one-way --no-time-reversal" in second["command"]
    assert "--motion fast --time-reversal" in first["command"]
    assert (tmp_path / "second" / TRAINED_VAE).read_bytes() == (tmp_path / "first" / TRAINED_VAE).read_bytes()
    dits = [new_dit("cpu") for _ in range(2)]
    for dit, part in zip(dits, ("first", "second")):
        load(dit, tmp_path / part / TRAINED_DIT)
    first_weights, second_weights = (torch.cat([p.flatten() for p in dit.parameters()]) for dit in dits)
    assert not torch.equal(first_weights, second_weights)  # trained further ...
    assert (second_weights - first_weights).norm() < 0.01 * first_weights.norm()  # ... from the first part's weights
    # Another size of DiT, as the stock loader reads it back (heads of 128 channels); resuming it at another size
    # is refused before any training.
    other = train(tmp_path / "other", "--dit-dim", "256", "--dit-ffn", "256", "--dit-layers", "2")
    assert other["dit_config"] == {"dim": 256, "ffn_dim": 256, "num_heads": 2, "num_layers": 2}
    loaded = comfy.sd.load_diffusion_model(str(tmp_path / "other" / TRAINED_DIT)).get_model_object("diffusion_model")
    assert (loaded.dim, loaded.num_heads, len(loaded.blocks)) == (256, 2, 2)
    with pytest.raises(subprocess.CalledProcessError) as refused:
        train(tmp_path / "mixed", "--resume", str(tmp_path / "other"))
    assert b"give its --dit-dim" in refused.value.stderr
    with pytest.raises(subprocess.CalledProcessError) as refused:
        train(tmp_path / "odd", "--crop", "3")
    assert b"give an even number of latent pixels" in refused.value.stderr
