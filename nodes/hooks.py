"""Scoped self-attention hooks on chosen blocks of a loaded video DiT, without monkeypatching.

How it works (ComfyUI >= 0.8):
- Each chosen block gets a `patches_replace["dit"][("double_block", i)]` entry.
  It runs the original block (or the replacement already there) with a *copy*
  of transformer_options whose `optimized_attention_override` routes the
  block's first attention call, its self-attention, to `on_self_attention`.
  Other blocks, text refiners and cross-attention never see the hook.
- An APPLY_MODEL wrapper records, per forward, the latent's token grid, the
  rows' conds (cond/uncond) and the sampling step.
- An OUTER_SAMPLE wrapper resets per-run state.
Everything lives in `model_options` of a ModelPatcher clone, so the user's
MODEL is never modified and nothing needs undoing after an error or an
interrupt. ModelPatcher.clone() deep-copies model_options, so the hook
returns itself from __deepcopy__ to keep one shared state.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import comfy.model_patcher
import comfy.patcher_extension
from comfy.patcher_extension import WrappersMP

from .adapters import Adapter, UnsupportedInput
from .patching import call_through, chain_block_patch, run_block

WRAPPER_KEY = "difftrack_attention_hook"


@dataclass
class ForwardInfo:
    """What one model forward looks like to the hooks."""

    grid: tuple[int, int, int]  # (T, h, w) video token grid
    suffix_tokens: int  # image-stream tokens after the video tokens
    sigma: float
    step: int  # index into the sampler's sigma schedule (0 outside a sampler)
    cond_or_uncond: list[int]  # one entry (0 cond, 1 uncond) per equal chunk of batch rows
    batch: int


@dataclass
class SelfAttentionCall:
    """One self-attention call of a hooked block, as the attention backend receives it."""

    block: int
    forward: ForwardInfo
    video: slice  # positions of the video tokens in the attention sequence
    image_tokens: int  # the image stream's length; joint-attention models put text tokens after it
    func: Callable
    args: tuple
    kwargs: dict
    run: Callable[..., torch.Tensor]  # the real attention (through any override already installed), on args or these

    def _heads_first(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.kwargs.get("skip_reshape", False):
            return tensor  # [B, H, L, D]
        heads = self.kwargs["heads"] if "heads" in self.kwargs else self.args[3]
        b, length, width = tensor.shape
        return tensor.view(b, length, heads, width // heads).transpose(1, 2)

    def run_with(self, k: torch.Tensor | None = None, v: torch.Tensor | None = None,
                 q: torch.Tensor | None = None) -> torch.Tensor:
        """The real attention with the video tokens' keys, values and/or queries replaced by those given
        ([B or 1, H, L_video, D] each; None keeps the call's own)."""
        given = []
        for new, tensor in zip((q, k, v), self.args[:3]):
            if new is not None:
                tensor = tensor.clone()
                self._heads_first(tensor)[:, :, self.video] = new.to(tensor.dtype)  # a view: writes into the clone
            given.append(tensor)
        return self.run((*given, *self.args[3:]))

    @property
    def text(self) -> slice:
        """Positions of text tokens in the sequence (empty when text is not in the same attention)."""
        return slice(self.image_tokens, self.q.shape[2])

    @property
    def q(self) -> torch.Tensor:
        """[B, H, L, D] view of the queries (post-norm, post-RoPE)."""
        return self._heads_first(self.args[0])

    @property
    def k(self) -> torch.Tensor:
        return self._heads_first(self.args[1])

    @property
    def v(self) -> torch.Tensor:
        return self._heads_first(self.args[2])


def step_index(sample_sigmas: torch.Tensor | None, sigma: float) -> int:
    """Index of the schedule step a σ belongs to (sub-step evaluations count for the step they start).

    A forward outside a sampler (no schedule) counts as step 0.
    """
    if sample_sigmas is None:
        return 0
    at_or_above = (sample_sigmas.float().cpu() >= sigma * (1 - 1e-5) - 1e-7).nonzero()
    return int(at_or_above[-1]) if len(at_or_above) else 0


class AttentionHook:
    """Base for anything that acts on the self-attention of chosen blocks.

    Subclasses override on_run_start / on_forward / on_self_attention. A hook stands aside outside a wrapped model
    forward, including where activation checkpointing recomputes a block in the backward pass; one whose action
    depends on nothing a forward changes sets `acts_in_recompute`, and then acts there too, as in the last forward
    (so its blocks can be checkpointed).
    """

    acts_in_recompute = False

    def __init__(self, adapter: Adapter, diffusion_model: torch.nn.Module, blocks: list[int]):
        count = adapter.block_count(diffusion_model)
        if not blocks:
            raise ValueError(f"Choose at least one block (this {adapter.name} model has {count} blocks, 0-{count - 1}).")
        outside = [b for b in blocks if not 0 <= b < count]
        if outside:
            raise ValueError(
                f"Block {outside[0]} is out of range: this {adapter.name} model has {count} blocks, 0-{count - 1}."
            )
        self.adapter = adapter
        self.diffusion_model = diffusion_model
        self.blocks = sorted(blocks)
        self.forward: ForwardInfo | None = None
        self._last_forward: ForwardInfo | None = None  # what a recompute after the forward acts as, if it acts
        self._blocks_seen: set[int] = set()  # blocks already dispatched in this forward (block_index scoping)

    def __deepcopy__(self, memo):
        return self

    # -- to override -------------------------------------------------------
    def on_run_start(self) -> None:
        """A sampler run begins."""

    def on_forward(self, info: ForwardInfo) -> None:
        """A model forward begins."""

    def on_self_attention(self, call: SelfAttentionCall) -> torch.Tensor:
        return call.run()

    # -- installation ------------------------------------------------------
    def install(self, patcher) -> None:
        """Add the hook to `patcher` (a clone the caller owns)."""
        patcher.model_options = self.install_options(patcher.model_options)

    def install_options(self, model_options: dict) -> dict:
        """A copy of `model_options` with the hook added, keeping any replacement or override already there."""
        options = comfy.model_patcher.create_model_options_clone(model_options)
        transformer = options.setdefault("transformer_options", {})
        if self.adapter.scope_by_block_index:
            transformer["optimized_attention_override"] = self._indexed_override(transformer.get("optimized_attention_override"))
        else:
            for block in self.blocks:
                options = chain_block_patch(options, self.adapter.block_key, block,
                                            lambda previous, block=block: self._block_patch(block, previous))
        for kind, wrapper in ((WrappersMP.APPLY_MODEL, self._apply_model), (WrappersMP.OUTER_SAMPLE, self._outer_sample)):
            comfy.patcher_extension.add_wrapper_with_key(kind, WRAPPER_KEY, wrapper, options, is_model_options=True)
        return options

    def _outer_sample(self, executor, *args, **kwargs):
        self.on_run_start()
        try:
            return executor(*args, **kwargs)
        finally:
            self.forward = None

    def _apply_model(self, executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        self.adapter.check_inputs(kwargs)
        grid = self.adapter.token_grid(self.diffusion_model, x.shape)
        sigma = float(t.flatten()[0])
        self.forward = ForwardInfo(
            grid=grid,
            suffix_tokens=self.adapter.video_suffix_tokens(self.diffusion_model, grid, kwargs),
            sigma=sigma,
            step=step_index(transformer_options.get("sample_sigmas"), sigma),
            cond_or_uncond=list(transformer_options.get("cond_or_uncond", [0])),
            batch=x.shape[0],
        )
        self._last_forward = self.forward
        self._blocks_seen = set()
        self.on_forward(self.forward)
        try:
            return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
        finally:
            self.forward = None

    def _video_span(self, block: int, info: ForwardInfo, image_tokens: int) -> slice:
        """Video tokens are the last grid-many tokens of the image stream before any suffix."""
        stop = image_tokens - info.suffix_tokens
        start = stop - math.prod(info.grid)
        if start < 0:
            raise UnsupportedInput(
                f"{self.adapter.name} block {block} sees {stop} image tokens, fewer than the "
                f"{math.prod(info.grid)} of the latent's token grid {info.grid}."
            )
        return slice(start, stop)

    def _dispatch(self, block: int, info: ForwardInfo, image_tokens: int, previous: Callable | None,
                  func: Callable, args: tuple, kwargs: dict) -> torch.Tensor:
        run = lambda given=args: call_through(previous, func, given, kwargs)  # noqa: E731
        video = self._video_span(block, info, image_tokens)
        return self.on_self_attention(SelfAttentionCall(block, info, video, image_tokens, func, args, kwargs, run))

    def _block_patch(self, block: int, previous_patch: Callable | None) -> Callable:
        """A dit block replacement whose copy of transformer_options routes the block's first attention call to us."""
        def patch(args: dict, extra: dict):
            info = self.forward or (self._last_forward if self.acts_in_recompute else None)
            if info is not None:  # outside a wrapped forward there is nothing to act on
                image_tokens = self.adapter.image_stream_length(args)
                self._video_span(block, info, image_tokens)  # fail before the block runs when the layout is unknown
                options = dict(args["transformer_options"])
                options["optimized_attention_override"] = self._first_call_override(
                    block, info, image_tokens, options.get("optimized_attention_override"))
                args = {**args, "transformer_options": options}
            return run_block(previous_patch, args, extra)
        # Under torch.compile (core TorchCompileModel) the hooked blocks run eagerly: dynamo cannot trace the copied
        # transformer_options the override rides in; every other block stays compiled.
        return torch.compiler.disable(patch)

    def _first_call_override(self, block: int, info: ForwardInfo, image_tokens: int, previous: Callable | None) -> Callable:
        calls = 0

        def override(func, *args, **kwargs):
            nonlocal calls
            calls += 1
            if calls > 1:  # cross-attention and later calls of the block pass through
                return call_through(previous, func, args, kwargs)
            return self._dispatch(block, info, image_tokens, previous, func, args, kwargs)
        return override

    def _indexed_override(self, previous: Callable | None) -> Callable:
        """A model-wide override acting on the first attention call after transformer_options["block_index"]
        names a chosen block: for families whose dit block replacement cannot be used."""
        def override(func, *args, **kwargs):
            info = self.forward
            block = kwargs.get("transformer_options", {}).get("block_index")
            if info is None or block not in self.blocks or block in self._blocks_seen:
                return call_through(previous, func, args, kwargs)
            self._blocks_seen.add(block)
            tokens = args[0].shape[2 if kwargs.get("skip_reshape", False) else 1]  # video-only self-attention
            return self._dispatch(block, info, tokens, previous, func, args, kwargs)
        return override
