"""Cooperating with whatever else is patched on a model: one place for the three idioms every hook needs.

- A dit block replacement is chained onto the one another node (or an earlier
  hook of ours) already set for that block, never put in its place.
- An attention override calls through the override that was set before it.
- A forward's batch is `len(cond_or_uncond)` equal chunks of rows, one per
  cond (0 = positive, 1 = negative), in no fixed order.
"""
from __future__ import annotations

from typing import Callable

import comfy.model_patcher
import torch

BlockPatch = Callable[[dict, dict], dict]
COND, UNCOND = 0, 1
BRANCH_OF_COND = {COND: "cond", UNCOND: "uncond"}


def run_block(previous: BlockPatch | None, args: dict, extra: dict) -> dict:
    """Run a block through the replacement that was there before ours, or the block itself."""
    return previous(args, extra) if previous else extra["original_block"](args)


def call_through(previous: Callable | None, func: Callable, args: tuple, kwargs: dict) -> torch.Tensor:
    """Run the attention backend, through the override another node installed before us if there is one."""
    return previous(func, *args, **kwargs) if previous else func(*args, **kwargs)


def chain_block_patch(model_options: dict, block_key: str, block: int,
                      make_patch: Callable[[BlockPatch | None], BlockPatch]) -> dict:
    """A copy of `model_options` whose replacement of (block_key, block) is `make_patch(the one already there)`."""
    existing = model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {})
    return comfy.model_patcher.set_model_options_patch_replace(
        model_options, make_patch(existing.get((block_key, block))), "dit", block_key, block)


def rows_per_cond(cond_or_uncond: list[int], batch: int) -> int:
    return batch // len(cond_or_uncond)


def cond_of_row(cond_or_uncond: list[int], batch: int, row: int) -> int:
    """Which cond (COND or UNCOND) batch row `row` belongs to."""
    return cond_or_uncond[row // rows_per_cond(cond_or_uncond, batch)]


def rows_of(cond_or_uncond: list[int], batch: int, cond: int = COND) -> list[int]:
    """The batch rows of one cond, in order."""
    return [row for row in range(batch) if cond_of_row(cond_or_uncond, batch, row) == cond]
