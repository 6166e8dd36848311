"""What every node of the pack shares: category, custom types, common inputs and tooltips, the model's adapter,
block choice, and reading widget values into core arguments with messages that say what to change."""
from __future__ import annotations

import comfy.model_management
import torch
from comfy_api.latest import io

from ..ditcorr import DeviceWindow, parse_indices
from .adapters import Adapter, adapter_for
from .capture import CaptureRequest, FeatureStore

CATEGORY = "DiffTrack"
DitFeaturesType = io.Custom("DIT_FEATURES")  # difftrack_pack.ditcorr.DitFeatures
DitCaptureType = io.Custom("DIT_CAPTURE")  # capture_nodes.CaptureHandle

STORAGE_DTYPES = {"model": None, "bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
BRANCH_CHOICES = {"cond": ("cond",), "uncond": ("uncond",), "both": ("cond", "uncond")}

# What `auto` means for each purpose a node chooses blocks for ('all' is every available block for any purpose).
AUTO_BLOCKS = {
    "read": "the middle block, n/2 (correspondence is strongest in the middle of the stack; DiffTrack: block 17 of "
            "30 for CogVideoX, double block 16 for HunyuanVideo)",
    "guide": "three blocks from the middle: n/2, n/2+2, n/2+4 (Wan 1.3B: 15, 17, 19; Wan 14B: 20, 22, 24; "
             "HunyuanVideo: 10, 12, 14; DiffTrack used 13, 17, 21 of CogVideoX-2B's 30)",
    "fuse": "every captured block, fused",
    "analyse": "every block of the model",
}
BLOCK_SYNTAX = "'15', '13, 17, 21' or '10-12' (0-based), 'all', or 'auto'"
BEST_BLOCK = ("'best' = the block with the highest label-free score on this video (Correspondence Analysis at this "
              "σ: one extra forward of 13 frames spread over the video captures every block; the node says which it "
              "chose)")


def blocks_tooltip(what: str, purpose: str, best: bool = False) -> str:
    """The tooltip of a `blocks` input: what the blocks are for, the syntax, what `auto` (and `best`, where the node
    offers it) means here."""
    syntax = BLOCK_SYNTAX.replace(", or 'auto'", ", 'auto' or 'best'") if best else BLOCK_SYNTAX
    return f"{what}: {syntax}. 'auto' = {AUTO_BLOCKS[purpose]}." + (f" {BEST_BLOCK}." if best else "")


def wants_best(text: str) -> bool:
    """Whether a `blocks` widget asks for the block the label-free score chooses."""
    return text.strip().lower() == "best"


def resolve_blocks(text: str, purpose: str, available: list[int], best: bool = False) -> list[int]:
    """The blocks a `blocks` widget asks for. `available`: the model's blocks (range(n)) or the captured ones.

    'auto' follows AUTO_BLOCKS[purpose]; 'all' is every available block, and so is 'best' (the candidates the
    label-free score chooses among: nodes/analysis.py); else a list as parse_indices reads it (range checks, with
    the model's block count, happen where the blocks are hooked or selected). `best`: whether this node offers it."""
    choice = text.strip().lower()
    available = sorted(available)
    if choice == "best" and not best:
        raise ValueError("blocks 'best' chooses a block by scoring it on a video; this node has none to score: name "
                         "the blocks, use 'auto', or run Correspondence Analysis and wire its blocks in.")
    if choice in ("all", "best"):
        return available
    if choice != "auto":
        return parse_indices(text, "block")
    if purpose in ("fuse", "analyse"):
        return available
    middle = len(available) // 2
    offsets = (0, 2, 4) if purpose == "guide" else (0,)
    return [available[middle + o] for o in offsets if middle + o < len(available)]


def check_same_video(images: torch.Tensor, features) -> None:
    """ValueError unless `images` has as many frames as the video `features` were extracted from."""
    if images.shape[0] != features.frame_count:
        raise ValueError(f"The images have {images.shape[0]} frames but the features were extracted from "
                         f"{features.frame_count}: connect the same video.")


def model_and_adapter(model) -> tuple[torch.nn.Module, Adapter]:
    """The diffusion model inside a ComfyUI MODEL and its family's adapter (ValueError naming the supported ones)."""
    diffusion_model = model.get_model_object("diffusion_model")
    return diffusion_model, adapter_for(diffusion_model)


def model_blocks(text: str, purpose: str, model, best: bool = False) -> list[int]:
    """resolve_blocks over the blocks of a MODEL."""
    diffusion_model, adapter = model_and_adapter(model)
    return resolve_blocks(text, purpose, list(range(adapter.block_count(diffusion_model))), best)


def storage_inputs() -> list:
    """Where and in which precision captured q/k are kept."""
    return [
        io.Combo.Input("storage_dtype", options=list(STORAGE_DTYPES), default="model",
                       tooltip="Storage precision of captured q/k; 'model' keeps the model's own dtype (exact)."),
        io.Combo.Input("storage", options=list(FeatureStore.PLACES), default="auto",
                       tooltip="Where captured q/k are kept. gpu: VRAM, no copies. cpu: CPU memory, copied in the "
                               "background while the model runs and streamed back to the GPU a chunk at a time when "
                               "read (a few percent slower, VRAM stays free for long videos). auto: the GPU while "
                               "they fit in half of its free memory, the rest in CPU memory; the node says what it "
                               "chose."),
    ]


def compute_window():
    """Where nodes compute on features: the device ComfyUI runs models on, features streamed there a chunk at a time
    (a hook for tests: on a CPU-only machine they make it copy so the streaming path runs)."""
    return DeviceWindow(comfy.model_management.get_torch_device())


def capture_request(steps: str, sigma_low: float, sigma_high: float, branches: str, dtype: str,
                    storage: str) -> CaptureRequest:
    if sigma_low > sigma_high:
        raise ValueError(f"sigma_low ({sigma_low}) is above sigma_high ({sigma_high}): swap them.")
    return CaptureRequest(
        steps=None if steps.strip().lower() == "all" else parse_indices(steps, "step"),
        sigma_range=(sigma_low, sigma_high),
        branches=BRANCH_CHOICES[branches],
        dtype=STORAGE_DTYPES[dtype],
        storage=storage,
    )
