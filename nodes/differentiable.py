"""Forwards through a loaded DiT that gradients can pass back through, to the input latent only.

Two things stand in the way inside ComfyUI. Nodes run under torch.inference_mode, so the weights of a model
loaded by a node are inference tensors, which autograd refuses to save for a backward pass: they are replaced
by equal ordinary tensors (new Parameter objects, as ComfyUI's own weight patching sets them; values, dtype and
device unchanged, requires_grad off). And comfy_kitchen's RoPE op, which several families call, has no
backward: while the forwards run, the family's modules see a differentiable RoPE instead, restored afterwards
whatever happens.
"""
from __future__ import annotations

import contextlib
import importlib
from typing import Iterator

import torch

from .adapters import Adapter


def rope_reference(x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
    """ComfyUI's RoPE (comfy.ldm.flux.math's fallback apply_rope1) in plain torch ops, so autograd can pass it."""
    pairs = x.to(dtype=freqs_cis.dtype).reshape(*x.shape[:-1], -1, 1, 2)
    out = freqs_cis[..., 0] * pairs[..., 0] + freqs_cis[..., 1] * pairs[..., 1]
    return out.reshape(*x.shape).type_as(x)


def ordinary_weights(module: torch.nn.Module) -> int:
    """Replace every parameter and buffer of `module` that is an inference tensor by an equal ordinary one
    (requires_grad off); returns how many were replaced."""
    replaced = 0
    with torch.inference_mode(False):
        for owner in module.modules():
            for name, parameter in list(owner.named_parameters(recurse=False)):
                if parameter.is_inference():
                    setattr(owner, name, torch.nn.Parameter(parameter.clone(), requires_grad=False))
                    replaced += 1
                else:
                    parameter.requires_grad_(False)
            for name, buffer in list(owner.named_buffers(recurse=False)):
                if buffer is not None and buffer.is_inference():
                    owner.register_buffer(name, buffer.clone(), persistent=name not in owner._non_persistent_buffers_set)
                    replaced += 1
    return replaced


@contextlib.contextmanager
def differentiable_forwards(adapter: Adapter, diffusion_model: torch.nn.Module) -> Iterator[None]:
    """A scope in which forwards of `diffusion_model` can be differentiated with respect to their inputs (gradients
    enabled, inference mode off): its weights made ordinary (ordinary_weights; they stay so, being equal), the
    family's RoPE swapped for rope_reference and restored on exit, error or not."""
    ordinary_weights(diffusion_model)
    swapped = []
    try:
        for name in adapter.rope_modules:
            module = importlib.import_module(name)
            swapped.append((module, module.apply_rope1))
            module.apply_rope1 = rope_reference
        with torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        for module, original in reversed(swapped):
            module.apply_rope1 = original
