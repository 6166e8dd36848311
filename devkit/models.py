"""Real ComfyUI video-DiT classes with random weights, at any size (tests and benchmarks).

Speed does not depend on weight values, and hook correctness does not either,
so random weights give real timings and real code paths without downloads.
Configs come from the family table (families.py). Needs ComfyUI importable
(difftrack_devkit.host.load_host).
"""
from __future__ import annotations

import math

import torch

from .families import model_config

@torch.no_grad()
def randomize_(module: torch.nn.Module, seed: int = 0) -> None:
    """Fill every parameter with scale-aware random values (norm gains near 1, fan-in scaled matrices).

    Drawn on each parameter's own device, so a 14B model on a GPU fills in seconds.
    """
    generators = {}
    for name, param in module.named_parameters():
        if param.device not in generators:
            generators[param.device] = torch.Generator(device=param.device).manual_seed(seed)
        values = torch.randn(param.shape, generator=generators[param.device], dtype=torch.float32, device=param.device)
        if param.ndim >= 2:
            values /= math.sqrt(math.prod(param.shape[1:]))
        elif name.endswith(("weight", "scale")):
            values = 1 + 0.1 * values
        else:
            values *= 0.02
        param.copy_(values.to(param.dtype))


def random_model(name: str, dtype: torch.dtype = torch.float32, device: str = "cpu", seed: int = 0):
    """A ModelPatcher around a real ComfyUI model (model_base + ldm class) of config `name` with random weights."""
    import comfy.model_patcher
    import comfy.ops
    import comfy.supported_models

    spec = model_config(name)
    config = getattr(comfy.supported_models, spec.config_class)(dict(spec.unet))
    config.set_inference_dtype(dtype, None)
    config.custom_operations = comfy.ops.disable_weight_init  # weights are filled below, skip default init
    model = config.get_model({}, device=device)
    randomize_(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device(device), offload_device=torch.device("cpu"))



def random_wan_vae_state_dict(dim: int = 8, seed: int = 0) -> dict:
    """State dict of a Wan 2.1 VAE of base width `dim` with random weights (ComfyUI's VAE() detects it)."""
    from comfy.ldm.wan.vae import WanVAE

    vae = WanVAE(dim=dim, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                 temperal_downsample=[False, True, True], dropout=0.0)
    randomize_(vae, seed)
    return vae.state_dict()


def random_wan_vae(dim: int = 8, seed: int = 0):
    """A ComfyUI VAE object around a random tiny Wan 2.1 VAE."""
    import comfy.sd

    return comfy.sd.VAE(sd=random_wan_vae_state_dict(dim, seed))


def text_conditioning(patcher, seed: int | torch.Generator) -> list:
    """Random text conditioning shaped like the family's text encoder output."""
    from difftrack_pack.nodes.adapters import adapter_for

    diffusion_model = patcher.get_model_object("diffusion_model")
    context, extra = adapter_for(diffusion_model).zero_context(diffusion_model)
    generator = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(seed)
    return [[torch.randn(context.shape, generator=generator), dict(extra)]]


def sample(patcher, case: str, seed: int = 0, batch: int = 2, steps: int = 2, cfg: float = 3.0, callback=None):
    """A real ComfyUI sampling run (euler, cond and uncond) on the test latent of a tiny case."""
    import comfy.sample

    channels, frames, height, width = model_config(case).latent
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(batch, channels, frames, height, width, generator=generator)
    latent = torch.zeros_like(noise)
    return comfy.sample.sample(patcher, noise, steps, cfg, "euler", "simple", text_conditioning(patcher, 1),
                               text_conditioning(patcher, 2), latent, seed=seed, callback=callback, disable_pbar=True)

