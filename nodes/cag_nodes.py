"""Nodes for Cross-Attention Guidance: a model patch for the stock KSampler, a GUIDER, an all-in-one sampler."""
from __future__ import annotations

import comfy.samplers
import nodes as comfy_nodes  # ComfyUI's own top-level nodes module (this pack's package is not top-level)
from comfy_api.latest import io

from ..ditcorr.guidance import VARIANTS
from .adapters import supported_names
from .cag import CrossAttentionGuidance
from .vocabulary import CATEGORY, blocks_tooltip, model_and_adapter, model_blocks


def cag_inputs() -> list:
    return [
        io.Float.Input("cag_scale", default=1.0, min=0.0, max=20.0, step=0.05,
                       tooltip="Strength s of the push away from the frame-local branch: out = CFG + s (cond - perturbed). "
                               "0 = plain CFG (and no extra pass). DiffTrack used 1."),
        io.String.Input("blocks", default="auto",
                        tooltip=blocks_tooltip("Blocks whose self-attention is made frame-local in the perturbed branch",
                                               "guide")),
        io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01,
                       tooltip="First part of the schedule to guide (0 = from the first step)."),
        io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.01,
                       tooltip="Last part of the schedule to guide (1 = to the last step)."),
        io.Combo.Input("variant", options=list(VARIANTS), default="renormalised",
                       tooltip="renormalised: softmax over the own frame's keys. published: DiffTrack's CFG path, the "
                               "full softmax with cross-frame probabilities zeroed and not renormalised (slower)."),
        io.Boolean.Input("reuse_prefix", default=True,
                         tooltip="Start the perturbed pass from the cond pass's hidden state at the first chosen block "
                                 "instead of recomputing the blocks before it (same result, less time)."),
    ]


def cag_model(model, cag_scale, blocks, start_percent, end_percent, variant, reuse_prefix):
    """A clone of `model` guided by CAG."""
    diffusion_model, adapter = model_and_adapter(model)
    sampling = model.get_model_object("model_sampling")
    guidance = CrossAttentionGuidance(adapter, diffusion_model, model_blocks(blocks, "guide", model), cag_scale, variant,
                                      sampling.percent_to_sigma(end_percent), sampling.percent_to_sigma(start_percent),
                                      reuse_prefix)
    return guidance.patch(model)


class CAGModelPatch(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DiffTrackCAG",
            display_name="CAG (DiffTrack)",
            category=CATEGORY,
            description=("Cross-Attention Guidance for any sampler (e.g. the stock KSampler): each guided step also "
                         "predicts with frame-local attention in a few blocks and pushes away from it, for steadier "
                         f"motion. Supported: {supported_names()}."),
            inputs=[io.Model.Input("model", tooltip="The video DiT; the input model itself is not changed."), *cag_inputs()],
            outputs=[io.Model.Output(display_name="model")],
        )

    @classmethod
    def execute(cls, model, cag_scale, blocks, start_percent, end_percent, variant, reuse_prefix) -> io.NodeOutput:
        return io.NodeOutput(cag_model(model, cag_scale, blocks, start_percent, end_percent, variant, reuse_prefix))


class CAGGuider(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DiffTrackCAGGuider",
            display_name="CAG Guider (DiffTrack)",
            category=CATEGORY,
            description="A GUIDER for SamplerCustomAdvanced: CFG plus Cross-Attention Guidance.",
            inputs=[
                io.Model.Input("model", tooltip="The video DiT."),
                io.Conditioning.Input("positive", tooltip="The prompt."),
                io.Conditioning.Input("negative", tooltip="The negative prompt."),
                io.Float.Input("cfg", default=6.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance scale (DiffTrack used 6; 1 = no uncond pass)."),
                *cag_inputs(),
            ],
            outputs=[io.Guider.Output()],
        )

    @classmethod
    def execute(cls, model, positive, negative, cfg, cag_scale, blocks, start_percent, end_percent, variant,
                reuse_prefix) -> io.NodeOutput:
        guider = comfy.samplers.CFGGuider(cag_model(model, cag_scale, blocks, start_percent, end_percent, variant, reuse_prefix))
        guider.set_conds(positive, negative)
        guider.set_cfg(cfg)
        return io.NodeOutput(guider)


class CAGSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DiffTrackCAGSampler",
            display_name="CAG Sampler (DiffTrack)",
            category=CATEGORY,
            description="KSampler with Cross-Attention Guidance, in one node.",
            inputs=[
                io.Model.Input("model", tooltip="The video DiT."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the initial noise."),
                io.Int.Input("steps", default=30, min=1, max=10000, tooltip="Sampling steps."),
                io.Float.Input("cfg", default=6.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance scale (1 = no uncond pass)."),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, tooltip="Sampling algorithm."),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="simple",
                               tooltip="Noise schedule."),
                io.Conditioning.Input("positive", tooltip="The prompt."),
                io.Conditioning.Input("negative", tooltip="The negative prompt."),
                io.Latent.Input("latent_image", tooltip="The latent to denoise (an empty video latent for text-to-video)."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01, tooltip="How much of the schedule to run."),
                *cag_inputs(),
            ],
            outputs=[io.Latent.Output(display_name="latent")],
        )

    @classmethod
    def execute(cls, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise,
                cag_scale, blocks, start_percent, end_percent, variant, reuse_prefix) -> io.NodeOutput:
        guided = cag_model(model, cag_scale, blocks, start_percent, end_percent, variant, reuse_prefix)
        (latent,) = comfy_nodes.common_ksampler(guided, seed, steps, cfg, sampler_name, scheduler, positive, negative,
                                                latent_image, denoise=denoise)
        return io.NodeOutput(latent)


class ZeroConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DiffTrackZeroConditioning",
            display_name="Zero Conditioning (DiffTrack)",
            category=CATEGORY,
            description=("A CONDITIONING of zeros shaped for the model's text input: a 'no prompt' without loading "
                         "the text encoder (feature extraction, tests, unconditional runs)."),
            inputs=[io.Model.Input("model", tooltip="The video DiT the conditioning is for.")],
            outputs=[io.Conditioning.Output(display_name="conditioning")],
        )

    @classmethod
    def execute(cls, model) -> io.NodeOutput:
        diffusion_model, adapter = model_and_adapter(model)
        context, extra = adapter.zero_context(diffusion_model)
        return io.NodeOutput([[context, extra]])


NODES = [CAGModelPatch, CAGGuider, CAGSampler, ZeroConditioning]
