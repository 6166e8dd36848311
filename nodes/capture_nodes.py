"""Nodes for reading a video DiT's attention: capture during sampling, extraction from a video, maps."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from comfy_api.latest import io

from ..ditcorr import DitFeatures, latent_frame_positions, point_cost_over_video, render_heatmaps, source_frame_count
from .adapters import adapter_for, supported_names
from .capture import CaptureSession
from .extract import ENCODINGS, encode_with_progress, extract_with_progress
from .options import BRANCH_CHOICES, STORAGE_DTYPES, STORAGE_PLACES, capture_request, choose_blocks

CATEGORY = "DiffTrack"
DitFeaturesType = io.Custom("DIT_FEATURES")
DitCaptureType = io.Custom("DIT_CAPTURE")

BLOCKS_TOOLTIP = ("Blocks whose self-attention q/k are read: '15', '13, 17, 21' or '10-12' (0-based). "
                  "'auto' = the middle block; correspondence is strongest in the middle of the stack "
                  "(DiffTrack: block 17 of 30 for CogVideoX, double block 16 for HunyuanVideo).")
DTYPE_TOOLTIP = "Storage precision of captured q/k; 'model' keeps the model's own dtype (exact)."
STORAGE_TOOLTIP = "Keep captured q/k on the GPU (fastest) or in CPU memory (saves VRAM for long captures)."


def _storage_inputs() -> list:
    return [
        io.Combo.Input("storage_dtype", options=list(STORAGE_DTYPES), default="model", tooltip=DTYPE_TOOLTIP),
        io.Combo.Input("storage", options=list(STORAGE_PLACES), default="cpu", tooltip=STORAGE_TOOLTIP),
    ]


@dataclass
class CaptureHandle:
    """What Attention Capture hands to Captured Features: the live session and the model family's VAE ratios."""

    session: CaptureSession
    vae_ratios: tuple[int, int]


class AttentionCapture(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DiffTrackAttentionCapture",
            display_name="Attention Capture (DiffTrack)",
            category=CATEGORY,
            description=("Patches a video DiT so that any sampler run records the per-head queries and keys of chosen "
                         f"blocks at chosen steps (video tokens only). Supported: {supported_names()}. "
                         "Wire the sampler's LATENT and this capture into 'Captured Features' to read them."),
            inputs=[
                io.Model.Input("model", tooltip="The video DiT to record from; the input model itself is not changed."),
                io.String.Input("blocks", default="auto", tooltip=BLOCKS_TOOLTIP),
                io.String.Input("steps", default="all",
                                tooltip="Sampler steps to record (0-based schedule indices): 'all', '0, 10, 20' or '5-9'."),
                io.Float.Input("sigma_low", default=0.0, min=0.0, max=1000.0, step=0.001,
                               tooltip="Record only forwards with σ at or above this (flow models: σ in 0..1)."),
                io.Float.Input("sigma_high", default=1000.0, min=0.0, max=1000.0, step=0.001,
                               tooltip="Record only forwards with σ at or below this."),
                io.Combo.Input("branches", options=list(BRANCH_CHOICES), default="cond",
                               tooltip="Which batch rows to keep: the positive (cond), the negative (uncond) or both."),
                *_storage_inputs(),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="The model with the capture hooks; use it in the sampler."),
                DitCaptureType.Output(display_name="capture", tooltip="Handle to the recording; read it with Captured Features."),
            ],
        )

    @classmethod
    def execute(cls, model, blocks, steps, sigma_low, sigma_high, branches, storage_dtype, storage) -> io.NodeOutput:
        diffusion_model = model.get_model_object("diffusion_model")
        adapter = adapter_for(diffusion_model)
        session = CaptureSession(adapter, diffusion_model, choose_blocks(blocks, adapter, diffusion_model),
                                 capture_request(steps, sigma_low, sigma_high, branches, storage_dtype, storage))
        patched = model.clone()
        session.install(patched)
        return io.NodeOutput(patched, CaptureHandle(session, adapter.vae_ratios_for(diffusion_model)))


class CapturedFeatures(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DiffTrackCapturedFeatures",
            display_name="Captured Features (DiffTrack)",
            category=CATEGORY,
            description="The q/k recorded by Attention Capture during the sampler run that produced 'latent'.",
            inputs=[
                DitCaptureType.Input("capture", tooltip="From Attention Capture."),
                io.Latent.Input("latent", tooltip="The sampler's output: wiring it makes this node run after sampling."),
            ],
            outputs=[DitFeaturesType.Output(display_name="features")],
        )

    @classmethod
    def execute(cls, capture: CaptureHandle, latent) -> io.NodeOutput:
        session = capture.session
        problem = session.missing()
        if problem is not None:
            raise RuntimeError(problem)
        temporal, spatial = capture.vae_ratios
        tokens_t = next(iter(session.captures.values())).q.shape[1]
        samples = latent["samples"]
        features = DitFeatures(
            frame_size=(samples.shape[-2] * spatial, samples.shape[-1] * spatial),
            frame_count=source_frame_count(tokens_t, temporal),
            chunk_frames=[latent_frame_positions(tokens_t, temporal)],
            model=session.adapter.name,
            captures=dict(session.captures),
        )
        return io.NodeOutput(features)


