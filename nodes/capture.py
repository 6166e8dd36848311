"""Recording per-head q/k of chosen blocks and steps during sampling."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..ditcorr import QK, CaptureKey, DitFeatures
from .hooks import AttentionHook, ForwardInfo, SelfAttentionCall
from .patching import BRANCH_OF_COND, cond_of_row, rows_per_cond


class ForwardStopped(Exception):
    """Raised inside a forward once every requested block has been read (the rest cannot change q/k)."""


@dataclass
class CaptureRequest:
    """What to keep.

    steps: schedule step indices, None for every step.
    sigma_range: (low, high) σ bounds, None for any σ.
    branches: which rows: ("cond",), ("uncond",) or both.
    dtype: storage dtype, None to keep the model's.
    offload: keep captures in CPU memory instead of on the model's device.
    stop_after_last_block: end each forward after the deepest chosen block
        (the extraction path; a generation must run whole).
    """

    steps: list[int] | None = None
    sigma_range: tuple[float, float] | None = None
    branches: tuple[str, ...] = ("cond",)
    dtype: torch.dtype | None = None
    offload: bool = False
    stop_after_last_block: bool = False


class CaptureSession(AttentionHook):
    """q/k capture hooked on a model; survives ModelPatcher clones; reset at every sampler run."""

    def __init__(self, adapter, diffusion_model, blocks: list[int], request: CaptureRequest):
        super().__init__(adapter, diffusion_model, blocks)
        self.request = request
        self.chunk = 0
        self.on_run_start()

    def on_run_start(self) -> None:
        # New containers, not cleared ones: features handed out earlier keep their tensors.
        self.captures: dict[CaptureKey, QK] = {}
        self.steps_run: set[int] = set()
        self.blocks_reached: set[tuple[int, int]] = set()

    def wants(self, info: ForwardInfo) -> bool:
        steps, bounds = self.request.steps, self.request.sigma_range
        if steps is not None and info.step not in steps:
            return False
        return bounds is None or bounds[0] <= info.sigma <= bounds[1]

    def on_forward(self, info: ForwardInfo) -> None:
        if self.wants(info):
            self.steps_run.add(info.step)

    def on_self_attention(self, call: SelfAttentionCall) -> torch.Tensor:
        info = call.forward
        if self.wants(info):
            self.blocks_reached.add((call.block, info.step))
            self._store(call)
            if self.request.stop_after_last_block and call.block == self.blocks[-1]:
                raise ForwardStopped()
        return call.run()

    def _store(self, call: SelfAttentionCall) -> None:
        info = call.forward
        q, k = call.q[:, :, call.video], call.k[:, :, call.video]  # [B, H, N, D]
        heads, dim = q.shape[1], q.shape[3]
        per_cond = rows_per_cond(info.cond_or_uncond, info.batch)
        device = torch.device("cpu") if self.request.offload else q.device
        dtype = self.request.dtype or q.dtype
        for row in range(info.batch):
            branch = BRANCH_OF_COND.get(cond_of_row(info.cond_or_uncond, info.batch, row))
            if branch not in self.request.branches:
                continue
            key = CaptureKey(call.block, info.step, branch, row % per_cond, self.chunk)
            if key in self.captures:  # a multi-stage sampler's later evaluation within the same step
                continue
            stored = [torch.empty((heads, *info.grid, dim), device=device, dtype=dtype) for _ in range(2)]
            stored[0].copy_(q[row].reshape(heads, *info.grid, dim))
            stored[1].copy_(k[row].reshape(heads, *info.grid, dim))
            self.captures[key] = QK(stored[0], stored[1], info.sigma)

    def missing(self) -> str | None:
        """Why nothing (or not everything asked for) was captured, or None when all is there."""
        steps = self.request.steps if self.request.steps is not None else sorted(self.steps_run)
        never_run = [s for s in steps if s not in self.steps_run]
        skipped = [(b, s) for s in steps if s in self.steps_run for b in self.blocks if (b, s) not in self.blocks_reached]
        if self.captures and not never_run and not skipped:
            return None
        if not self.steps_run:
            return ("The capture saw no forward of the model at the requested steps/σ: connect Attention Capture's MODEL "
                    "to the sampler, and check that the chosen steps or σ range fall inside the sampler's schedule.")
        if skipped:
            listed = ", ".join(f"block {b} at step {s}" for b, s in skipped[:6])
            return (f"The model ran but never reached {listed}: a step cache (EasyCache, TeaCache, MagCache, ...) "
                    "skipped those forwards. Remove or bypass the cache for the capture run, or choose other steps.")
        if never_run:
            return (f"Steps {never_run} never ran inside the σ range: the sampler's schedule is shorter. "
                    "Choose steps inside the schedule.")
        return (f"The model ran at steps {sorted(self.steps_run)} but no rows of the requested branches "
                f"{list(self.request.branches)} were in its batches (with cfg = 1 there is no uncond row).")
