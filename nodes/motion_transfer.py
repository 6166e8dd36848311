"""Motion transfer by Attention Motion Flow guidance (DiTFlow): during the first steps of sampling, the noisy
latent is optimised so that the generation's soft AMF at the guidance blocks matches a reference's hard AMF,
then the sampler takes its normal step from the optimised latent."""
from __future__ import annotations

import math
import types
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.utils.checkpoint
import comfy.model_management
import comfy.samplers

from ..ditcorr.amf import FlowLoss, MotionFlow, all_pairs, flow_loss, hard_amf, soft_amf
from ..ditcorr.motion_embeddings import MotionEmbeddings, identity_table, modulate
from .adapters import ADAPTERS, adapter_for
from .capture import ForwardStopped
from .differentiable import differentiable_forwards
from .extract import extract_from_latent
from .hooks import AttentionHook, SelfAttentionCall
from .patching import chain_block_patch, run_block
from .vocabulary import capture_request, model_and_adapter


DIFFERENTIABLE_FAMILIES = [adapter.name for adapter in ADAPTERS if adapter.rope_modules]
OPTIMISED = ("latent", "embeddings")  # what guidance optimises


def motion_flow(model, latent: torch.Tensor, positions: tuple[float, ...], frame_size: tuple[int, int],
                frame_count: int, conditioning: list | None, blocks: list[int], temperature: float, sigma: float,
                seed: int, frame_window: int = 0, on_block: Callable[[], None] = lambda: None) -> MotionFlow:
    """A reference's MotionFlow: one forward of its latent [1, C, T, h, w] (source-frame `positions` of the latent
    frames, `frame_count` frames of `frame_size` pixels) at noise level `sigma` with `conditioning` (None = a zero
    context), the hard AMF of every ordered pair of latent frames (at most `frame_window` apart; 0 = all) at each
    of `blocks`; on_block is called after each block's AMF (progress)."""
    _, adapter = model_and_adapter(model)
    features = extract_from_latent(model, latent, positions, frame_size, frame_count, conditioning, blocks, sigma,
                                   seed, frames_per_chunk=0,
                                   request=capture_request("all", 0.0, 1000.0, "cond", "model", "gpu"))
    pairs = all_pairs(latent.shape[2], frame_window or None)
    displacement, confidence = {}, {}
    for block in blocks:
        qk = features.select(block)[0].qk
        displacement[block], confidence[block] = hard_amf(qk.q, qk.k, temperature, pairs)
        on_block()
    grid = features.token_grid
    features.release()
    return MotionFlow(displacement, confidence, pairs, grid, latent.shape[2], positions, frame_size, adapter.name,
                      temperature, latent.detach().cpu())


def frozen(function: Callable) -> Callable:
    """A copy of `function` whose free variables keep the values they have now (a closure made in a loop reads the
    loop variable when it is called, not when it was made)."""
    if not getattr(function, "__closure__", None):
        return function
    cells = []
    for cell in function.__closure__:
        try:
            cells.append(types.CellType(cell.cell_contents))
        except ValueError:  # a variable not yet assigned stays shared
            cells.append(cell)
    copy = types.FunctionType(function.__code__, function.__globals__, function.__name__, function.__defaults__,
                              tuple(cells))
    copy.__kwdefaults__ = function.__kwdefaults__
    return copy


def checkpointed_blocks(model_options: dict, adapter, blocks: list[int]) -> dict:
    """A copy of `model_options` in which each of `blocks` runs under activation checkpointing: a differentiated
    forward keeps only the block's input and recomputes the rest in the backward pass (memory of one block's
    activations instead of all of them; about one more forward of those blocks in time)."""
    def checkpointed(previous):
        def patch(args: dict, extra: dict) -> dict:
            if not torch.is_grad_enabled():
                return run_block(previous, args, extra)
            # The model's loop hands each block a wrapper that reads the loop's current block, and options whose
            # block_index the loop moves on, when it runs: frozen here, or the recompute in the backward pass would
            # run the last block the loop reached.
            args = {**args, "transformer_options": dict(args["transformer_options"])}
            extra = {**extra, "original_block": frozen(extra["original_block"])}
            return torch.utils.checkpoint.checkpoint(run_block, previous, args, extra, use_reentrant=False)
        return patch

    for block in blocks:
        model_options = chain_block_patch(model_options, adapter.block_key, block, checkpointed)
    return model_options


