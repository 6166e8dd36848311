"""Wan 2.1 / 2.2 (t2v, i2v, ti2v) and the main blocks of its VACE and camera variants."""
from __future__ import annotations

import torch
from comfy.ldm.wan.model import CameraWanModel, VaceWanModel, WanModel

from .base import Adapter


class WanAdapter(Adapter):
    name = "Wan 2.1/2.2"
    model_classes = (WanModel, VaceWanModel, CameraWanModel)
    blocks_attribute = "blocks"
    rope_modules = ("comfy.ldm.wan.model",)

    def video_suffix_tokens(self, diffusion_model, grid, model_kwargs):
        # Phantom-style subject frames are concatenated after the video along time.
        extra = model_kwargs.get("time_dim_concat")
        if extra is None:
            return 0
        return self.token_grid(diffusion_model, extra.shape)[0] * grid[1] * grid[2]

    def head_dim(self, diffusion_model):
        return diffusion_model.dim // diffusion_model.num_heads

    def zero_context(self, diffusion_model):
        text_dim = diffusion_model.text_embedding[0].in_features
        return torch.zeros(1, diffusion_model.text_len, text_dim), {}

    def vae_ratios_for(self, diffusion_model):
        # Wan 2.2 TI2V-5B works in the 48-channel, 16x spatial VAE's latent space.
        return (4, 16) if diffusion_model.out_dim == 48 else (4, 8)
