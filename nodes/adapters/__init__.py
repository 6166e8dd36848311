"""One adapter per video-DiT family, one module each in this folder; `adapter_for` picks the one for a loaded model.

Every module here is imported and every Adapter subclass in it is registered: adding a family is one new file
(and its row in the development kit's family table, devkit/families.py, which the conformance test checks).
"""
from __future__ import annotations

import importlib
import pkgutil

from .base import Adapter, UnsupportedInput


def _discover() -> tuple[Adapter, ...]:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return tuple(sorted((kind() for kind in Adapter.__subclasses__()), key=lambda adapter: adapter.name.lower()))


ADAPTERS: tuple[Adapter, ...] = _discover()

# Families ComfyUI can load that we know we cannot hook, with the reason.
REFUSED = {
    "MiniTrainDIT": "Cosmos-Predict2 blocks offer no patches_replace and no block_index, so one block cannot be hooked",
    "LTXAVModel": "LTX-2's audio-video blocks interleave audio attention; only the video-only LTXV is supported",
}


def supported_names() -> str:
    return ", ".join(adapter.name for adapter in ADAPTERS)


def adapter_for(diffusion_model) -> Adapter:
    """The adapter whose family this diffusion model belongs to; ValueError naming the supported ones otherwise."""
    kind = type(diffusion_model)
    for adapter in ADAPTERS:
        if kind in adapter.model_classes:
            return adapter
    reason = REFUSED.get(kind.__name__)
    detail = f" ({reason})" if reason else ""
    raise ValueError(f"{kind.__name__} is not a supported video DiT{detail}. Supported: {supported_names()}.")


__all__ = ["ADAPTERS", "Adapter", "UnsupportedInput", "adapter_for", "supported_names"]
