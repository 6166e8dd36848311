"""q/k of a block's self-attention recomputed from the module's own weights, from observed inputs.

Each observer hooks (test-side, read-only) the input of the block's attention
module and recomputes projections, q/k norms and RoPE from that module's
weights, giving [B, H, L_video, D] per forward.
"""
from __future__ import annotations

import torch


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


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, length, width = x.shape
    return x.reshape(b, length, heads, width // heads).transpose(1, 2)


def wan(block):
    attention = block.self_attn

    def reference(args, kwargs):
        x, freqs = args[0], args[1]
        def project(layer, norm):
            y = rms(linear(x, layer), norm).reshape(*x.shape[:2], attention.num_heads, -1)
            return rope_pairs(y, freqs).transpose(1, 2)
        return project(attention.q, attention.norm_q), project(attention.k, attention.norm_k)
    return attention, reference


def hunyuan_video(block):
    attention = block.img_attn

    def keep_pe(module, args, kwargs):
        block.observed_pe = kwargs["pe"]  # the rotation of the joint [img, txt] sequence
    block.register_forward_pre_hook(keep_pe, with_kwargs=True)

    def reference(args, kwargs):
        qkv = linear(args[0], attention.qkv)
        b, length, _ = qkv.shape
        q, k, _ = qkv.reshape(b, length, 3, block.num_heads, -1).permute(2, 0, 3, 1, 4)
        freqs = block.observed_pe[:, :, :length]
        return rope_pairs(rms(q, attention.norm.query_norm), freqs), rope_pairs(rms(k, attention.norm.key_norm), freqs)
    return attention.qkv, reference


def ltxv(block):
    from comfy.ldm.lightricks.model import apply_rotary_emb
    attention = block.attn1

    def reference(args, kwargs):
        x, pe = args[0], kwargs["pe"]
        q = apply_rotary_emb(rms(linear(x, attention.to_q), attention.q_norm), pe)
        k = apply_rotary_emb(rms(linear(x, attention.to_k), attention.k_norm), pe)
        return _heads(q, attention.heads), _heads(k, attention.heads)
    return attention, reference


def mochi(block):
    from comfy.ldm.genmo.joint_model.asymm_models_joint import modulated_rmsnorm
    from comfy.ldm.genmo.joint_model.temporal_rope import apply_rotary_emb_qk_real
    attention = block.attn

    def reference(args, kwargs):
        x = modulated_rmsnorm(args[0].float(), kwargs["scale_x"].float())
        qkv = linear(x, attention.qkv_x)
        q, k, _ = qkv.reshape(*x.shape[:2], 3, attention.num_heads, -1).unbind(2)
        rotate = lambda t: apply_rotary_emb_qk_real(t, kwargs["rope_cos"].float(), kwargs["rope_sin"].float())
        return (rotate(rms(q, attention.q_norm_x)).transpose(1, 2),
                rotate(rms(k, attention.k_norm_x)).transpose(1, 2))
    return attention, reference


def kandinsky5(block):
    attention = block.self_attention

    def reference(args, kwargs):
        x, freqs = args[0], args[1]
        def project(layer, norm):
            y = rms(linear(x, layer).reshape(*x.shape[:2], attention.num_heads, -1), norm)
            return rope_pairs(y, freqs).transpose(1, 2)
        return project(attention.to_query, attention.query_norm), project(attention.to_key, attention.key_norm)
    return attention, reference


class Observer:
    """Records the reference q/k of one block for every forward."""

    def __init__(self, case: str, diffusion_model, block_index: int):
        from difftrack_pack.nodes.adapters import adapter_for

        from .families import CASES

        adapter = adapter_for(diffusion_model)
        block = getattr(diffusion_model, adapter.blocks_attribute)[block_index]
        module, self._reference = CASES[case].qk_reference(block)
        self.forwards: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._handle = module.register_forward_pre_hook(self._observe, with_kwargs=True)

    def _observe(self, module, args, kwargs):
        with torch.no_grad():
            self.forwards.append(self._reference(args, kwargs))

    def remove(self):
        self._handle.remove()
