"""Genmo Mochi (asymmetric joint attention: video tokens first, then text)."""
from __future__ import annotations

import torch
from comfy.ldm.genmo.joint_model.asymm_models_joint import AsymmDiTJoint

from .base import Adapter


class MochiAdapter(Adapter):
    name = "Mochi"
    model_classes = (AsymmDiTJoint,)
    streams = ("img", "txt")
    round_up = False
    vae_ratios = (6, 8)

    def patch_size(self, diffusion_model):
        return (1, diffusion_model.patch_size, diffusion_model.patch_size)

    def zero_context(self, diffusion_model):
        # Text encoders hand over an integer mask of the real tokens; the model needs one.
        tokens = 256
        return torch.zeros(1, tokens, diffusion_model.t5_yproj.in_features), {"attention_mask": torch.ones(1, tokens, dtype=torch.long)}
