"""Loading ComfyUI and this pack for host tests, and tiny real models to run them on."""
from __future__ import annotations

import torch

from locate import COMFYUI  # first: it also puts bench/ (comfy_host, random_models) on sys.path
import comfy_host  # noqa: E402


def load_host():
    """ComfyUI importable, this pack imported as `difftrack_pack`."""
    return comfy_host.load_host(COMFYUI)


# name -> (random_models config, latent [C, T, H, W] of a test video, q/k reference of its family)
ARCHITECTURES = {
    "wan": ("wan_tiny", (16, 3, 8, 8), "wan"),
    "wan_i2v": ("wan_i2v_tiny", (16, 3, 8, 8), "wan"),
    "wan_vace": ("wan_vace_tiny", (16, 3, 8, 8), "wan"),
    "wan_camera": ("wan_camera_tiny", (16, 3, 8, 8), "wan"),
    "hunyuan_video": ("hunyuan_tiny", (16, 3, 8, 8), "hunyuan_video"),
    "hunyuan_video15": ("hunyuan15_tiny", (32, 3, 4, 4), "hunyuan_video"),
    "ltxv": ("ltxv_tiny", (128, 3, 4, 4), "ltxv"),
    "mochi": ("mochi_tiny", (12, 3, 8, 8), "mochi"),
    "kandinsky5": ("kandinsky5_tiny", (16, 3, 8, 8), "kandinsky5"),
}


def tiny_model(arch: str, seed: int = 0):
    from random_models import random_model

    return random_model(ARCHITECTURES[arch][0], seed=seed)


def text_conditioning(patcher, seed: int) -> list:
    """Random text conditioning shaped like the family's text encoder output."""
    from difftrack_pack.nodes.adapters import adapter_for

    diffusion_model = patcher.get_model_object("diffusion_model")
    context, extra = adapter_for(diffusion_model).zero_context(diffusion_model)
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(context.shape, generator=generator), dict(extra)]]


def sample(patcher, arch: str, seed: int = 0, batch: int = 2, steps: int = 2, cfg: float = 3.0, callback=None):
    """A real ComfyUI sampling run (euler, cond and uncond) on a tiny latent."""
    import comfy.sample

    channels, frames, height, width = ARCHITECTURES[arch][1]
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(batch, channels, frames, height, width, generator=generator)
    latent = torch.zeros_like(noise)
    return comfy.sample.sample(patcher, noise, steps, cfg, "euler", "simple", text_conditioning(patcher, 1),
                               text_conditioning(patcher, 2), latent, seed=seed, callback=callback, disable_pbar=True)


def node_output(result):
    """The values of an io.NodeOutput."""
    return result.args


def rope_pairs(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Reference RoPE for ComfyUI's 2x2-rotation frequency tensors: rotates each (even, odd) channel pair."""
    pairs = x.float().reshape(*x.shape[:-1], -1, 1, 2)
    return (freqs * pairs).sum(-1).reshape(x.shape)


def rms(x: torch.Tensor, norm: torch.nn.Module) -> torch.Tensor:
    """Reference RMSNorm from a norm module's own gain (ComfyUI's ops.RMSNorm or Flux's RMSNorm)."""
    gain = norm.weight if hasattr(norm, "weight") else norm.scale
    eps = getattr(norm, "eps", 1e-6)
    eps = torch.finfo(torch.float32).eps if eps is None else eps
    x = x.float()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * gain.float()


def linear(x: torch.Tensor, layer: torch.nn.Module) -> torch.Tensor:
    out = x.float() @ layer.weight.float().T
    return out if layer.bias is None else out + layer.bias.float()
