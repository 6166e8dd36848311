"""LTX-Video (video-only LTXV; LTX-2's audio-video model is not supported yet)."""
from __future__ import annotations

import torch
from comfy.ldm.lightricks.model import LTXVModel

from .base import Adapter, UnsupportedInput


class LTXVAdapter(Adapter):
    name = "LTXV"
    model_classes = (LTXVModel,)
    blocks_attribute = "transformer_blocks"
    vae_ratios = (8, 32)

    def patch_size(self, diffusion_model):
        return (1, 1, 1)

    def check_inputs(self, model_kwargs):
        if model_kwargs.get("keyframe_idxs") is not None:
            raise UnsupportedInput(
                "LTXV guide frames (LTXVAddGuide / keyframe conditioning) add tokens outside the video's token grid; "
                "run the capture without guide frames."
            )

    def zero_context(self, diffusion_model):
        # Text encoders hand over an integer mask of the real tokens; the model needs one.
        tokens = 128
        context = torch.zeros(1, tokens, diffusion_model.caption_projection.linear_1.in_features)
        return context, {"attention_mask": torch.ones(1, tokens, dtype=torch.long)}