class FlowProbe(AttentionHook):
    """At each guidance block, the soft AMF of the forward's first row (its autograd graph kept); the forward ends
    after the deepest guidance block."""

    def __init__(self, adapter, diffusion_model, flow: MotionFlow):
        super().__init__(adapter, diffusion_model, list(flow.displacement))
        self.flow = flow
        self.flows: dict[int, torch.Tensor] = {}

    def on_self_attention(self, call: SelfAttentionCall) -> torch.Tensor:
        frames, height, width = call.forward.grid

        def video(x: torch.Tensor) -> torch.Tensor:  # [B, H, L, D] -> [H, T, h, w, D] of the first row
            x = x[0, :, call.video]
            return x.reshape(x.shape[0], frames, height, width, x.shape[-1])

        self.flows[call.block] = soft_amf(video(call.q), video(call.k), self.flow.temperature, self.flow.pairs)
        if call.block == self.blocks[-1]:
            raise ForwardStopped()
        return call.run()


class ReferenceKV(AttentionHook):
    """DiTFlow's key/value injection. While `recording`, a forward keeps its first row's video keys and values at
    each of the blocks and stops after the deepest; otherwise every row's video tokens attend to those recorded
    keys and values instead of their own (the generation takes the reference's layout at those blocks)."""

    def __init__(self, adapter, diffusion_model, blocks: list[int]):
        super().__init__(adapter, diffusion_model, blocks)
        self.recording = False
        self.recorded: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # block -> ([1, H, L, D] keys, values)

    def on_self_attention(self, call: SelfAttentionCall) -> torch.Tensor:
        if self.recording:
            self.recorded[call.block] = (call.k[:1, :, call.video].clone(), call.v[:1, :, call.video].clone())
            if call.block == self.blocks[-1]:
                raise ForwardStopped()
            return call.run()
        return call.run_with(*self.recorded[call.block])


