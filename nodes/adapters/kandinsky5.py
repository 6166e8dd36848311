"""Kandinsky 5 video (visual blocks: self-attention, then cross-attention)."""
from __future__ import annotations

import torch
from comfy.ldm.kandinsky5.model import Kandinsky5

from .base import Adapter


class Kandinsky5Adapter(Adapter):
    name = "Kandinsky 5"
    model_classes = (Kandinsky5,)
    blocks_attribute = "visual_transformer_blocks"
    # ComfyUI 0.8.0's Kandinsky 5 block replacement calls block(x=...) on a forward that takes
    # visual_embed, so it cannot run; the blocks do set block_index, and self-attention is video-only.
    scope_by_block_index = True

    def zero_context(self, diffusion_model):
        text = diffusion_model.text_embeddings.in_layer.in_features
        pooled = diffusion_model.pooled_text_embeddings.in_layer.in_features
        return torch.zeros(1, 1, text), {"pooled_output": torch.zeros(1, pooled)}
