"""Cross-Attention Guidance on a loaded video DiT (DiffTrack's CAG), as a post-CFG step.

Each guided step adds a perturbed prediction p: the cond pass with, in the
chosen blocks, frame-local self-attention; the result is
CFG + scale * (cond - p). The perturbed pass equals the cond pass up to the
first chosen block, so (prefix reuse) the normal pass records the cond rows'
hidden state there and the perturbed pass skips the earlier blocks and starts
from it. Everything lives in model_options of a clone: the user's model is
never modified.
"""
from __future__ import annotations

import comfy.model_patcher
import comfy.patcher_extension
import comfy.samplers
import torch
from comfy.patcher_extension import WrappersMP

from ..ditcorr.guidance import add_guidance, frame_local_attention
from ..ditcorr.selection import parse_indices
from .adapters import Adapter
from .hooks import AttentionHook, SelfAttentionCall

PREFIX_KEY = "difftrack_cag_prefix"
STREAMS = ("img", "txt")  # the tensors a block carries forward (the image stream; the text stream of joint models)


def choose_cag_blocks(text: str, count: int) -> list[int]:
    """'auto': three blocks from the middle of `count` (n/2, n/2+2, n/2+4); else a list like '13, 17, 21'."""
    if text.strip().lower() == "auto":
        middle = count // 2
        return [b for b in (middle, middle + 2, middle + 4) if b < count]
    return parse_indices(text, "block")


class FrameLocalAttention(AttentionHook):
    """The chosen blocks' self-attention, with each video query seeing only its own frame (and text keys)."""

    def __init__(self, adapter: Adapter, diffusion_model, blocks: list[int], variant: str):
        super().__init__(adapter, diffusion_model, blocks)
        self.variant = variant

    def on_self_attention(self, call: SelfAttentionCall) -> torch.Tensor:
        height, width = call.forward.grid[1:]
        out = frame_local_attention(call.q, call.k, call.v, call.video, height * width, call.text,
                                    call.kwargs.get("mask"), self.variant)  # [B, H, L, D]
        if not call.kwargs.get("skip_output_reshape", False):  # the backends' usual [B, L, H*D]
            out = out.transpose(1, 2).reshape(out.shape[0], out.shape[2], -1)
        return out.to(call.args[0].dtype)


def _cond_rows(options: dict, batch: int) -> list[int]:
    chunks = options.get("cond_or_uncond", [0])
    per_chunk = batch // len(chunks)
    return [row for row in range(batch) if chunks[row // per_chunk] == 0]


class PrefixReuse:
    """Records the cond rows' block input at the first perturbed block; lets the perturbed pass start there."""

    def __init__(self, first_block: int, active):
        self.first_block = first_block
        self.active = active  # sigma -> whether this step is guided (only then is recording worth it)
        self.recorded: tuple[float, dict] | None = None
        self.reusing = False
        self.perturbing = False
        self.skipped_blocks = 0  # blocks skipped in the last perturbed forward (for tests and benchmarks)

    def __deepcopy__(self, memo):
        return self

    def recorder(self, previous):
        """Block patch for the normal pass."""
        def patch(args, extra):
            options = args["transformer_options"]
            sigma = float(options["sigmas"].flatten()[0])
            if not self.perturbing and self.active(sigma):
                rows = _cond_rows(options, args["img"].shape[0])
                self.recorded = (sigma, {k: args[k][rows].clone() for k in STREAMS if torch.is_tensor(args.get(k))})
            return previous(args, extra) if previous else extra["original_block"](args)
        return patch

    def perturbed_options(self, options: dict) -> dict:
        """Skip the blocks before the first perturbed one and start it from the recorded input, when it matches."""
        existing = options["transformer_options"].get("patches_replace", {}).get("dit", {})
        for block in range(self.first_block):
            options = comfy.model_patcher.set_model_options_patch_replace(
                options, self._skip(existing.get(("double_block", block))), "dit", "double_block", block)
        options = comfy.model_patcher.set_model_options_patch_replace(
            options, self._resume(existing.get(("double_block", self.first_block))), "dit", "double_block", self.first_block)
        comfy.patcher_extension.add_wrapper_with_key(WrappersMP.APPLY_MODEL, PREFIX_KEY, self._decide, options,
                                                     is_model_options=True)
        return options

    def _decide(self, executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        recorded = self.recorded
        self.reusing = (recorded is not None and recorded[0] == float(t.flatten()[0])
                        and all(v.shape[0] == x.shape[0] for v in recorded[1].values()))
        self.skipped_blocks = 0
        try:
            return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
        finally:
            self.reusing = False

    def _skip(self, previous):
        def patch(args, extra):
            if not self.reusing:
                return previous(args, extra) if previous else extra["original_block"](args)
            self.skipped_blocks += 1
            return {k: args[k] for k in STREAMS if k in args}  # skipped: its output is replaced at the first perturbed block
        return patch

    def _resume(self, previous):
        def patch(args, extra):
            if self.reusing:
                args = {**args, **self.recorded[1]}
            return previous(args, extra) if previous else extra["original_block"](args)
        return patch


class CrossAttentionGuidance:
    """CAG for one model: blocks, scale, step window (sigma range), variant; deep-copy-proof."""

    def __init__(self, adapter: Adapter, diffusion_model, blocks: list[int], scale: float, variant: str,
                 sigma_low: float, sigma_high: float, reuse_prefix: bool = True):
        self.frame_local = FrameLocalAttention(adapter, diffusion_model, blocks, variant)
        self.scale, self.sigma_low, self.sigma_high = scale, sigma_low, sigma_high
        # Block-index scoping has no block replacements to skip blocks with; those families run the whole pass.
        self.prefix = PrefixReuse(self.frame_local.blocks[0], self.active) if reuse_prefix and not adapter.scope_by_block_index else None

    def __deepcopy__(self, memo):
        return self

    def active(self, sigma: float) -> bool:
        return self.scale != 0 and self.sigma_low <= sigma <= self.sigma_high

    def patch(self, patcher):
        """A clone of `patcher` guided by CAG in any sampler (a post-CFG step, as core's SkipLayerGuidanceDiT)."""
        model = patcher.clone()
        if self.prefix is not None:
            existing = model.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {})
            model.set_model_patch_replace(self.prefix.recorder(existing.get(("double_block", self.prefix.first_block))),
                                          "dit", "double_block", self.prefix.first_block)
        model.set_model_sampler_post_cfg_function(self.post_cfg)
        return model

    def perturbed_options(self, model_options: dict) -> dict:
        options = self.frame_local.install_options(model_options)
        return self.prefix.perturbed_options(options) if self.prefix is not None else options

    def post_cfg(self, args: dict) -> torch.Tensor:
        if not self.active(float(args["sigma"].flatten()[0])):
            return args["denoised"]
        if self.prefix is not None:
            self.prefix.perturbing = True
        try:
            (perturbed,) = comfy.samplers.calc_cond_batch(args["model"], [args["cond"]], args["input"], args["sigma"],
                                                          self.perturbed_options(args["model_options"]))
        finally:
            if self.prefix is not None:
                self.prefix.perturbing = False
                self.prefix.recorded = None  # one step's record is used once, then released
        return add_guidance(args["denoised"], args["cond_denoised"], perturbed, self.scale)