class ExtractVideoFeatures(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DiffTrackExtractFeatures",
            display_name="Extract Features from Video (DiffTrack)",
            category=CATEGORY,
            description=("Encodes a real video, noises it slightly and runs one forward per chunk of frames, reading "
                         "q/k of chosen blocks. Each forward stops after the deepest chosen block."),
            inputs=[
                io.Model.Input("model", tooltip=f"The video DiT ({supported_names()})."),
                io.Vae.Input("vae", tooltip="The VAE that belongs to the model."),
                io.Image.Input("images", tooltip="The video frames."),
                io.String.Input("blocks", default="auto", tooltip=BLOCKS_TOOLTIP),
                io.Float.Input("sigma", default=0.1, min=0.001, max=1.0, step=0.001,
                               tooltip="Noise level of the forward (flow models; timestep = 1000·σ). "
                                       "0.02-0.2 works best: low enough to keep the content, high enough to be in-distribution."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the noise added to the latent."),
                io.Combo.Input("encoding", options=list(ENCODINGS), default="per_frame",
                               tooltip="per_frame: each frame encoded alone, one latent frame per video frame (DiffTrack). "
                                       "native: the whole clip at once, with the VAE's temporal compression (fewer, coarser frames)."),
                io.Int.Input("frames_per_chunk", default=13, min=0, max=1024,
                             tooltip="Latent frames per forward: the reference frame plus strided others; "
                                     "chunks repeat until every frame is covered. 0 = the whole video in one forward."),
                io.Int.Input("reference_frame", default=0, min=0, max=100000,
                             tooltip="Latent frame placed first in every chunk (the frame you will query)."),
                *_storage_inputs(),
                io.Conditioning.Input("conditioning", optional=True,
                                      tooltip="Text conditioning (an empty prompt is best). Unconnected: a zero context, "
                                              "which avoids loading the text encoder."),
            ],
            outputs=[DitFeaturesType.Output(display_name="features")],
        )

    @classmethod
    def execute(cls, model, vae, images, blocks, sigma, seed, encoding, frames_per_chunk, reference_frame,
                storage_dtype, storage, conditioning=None) -> io.NodeOutput:
        diffusion_model = model.get_model_object("diffusion_model")
        adapter = adapter_for(diffusion_model)
        chosen = choose_blocks(blocks, adapter, diffusion_model)
        latent, positions = encode_with_progress(vae, images, encoding)
        request = capture_request("all", 0.0, 1000.0, "cond", storage_dtype, storage)
        features = extract_with_progress(model, latent, positions, images, conditioning, chosen, sigma, seed,
                                         frames_per_chunk, reference_frame, request)
        return io.NodeOutput(features)


class AttentionMap(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DiffTrackAttentionMap",
            display_name="Attention Map (DiffTrack)",
            category=CATEGORY,
            description=("Heat maps of where a query point's patch went in every frame: the symmetric cross-frame "
                         "attention cost of the captured q/k, averaged over heads (and over chunks)."),
            inputs=[
                DitFeaturesType.Input("features", tooltip="From Extract Features or Captured Features."),
                io.Int.Input("x", default=0, min=0, max=16384, tooltip="Query point, pixels from the left edge of the frame."),
                io.Int.Input("y", default=0, min=0, max=16384, tooltip="Query point, pixels from the top edge of the frame."),
                io.Int.Input("query_frame", default=0, min=0, max=100000, tooltip="Frame the point is on."),
                io.Int.Input("block", default=-1, min=-1, max=1000, tooltip="Captured block to read; -1 = the first captured."),
                io.Int.Input("step", default=-1, min=-1, max=10000, tooltip="Captured step to read; -1 = the first captured."),
                io.Combo.Input("branch", options=["cond", "uncond"], default="cond", tooltip="Captured rows to read."),
                io.Int.Input("sample", default=0, min=0, max=4096, tooltip="Batch index inside the branch."),
                io.Float.Input("temperature", default=0.0, min=0.0, max=1000.0, step=0.01,
                               tooltip="Softmax temperature τ of q·k/τ; 0 = √(head dim), the attention's own scale."),
                io.Float.Input("opacity", default=0.6, min=0.0, max=1.0, step=0.05,
                               tooltip="Heat map opacity over the images (when images are connected)."),
                io.Image.Input("images", optional=True,
                               tooltip="Frames to draw the maps over (one map per image; the nearest captured frame is used)."),
            ],
            outputs=[io.Image.Output(display_name="maps")],
        )

    @classmethod
    def execute(cls, features: DitFeatures, x, y, query_frame, block, step, branch, sample, temperature, opacity,
                images=None) -> io.NodeOutput:
        height, width = features.frame_size if images is None else tuple(images.shape[1:3])
        if not (0 <= x < width and 0 <= y < height):
            raise ValueError(f"Point ({x}, {y}) is outside the {width}x{height} frame.")
        if not 0 <= query_frame < features.frame_count:
            raise ValueError(f"query_frame {query_frame} is outside the video's {features.frame_count} frames.")
        chunks = features.select(None if block < 0 else block, None if step < 0 else step, branch, sample)
        point = torch.tensor([[2 * (x + 0.5) / width - 1, 2 * (y + 0.5) / height - 1]])
        positions, maps = point_cost_over_video(chunks, float(query_frame), point, temperature or None)
        maps = maps[:, 0]  # one query point
        if images is None:
            return io.NodeOutput(render_heatmaps(maps, (height, width)))
        nearest = [min(range(len(positions)), key=lambda i: abs(positions[i] - f)) for f in range(images.shape[0])]
        return io.NodeOutput(render_heatmaps(maps[nearest], (height, width), images[..., :3], opacity))


NODES = [AttentionCapture, CapturedFeatures, ExtractVideoFeatures, AttentionMap]
