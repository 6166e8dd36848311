"""The tiny trained models in assets/tiny_wan/: the stock loaders read them, the VAE reconstructs, the DiT samples.

Writes test-artifacts/tiny_wan_samples.png (generated frames over real ones) for people to look at.
"""
from __future__ import annotations

import pytest
import torch
import folder_paths
import nodes
from PIL import Image
from locate import REPO
from train_tiny import DIT_FILE, TINY_WAN, VAE_FILE, encode, new_vae, normalise_latents

from difftrack_pack.ditcorr.synthetic import make_clip
from difftrack_pack.nodes.cag_nodes import ZeroConditioning
from hostlib import node_output

SIZE, FRAMES = 256, 13
ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(scope="module")
def models():
    for folder, name in (("diffusion_models", DIT_FILE), ("vae", VAE_FILE)):
        folder_paths.add_model_folder_path(folder, str(TINY_WAN))
    return nodes.UNETLoader().load_unet(DIT_FILE, "default")[0], nodes.VAELoader().load_vae(VAE_FILE)[0]


def test_weights_fit_the_budget():
    sizes = [path.stat().st_size for path in TINY_WAN.glob("*.safetensors")]
    assert len(sizes) == 2 and sum(sizes) <= 16 * 2 ** 20


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
    assert type(diffusion_model).__name__ == "WanModel" and len(diffusion_model.blocks) == 8 and diffusion_model.dim == 256
    clip = make_clip(11, (SIZE, SIZE), FRAMES)
    frames = clip.frames[:4]
    reconstructed = torch.cat([vae.decode(vae.encode(frame[None])) for frame in frames]).reshape(frames.shape)
    psnr = -10 * torch.log10((reconstructed - frames).pow(2).mean())
    assert psnr > 20, f"VAE reconstruction PSNR {psnr:.1f} dB"


def test_sampling_from_noise_gives_clips_with_the_training_colours(models):
    """A real KSampler run from noise (euler, 20 steps, Zero Conditioning) decodes to clips whose colour statistics
    match the training clips'. Whether they show sprites is for a person to judge: see the written grid (rows:
    two generated clips, then two real ones; columns: frames 0, 4, 8, 12)."""
    model, vae = models
    positive = node_output(ZeroConditioning.execute(model))[0]
    latent = {"samples": torch.zeros(2, 16, FRAMES, SIZE // 8, SIZE // 8)}
    samples = nodes.common_ksampler(model, 0, 20, 1.0, "euler", "simple", positive, positive, latent)[0]["samples"]
    generated = [torch.cat([vae.decode(samples[b, :, t][None, :, None]) for t in range(FRAMES)]).reshape(FRAMES, SIZE, SIZE, 3)
                 for b in range(2)]
    real = [make_clip(seed, (SIZE, SIZE), FRAMES).frames for seed in (21, 22)]
    ARTIFACTS.mkdir(exist_ok=True)
    grid = torch.cat([torch.cat(list(clip[::4]), dim=1) for clip in generated + real], dim=0)
    Image.fromarray((grid.clamp(0, 1) * 255).byte().numpy()).save(ARTIFACTS / "tiny_wan_samples.png")
    real_mean, real_std = torch.stack(real).mean(dim=(0, 1, 2, 3)), torch.stack(real).std()
    for clip in generated:
        torch.testing.assert_close(clip.mean(dim=(0, 1, 2)), real_mean, atol=0.05, rtol=0)
        assert 0.7 * real_std < clip.std() < 1.3 * real_std