class PositionModulation(AttentionHook):
    """Motion embeddings at work: at every block, the video tokens' queries and keys after the model's RoPE
    multiplied by position tables (ditcorr.motion_embeddings.modulate). `tables` gives a sampling step's (q, k)
    tables or None (that step runs as the model would): fixed tables per step (applying learned embeddings), or the
    ones being optimised. Its action depends on the step alone, so blocks it hooks can be checkpointed."""

    acts_in_recompute = True

    def __init__(self, adapter, diffusion_model, tables: Callable[[int], tuple[torch.Tensor, torch.Tensor] | None],
                 embeddings: MotionEmbeddings | None = None):
        super().__init__(adapter, diffusion_model, list(range(adapter.block_count(diffusion_model))))
        self.tables = tables
        self.embeddings = embeddings  # checked against each forward, when given
        self._placed: tuple[tuple[int, torch.device], tuple[torch.Tensor, torch.Tensor] | None] | None = None

    def on_forward(self, info) -> None:
        if self.embeddings is not None:
            self.embeddings.check_fits(self.adapter.name, info.grid, self.adapter.head_dim(self.diffusion_model))

    def _tables_on(self, step: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The step's tables on `device`, copied there once per step rather than at every block (saved tables live
        in CPU memory: tens of MB at real sizes)."""
        if self._placed is None or self._placed[0] != (step, device):
            tables = self.tables(step)
            self._placed = ((step, device), None if tables is None else tuple(table.to(device) for table in tables))
        return self._placed[1]

    def on_self_attention(self, call: SelfAttentionCall) -> torch.Tensor:
        tables = self._tables_on(call.forward.step, call.q.device)
        if tables is None:
            return call.run()
        q_table, k_table = tables
        return call.run_with(k=modulate(call.k[:, :, call.video], k_table), q=modulate(call.q[:, :, call.video], q_table))


PUBLISHED_GUIDED_STEPS = 10  # DiTFlow guides the first 10 of 50 steps; its learning rates are for that many


@dataclass
class TransferSettings:
    """DiTFlow's schedule: the first `guided_share` of the steps guided, `iterations` Adam steps on the latent
    each, the learning rate linear from `rate_start` to `rate_end` over the guided steps (the rates of a run with
    DiTFlow's ten guided steps: see `rate`); the loss's options;
    whether the differentiated forwards checkpoint their blocks (the same gradients in far less memory: at Wan
    1.3B, 81 frames, the whole graph of 15 blocks would be tens of GiB); and how often the gradient is computed
    (FastVMT's gradient reuse: on iterations 0, n, 2n ... of each step, the Adam steps between reusing it).

    The default reuses each gradient for two more iterations (two gradients per guided step instead of five): on
    the tiny model's synthetic references it transferred as much motion as DiTFlow's every-iteration schedule
    (motion fidelity 0.842 / 0.855 against 0.840 / 0.853 on seeds 1000 / 2000, 16 clips each), and at Wan 1.3B,
    480x832x81 it costs 1.57x plain sampling instead of 2.41x (H200; bench/results/motion_transfer_*_h200.json)."""

    guided_share: float = 0.2
    iterations: int = 5
    rate_start: float = 0.002
    rate_end: float = 0.001
    loss: FlowLoss = field(default_factory=FlowLoss)
    checkpoint_blocks: bool = True  # recompute the blocks before the deepest guidance block in the backward pass
    gradient_every: int = 3  # a forward and backward on every n-th iteration of a step; 1 = all, as published
    inject_blocks: tuple[int, ...] = ()  # blocks whose keys and values come from the noised reference on guided steps
    optimise: str = "latent"  # "latent" (DiTFlow's default) or "embeddings" (its positional-embedding variant)

    def __post_init__(self):
        if self.optimise not in OPTIMISED:
            raise ValueError(f"optimise is {self.optimise!r}: choose one of {', '.join(OPTIMISED)}.")
        if self.optimise == "embeddings" and self.inject_blocks:
            raise ValueError("Key/value injection goes with optimising the latent: turn inject_reference off to "
                             "learn motion embeddings.")
        if self.gradient_every < 1:
            raise ValueError(f"gradient_every is {self.gradient_every}: compute the gradient at least on every "
                             "iteration's first (1), or reuse it for n - 1 iterations after (n > 1).")

    def guided_steps(self, steps: int) -> int:
        return min(steps, round(self.guided_share * steps))

    def rate(self, step: int, guided: int) -> float:
        """The learning rate of guided step `step` of `guided`: linear from rate_start to rate_end, times
        PUBLISHED_GUIDED_STEPS / guided. Adam moves each value by about the rate per iteration, so the scale lets a
        short schedule move the latent as far in all as DiTFlow's 10 guided steps of 50 do at its rates: at 20
        steps (4 guided) DiTFlow's rates unscaled matched the reference's pan in 12 and 9 of 16 tiny-model clips,
        scaled 13 and 13 (bench/results/motion_transfer_tiny_v2_*)."""
        share = step / max(guided - 1, 1)
        return (self.rate_start + (self.rate_end - self.rate_start) * share) * PUBLISHED_GUIDED_STEPS / max(guided, 1)


def check_flow_fits(flow: MotionFlow, latent: torch.Tensor, grid: tuple[int, int, int]) -> None:
    """ValueError unless a generation of `latent` (its token grid `grid`) has the reference's latent frames and
    token grid (the AMF compares them pair by pair, token by token)."""
    if tuple(grid) != (flow.latent_frames, *flow.grid):
        raise ValueError(f"The reference's motion flow is {flow.latent_frames} latent frames of {flow.grid[1]}x"
                         f"{flow.grid[0]} tokens, the generation {grid[0]} of {grid[2]}x{grid[1]}: generate at the "
                         f"reference's size and length ({flow.frame_size[1]}x{flow.frame_size[0]} pixels), or read "
                         "the flow from a reference of the generation's size.")


def optimise(loss_of: Callable[..., torch.Tensor], values: tuple[torch.Tensor, ...], iterations: int,
             rate: float, gradient_every: int = 1) -> tuple[tuple[torch.Tensor, ...], list[float]]:
    """`iterations` Adam steps on copies of `values` (the latent, or position tables), minimising loss_of(*values);
    gradients are taken with respect to them alone (never accumulated on weights), on iterations 0,
    gradient_every, 2 * gradient_every ...; the steps between reuse the last one. Returns (the optimised values, in
    their dtypes, and the loss of each computed gradient)."""
    with torch.inference_mode(False), torch.enable_grad():
        optimised = [value.detach().clone().requires_grad_(True) for value in values]
        optimiser = torch.optim.Adam(optimised, lr=rate)
        losses, gradients = [], None
        for iteration in range(iterations):
            comfy.model_management.throw_exception_if_processing_interrupted()
            if iteration % gradient_every == 0:
                loss = loss_of(*optimised)
                gradients = torch.autograd.grad(loss, optimised)
                losses.append(float(loss.detach()))
            for value, gradient in zip(optimised, gradients):
                value.grad = gradient
            optimiser.step()
    return tuple(value.detach().to(original.dtype) for value, original in zip(optimised, values)), losses


def transfer_sampler(base: str, flow: MotionFlow, settings: TransferSettings, report: list | None = None,
                     learned: list | None = None) -> comfy.samplers.KSAMPLER:
    """A SAMPLER: `base` (a ComfyUI sampler name) step by step through the guided steps, each preceded by the
    optimisation of the latent (or of position tables: settings.optimise), then the rest of the schedule in one
    call. report, if given, receives each guided step's losses; learned, with optimise "embeddings", receives the
    run's MotionEmbeddings (tables on the CPU)."""
    base_function = comfy.samplers.ksampler(base).sampler_function

    def sample(model_k, x, sigmas, extra_args=None, callback=None, disable=None):
        extra_args = extra_args or {}
        guider = model_k.inner_model  # the CFGGuider: its model and processed conds
        base_model = guider.inner_model
        adapter = adapter_for(base_model.diffusion_model)
        if not adapter.rope_modules:
            raise ValueError(f"Motion transfer differentiates through the model, which the pack can do for "
                             f"{', '.join(DIFFERENTIABLE_FAMILIES)} so far, not yet for {adapter.name}: sample with "
                             "one of those, or use a plain sampler.")
        check_flow_fits(flow, x, adapter.token_grid(base_model.diffusion_model, x.shape))
        steps = len(sigmas) - 1
        guided = settings.guided_steps(steps) if settings.iterations > 0 else 0
        overlap = sorted(set(settings.inject_blocks) & set(flow.displacement))
        if overlap:
            raise ValueError(f"Block {overlap[0]} is both a guidance block and an injection block: its attention "
                             "would compare the generation with the reference's own keys. Inject at earlier blocks "
                             "(DiTFlow: block 0) than the guidance blocks.")
        if settings.inject_blocks and flow.latent is None:
            raise ValueError("This motion flow holds no reference latent to inject keys and values from: read it "
                             "again with Motion Flow from Video, or turn injection off.")
        plain_options = extra_args.get("model_options", {})
        # The reference as the model reads it, made once: each guided step only noises it to its own level.
        reference = (base_model.process_latent_in(flow.latent.to(x.device, x.dtype)) if settings.inject_blocks
                     else None)

        def shifted(offset: int):
            return None if callback is None else (lambda d: callback({**d, "i": d["i"] + offset}))

        def with_reference(sigma: torch.Tensor) -> dict:
            """model_options whose forwards at this step take the injection blocks' keys and values from the
            reference noised to σ with the run's own noise (DiTFlow), read by one forward of the positive
            conditioning stopped after the deepest injection block."""
            if not settings.inject_blocks:
                return plain_options
            injector = ReferenceKV(adapter, base_model.diffusion_model, list(settings.inject_blocks))
            options = injector.install_options(plain_options)
            noisy = base_model.model_sampling.noise_scaling(sigma.view(1), model_k.noise.to(x), reference)
            injector.recording = True
            try:
                comfy.samplers.calc_cond_batch(base_model, [guider.conds["positive"]], noisy, sigma.view(1), options)
            except ForwardStopped:
                pass
            injector.recording = False
            return options

        def loss_of(sigma: torch.Tensor, step_options: dict):
            def loss(latent: torch.Tensor) -> torch.Tensor:
                probe = FlowProbe(adapter, base_model.diffusion_model, flow)
                options = probe.install_options(step_options)
                # Blocks the probe or the injection hook run as they are: a recompute in the backward pass happens
                # outside the forward, where those hooks stand aside, and would differ from what was saved (the
                # position tables' hook acts there too).
                if settings.checkpoint_blocks:
                    hooked = set(probe.blocks) | set(settings.inject_blocks)
                    options = checkpointed_blocks(options, adapter, [b for b in range(probe.blocks[-1])
                                                                     if b not in hooked])
                try:
                    comfy.samplers.calc_cond_batch(base_model, [guider.conds["positive"]], latent,
                                                   sigma * latent.new_ones([latent.shape[0]]), options)
                except ForwardStopped:
                    pass
                return sum(flow_loss(probe.flows[b], flow.displacement[b].to(latent.device),
                                     flow.confidence[b].to(latent.device), settings.loss)
                           for b in probe.blocks) / len(probe.blocks)
            return loss

        def modulated(options: dict, tables: tuple[torch.Tensor, torch.Tensor]) -> dict:
            return PositionModulation(adapter, base_model.diffusion_model, lambda step: tables).install_options(options)

        if settings.optimise == "embeddings":  # the model's own positions, then each step's warm-starts the next's
            grid, head_dim = adapter.token_grid(base_model.diffusion_model, x.shape), adapter.head_dim(base_model.diffusion_model)
            tables = (identity_table(math.prod(grid), head_dim, x.device),) * 2
            embeddings = MotionEmbeddings([], grid, head_dim, adapter.name)
        for step in range(guided):
            step_options = with_reference(sigmas[step])
            with differentiable_forwards(adapter, base_model.diffusion_model):
                if settings.optimise == "latent":
                    (x,), losses = optimise(loss_of(sigmas[step], step_options), (x,), settings.iterations,
                                            settings.rate(step, guided), settings.gradient_every)
                else:
                    tables, losses = optimise(
                        lambda q_table, k_table: loss_of(sigmas[step], modulated(step_options, (q_table, k_table)))(x),
                        tables, settings.iterations, settings.rate(step, guided), settings.gradient_every)
            if settings.optimise == "embeddings":
                step_options = modulated(step_options, tables)
                embeddings.tables.append(tuple(table.cpu() for table in tables))
            if report is not None:
                report.append(losses)
            x = base_function(model_k, x, sigmas[step:step + 2], extra_args={**extra_args, "model_options": step_options},
                              callback=shifted(step), disable=True)
        if learned is not None and settings.optimise == "embeddings":
            learned.append(embeddings)
        if guided == steps:
            return x
        return base_function(model_k, x, sigmas[guided:], extra_args=extra_args, callback=shifted(guided),
                             disable=disable)

    return comfy.samplers.KSAMPLER(sample)
