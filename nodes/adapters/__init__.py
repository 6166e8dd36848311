"""One adapter per video-DiT family; `adapter_for` picks the one for a loaded model."""
from __future__ import annotations

from .base import Adapter, UnsupportedInput
from .hunyuan_video import HunyuanVideoAdapter
from .kandinsky5 import Kandinsky5Adapter
from .ltxv import LTXVAdapter
from .mochi import MochiAdapter
from .wan import WanAdapter

ADAPTERS: tuple[Adapter, ...] = (WanAdapter(), HunyuanVideoAdapter(), LTXVAdapter(), MochiAdapter(), Kandinsky5Adapter())

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
