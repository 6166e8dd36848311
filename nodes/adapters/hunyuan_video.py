"""HunyuanVideo 1 and 1.5 (double-stream blocks; text joins the same attention)."""
from __future__ import annotations

import torch
from comfy.ldm.hunyuan_video.model import HunyuanVideo

from .base import Adapter


class HunyuanVideoAdapter(Adapter):
    name = "HunyuanVideo 1/1.5"
    model_classes = (HunyuanVideo,)
    blocks_attribute = "double_blocks"
    streams = ("img", "txt")
    round_up = False  # img_in is a strided conv: partial patches are dropped

    def zero_context(self, diffusion_model):
        # The model's conditioning always carries a pooled CLIP vector, used or not.
        return torch.zeros(1, 1, diffusion_model.params.context_in_dim), {"pooled_output": torch.zeros(1, 768)}

    def vae_ratios_for(self, diffusion_model):
        # 1.5 patchifies 1x1x1 in a 16x-spatial VAE's latent; 1 uses 1x2x2 on an 8x one.
        return (4, 16) if list(diffusion_model.patch_size) == [1, 1, 1] else (4, 8)
