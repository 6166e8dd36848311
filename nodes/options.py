"""Reading node widget values into core arguments, with messages that say what to change."""
from __future__ import annotations

import torch

from ..ditcorr import parse_indices
from .adapters import Adapter
from .capture import CaptureRequest

STORAGE_DTYPES = {"model": None, "bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
STORAGE_PLACES = ("cpu", "gpu")
BRANCH_CHOICES = {"cond": ("cond",), "uncond": ("uncond",), "both": ("cond", "uncond")}


def choose_blocks(text: str, adapter: Adapter, diffusion_model) -> list[int]:
    """'auto' is the middle block (correspondence emerges in the middle of the stack); else a list like '13, 17'."""
    if text.strip().lower() == "auto":
        return [adapter.block_count(diffusion_model) // 2]
    return parse_indices(text, "block")


def capture_request(steps: str, sigma_low: float, sigma_high: float, branches: str, dtype: str,
                    storage: str) -> CaptureRequest:
    if sigma_low > sigma_high:
        raise ValueError(f"sigma_low ({sigma_low}) is above sigma_high ({sigma_high}): swap them.")
    return CaptureRequest(
        steps=None if steps.strip().lower() == "all" else parse_indices(steps, "step"),
        sigma_range=(sigma_low, sigma_high),
        branches=BRANCH_CHOICES[branches],
        dtype=STORAGE_DTYPES[dtype],
        offload=storage == "cpu",
    )
