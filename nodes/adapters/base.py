"""What the hook layer needs to know about one video-DiT family.

Every supported family calls ComfyUI's `optimized_attention` for the block's
self-attention first, before any cross-attention, so the hook layer needs no
per-family knowledge of the call itself; q/k layout is read off the call
(`skip_reshape`). An adapter answers the rest: which modules it handles, how
many hookable blocks there are, how latents become tokens, where the video
tokens sit in the block's image stream, and what a "no prompt" conditioning is.
"""
from __future__ import annotations

import math

import torch


class UnsupportedInput(ValueError):
    """The model was called with inputs whose token layout the capture cannot read."""


class Adapter:
    name = ""
    # Diffusion-model classes handled (exact classes: subclasses may add tokens).
    model_classes: tuple[type, ...] = ()
    # Attribute holding the hookable blocks, and their key in patches_replace["dit"]: (block_key, i).
    blocks_attribute = "blocks"
    block_key = "double_block"
    # Key of the image-stream tensor in the block-replacement args.
    image_stream_key = "img"
    # The tensors a block replacement hands on to the next block (its return dict): the image stream, and the
    # text stream of joint-attention models.
    streams: tuple[str, ...] = ("img",)
    # Scope hooks by transformer_options["block_index"] instead of a dit block replacement
    # (for families whose replacement path is unusable); needs video-only self-attention.
    scope_by_block_index = False
    # Pad-to-patch models round token counts up; conv/reshape patchifiers round down.
    round_up = True
    # (temporal, spatial) compression of the family's usual VAE.
    vae_ratios = (4, 8)
    # Modules whose model code calls a module-level `apply_rope1` (ComfyUI's RoPE op): where a differentiable one
    # goes while gradients pass through the model (nodes/differentiable.py).
    rope_modules: tuple[str, ...] = ()

    def head_dim(self, diffusion_model: torch.nn.Module) -> int:
        """Channels per self-attention head (what position tables pair up)."""
        raise NotImplementedError(f"The pack does not read {self.name}'s head size yet.")

    def block_count(self, diffusion_model: torch.nn.Module) -> int:
        return len(getattr(diffusion_model, self.blocks_attribute))

    def patch_size(self, diffusion_model: torch.nn.Module) -> tuple[int, int, int]:
        return tuple(diffusion_model.patch_size)

    def token_grid(self, diffusion_model: torch.nn.Module, latent_shape: torch.Size) -> tuple[int, int, int]:
        """(T, h, w) token grid of a [B, C, T, H, W] latent."""
        divide = (lambda a, b: math.ceil(a / b)) if self.round_up else (lambda a, b: a // b)
        return tuple(divide(size, patch) for size, patch in zip(latent_shape[-3:], self.patch_size(diffusion_model)))

    def video_suffix_tokens(self, diffusion_model: torch.nn.Module, grid: tuple[int, int, int], model_kwargs: dict) -> int:
        """Tokens after the video tokens in the image stream (video tokens are the last ones before them)."""
        return 0

    def check_inputs(self, model_kwargs: dict) -> None:
        """Raise UnsupportedInput for model inputs that break the token grid."""

    def image_stream_length(self, block_args: dict) -> int:
        return block_args[self.image_stream_key].shape[1]

    def zero_context(self, diffusion_model: torch.nn.Module) -> tuple[torch.Tensor, dict]:
        """A "no prompt" text context and extra cond entries: the fallback when no CONDITIONING is wired."""
        raise NotImplementedError

    def vae_ratios_for(self, diffusion_model: torch.nn.Module) -> tuple[int, int]:
        return self.vae_ratios
