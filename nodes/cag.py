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

from dataclasses import dataclass

import comfy.samplers
import torch

from ..ditcorr.guidance import add_guidance, frame_local_attention
from .adapters import Adapter
from .hooks import AttentionHook, SelfAttentionCall
from .patching import COND, chain_block_patch, rows_of, run_block

PERTURBED_KEY = "difftrack_cag_perturbed"  # set in the perturbed pass's transformer_options


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


@dataclass
class StepRecord:
    """What one guided step's cond pass leaves for its perturbed pass: the cond rows' input of the first perturbed
    block (each stream the block carries forward), at this σ."""

    sigma: float
    streams: dict[str, torch.Tensor]
    skipped_blocks: int = 0  # blocks the perturbed pass skipped thanks to it (tests and benchmarks read it)

    def fits(self, args: dict) -> bool:
        """Whether a block call belongs to a forward this record can start: same σ, same number of rows."""
        sigma = float(args["transformer_options"]["sigmas"].flatten()[0])
        return sigma == self.sigma and all(args[k].shape[0] == v.shape[0] for k, v in self.streams.items())


class PrefixReuse:
    """Records the cond rows' block input at the first perturbed block; lets the perturbed pass start there.

    The only state is the current step's record: the normal pass writes it, the perturbed pass of the same step
    takes it (once) and is built around it; a forward it does not fit runs whole."""

    def __init__(self, adapter: Adapter, first_block: int, active):
        self.adapter = adapter
        self.first_block = first_block
        self.active = active  # sigma -> whether this step is guided (only then is recording worth it)
        self.record: StepRecord | None = None  # written by the cond pass, taken by the perturbed pass
        self.last_used: StepRecord | None = None  # the record the last perturbed pass started from

    def __deepcopy__(self, memo):
        return self

    def recorder(self, previous):
        """Block patch for the normal pass (perturbed passes are marked in their transformer_options)."""
        def patch(args, extra):
            options = args["transformer_options"]
            sigma = float(options["sigmas"].flatten()[0])
            if not options.get(PERTURBED_KEY) and self.active(sigma):
                rows = rows_of(options.get("cond_or_uncond", [COND]), args[self.adapter.image_stream_key].shape[0])
                self.record = StepRecord(sigma, {k: args[k][rows].clone() for k in self.adapter.streams})
            return run_block(previous, args, extra)
        return patch

    def perturbed_options(self, options: dict) -> dict:
        """Take this step's record; skip the blocks before the first perturbed one and start it from the record."""
        record, self.record = self.record, None  # one step's record is used once, then released
        self.last_used = record
        if record is None:
            return options
        key = self.adapter.block_key
        for block in range(self.first_block):
            options = chain_block_patch(options, key, block, lambda previous: self._skip(record, previous))
        return chain_block_patch(options, key, self.first_block, lambda previous: self._resume(record, previous))

    def _skip(self, record: StepRecord, previous):
        def patch(args, extra):
            if not record.fits(args):
                return run_block(previous, args, extra)
            record.skipped_blocks += 1
            return {k: args[k] for k in self.adapter.streams}  # skipped: replaced at the first perturbed block
        return patch

    def _resume(self, record: StepRecord, previous):
        def patch(args, extra):
            return run_block(previous, {**args, **record.streams} if record.fits(args) else args, extra)
        return patch


class CrossAttentionGuidance:
    """CAG for one model: blocks, scale, step window (sigma range), variant; deep-copy-proof."""

    def __init__(self, adapter: Adapter, diffusion_model, blocks: list[int], scale: float, variant: str,
                 sigma_low: float, sigma_high: float, reuse_prefix: bool = True):
        self.frame_local = FrameLocalAttention(adapter, diffusion_model, blocks, variant)
        self.scale, self.sigma_low, self.sigma_high = scale, sigma_low, sigma_high
        # Block-index scoping has no block replacements to skip blocks with; those families run the whole pass.
        self.prefix = (PrefixReuse(adapter, self.frame_local.blocks[0], self.active)
                       if reuse_prefix and not adapter.scope_by_block_index else None)

    def __deepcopy__(self, memo):
        return self

    def active(self, sigma: float) -> bool:
        return self.scale != 0 and self.sigma_low <= sigma <= self.sigma_high

    def patch(self, patcher):
        """A clone of `patcher` guided by CAG in any sampler (a post-CFG step, as core's SkipLayerGuidanceDiT)."""
        model = patcher.clone()
        if self.prefix is not None:
            model.model_options = chain_block_patch(model.model_options, self.frame_local.adapter.block_key,
                                                    self.prefix.first_block, self.prefix.recorder)
        model.set_model_sampler_post_cfg_function(self.post_cfg)
        return model

    def perturbed_options(self, model_options: dict) -> dict:
        options = self.frame_local.install_options(model_options)
        options["transformer_options"][PERTURBED_KEY] = True
        return self.prefix.perturbed_options(options) if self.prefix is not None else options

    def post_cfg(self, args: dict) -> torch.Tensor:
        if not self.active(float(args["sigma"].flatten()[0])):
            return args["denoised"]
        (perturbed,) = comfy.samplers.calc_cond_batch(args["model"], [args["cond"]], args["input"], args["sigma"],
                                                      self.perturbed_options(args["model_options"]))
        return add_guidance(args["denoised"], args["cond_denoised"], perturbed, self.scale)
