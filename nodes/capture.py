"""Recording per-head q/k of chosen blocks and steps during sampling."""
from __future__ import annotations

from dataclasses import dataclass

import comfy.model_management
import torch

from ..ditcorr import QK, CaptureKey
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
    storage: "gpu" keeps captures on the model's device, "cpu" in CPU memory, "auto" on the device while they fit
        in a share of its free memory (FeatureStore).
    stop_after_last_block: end each forward after the deepest chosen block
        (the extraction path; a generation must run whole).
    """

    steps: list[int] | None = None
    sigma_range: tuple[float, float] | None = None
    branches: tuple[str, ...] = ("cond",)
    dtype: torch.dtype | None = None
    storage: str = "gpu"
    stop_after_last_block: bool = False


class FeatureStore:
    """Where captured q/k are kept, in the storage dtype.

    The dtype conversion happens where the model computes. Copies to CPU memory
    from a GPU go to pinned buffers on a side stream, so the forward never
    waits for them; synchronize() before the features are read. "auto" keeps
    captures on the device while all it kept there this run fit in AUTO_SHARE
    of the memory that was free (beyond ComfyUI's inference reserve) when the
    run's first capture came, and puts the rest in CPU memory.
    """

    AUTO_SHARE = 0.5
    PLACES = ("auto", "gpu", "cpu")

    def __init__(self, place: str = "gpu"):
        if place not in self.PLACES:
            raise ValueError(f"Unknown storage {place!r}; use one of {self.PLACES}.")
        self.place = place
        self._stream: torch.cuda.Stream | None = None
        self.reset()

    def reset(self) -> None:
        """A new run: nothing kept yet, the free memory measured again at its first capture."""
        self.kept = {"device": 0, "cpu": 0}  # bytes
        self.budget: int | None = None

    def keep(self, tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """A copy of `tensor` in `dtype`, contiguous, where this store keeps it."""
        staged = torch.empty(tensor.shape, dtype=dtype, device=tensor.device)
        staged.copy_(tensor)
        if not self._offloads(staged):
            self.kept["device" if staged.device.type != "cpu" else "cpu"] += staged.nbytes
            return staged
        self.kept["cpu"] += staged.nbytes
        if self._stream is None:
            self._stream = torch.cuda.Stream(staged.device)
        kept = torch.empty(staged.shape, dtype=dtype, pin_memory=True)
        self._stream.wait_stream(torch.cuda.current_stream(staged.device))
        with torch.cuda.stream(self._stream):
            kept.copy_(staged, non_blocking=True)
        staged.record_stream(self._stream)  # its memory is not reused before the copy is done
        return kept

    def _offloads(self, staged: torch.Tensor) -> bool:
        if staged.device.type != "cuda" or self.place == "gpu":
            return False
        if self.place == "cpu":
            return True
        if self.budget is None:
            free = comfy.model_management.get_free_memory(staged.device)
            self.budget = int(self.AUTO_SHARE * max(0, free - comfy.model_management.minimum_inference_memory()))
        return self.kept["device"] + staged.nbytes > self.budget

    def synchronize(self) -> None:
        """Wait for the copies to CPU memory: call before the features are read."""
        if self._stream is not None:
            self._stream.synchronize()

    def summary(self) -> str:
        gib = lambda count: f"{count / 2**30:.2f} GiB"  # noqa: E731
        text = f"captured q/k: {gib(self.kept['device'])} on the GPU, {gib(self.kept['cpu'])} in CPU memory"
        if self.place == "auto" and self.budget is not None:
            text += f" (auto: up to {gib(self.budget)} on the GPU, half its free memory)"
        return text


class CaptureSession(AttentionHook):
    """q/k capture hooked on a model; survives ModelPatcher clones; reset at every sampler run."""

    def __init__(self, adapter, diffusion_model, blocks: list[int], request: CaptureRequest):
        super().__init__(adapter, diffusion_model, blocks)
        self.request = request
        self.store = FeatureStore(request.storage)
        self.chunk = 0
        self.on_run_start()

    def on_run_start(self) -> None:
        if self.chunk == 0:  # a new generation or extraction (an extraction's later chunks are runs of their own)
            self.store.reset()
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
        dtype = self.request.dtype or q.dtype
        for row in range(info.batch):
            branch = BRANCH_OF_COND.get(cond_of_row(info.cond_or_uncond, info.batch, row))
            if branch not in self.request.branches:
                continue
            key = CaptureKey(call.block, info.step, branch, row % per_cond, self.chunk)
            if key in self.captures:  # a multi-stage sampler's later evaluation within the same step
                continue
            self.captures[key] = QK(self.store.keep(q[row].reshape(heads, *info.grid, dim), dtype),
                                    self.store.keep(k[row].reshape(heads, *info.grid, dim), dtype), info.sigma)

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
