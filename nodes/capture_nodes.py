"""Nodes for reading a video DiT's attention: capture during sampling, extraction from a video, maps."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from comfy_api.latest import io, ui

from ..ditcorr import DitFeatures, latent_frame_positions, point_cost_over_video, render_heatmaps, source_frame_count
from ..ditcorr.features import steps_in_sampling_order
from ..ditcorr.track import TrackSettings
from .adapters import supported_names
from .analysis import choose_captured_block, with_best_block
from .capture import CaptureSession
from .extract import VideoExtraction, extraction_inputs
from .vocabulary import (BRANCH_CHOICES, CATEGORY, DitCaptureType, DitFeaturesType, blocks_tooltip, capture_request,
                         compute_window, model_and_adapter, model_blocks, storage_inputs)


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
                io.String.Input("blocks", default="auto",
                                tooltip=blocks_tooltip("Blocks whose self-attention q/k are recorded", "read")),
                io.String.Input("steps", default="all",
                                tooltip="Sampler steps to record (0-based schedule indices): 'all', '0, 10, 20' or '5-9'."),
                io.Float.Input("sigma_low", default=0.0, min=0.0, max=1000.0, step=0.001,
                               tooltip="Record only forwards with σ at or above this (flow models: σ in 0..1)."),
                io.Float.Input("sigma_high", default=1000.0, min=0.0, max=1000.0, step=0.001,
                               tooltip="Record only forwards with σ at or below this."),
                io.Combo.Input("branches", options=list(BRANCH_CHOICES), default="cond",
                               tooltip="Which batch rows to keep: the positive (cond), the negative (uncond) or both."),
                *storage_inputs(),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="The model with the capture hooks; use it in the sampler."),
                DitCaptureType.Output(display_name="capture", tooltip="Handle to the recording; read it with Captured Features."),
            ],
        )

    @classmethod
    def execute(cls, model, blocks, steps, sigma_low, sigma_high, branches, storage_dtype, storage) -> io.NodeOutput:
        diffusion_model, adapter = model_and_adapter(model)
        session = CaptureSession(adapter, diffusion_model, model_blocks(blocks, "read", model),
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
                DitCaptureType.Input("capture_2", optional=True,
                                     tooltip="A second model's capture on the same video, run on later steps (Wan "
                                             "2.2's low-noise expert after the high-noise one, each with its own "
                                             "Attention Capture and sampler): one set of features from both, steps "
                                             "numbered in the order they ran (by σ)."),
            ],
            outputs=[DitFeaturesType.Output(display_name="features")],
        )

    @classmethod
    def execute(cls, capture: CaptureHandle, latent, capture_2: CaptureHandle | None = None) -> io.NodeOutput:
        handles = [capture] if capture_2 is None else [capture, capture_2]
        for number, handle in enumerate(handles, start=1):
            problem = handle.session.missing()
            if problem is not None:
                raise RuntimeError(problem if len(handles) == 1 else f"capture {number}: {problem}")
            handle.session.store.synchronize()
        session = capture.session
        if capture_2 is not None:
            other = capture_2.session
            grids = [tuple(next(iter(h.session.captures.values())).q.shape[1:4]) for h in handles]
            if other.adapter.name != session.adapter.name or capture_2.vae_ratios != capture.vae_ratios:
                raise ValueError(f"capture_2 comes from a {other.adapter.name} model, capture from a "
                                 f"{session.adapter.name} one: connect the two experts of one model family.")
            if grids[0] != grids[1]:
                raise ValueError(f"The two captures saw latents of different sizes (token frames x height x width "
                                 f"{grids[0]} and {grids[1]}): run both experts' samplers on the same latent.")
        captures = steps_in_sampling_order([h.session.captures for h in handles]) if capture_2 else dict(session.captures)
        temporal, spatial = capture.vae_ratios
        tokens_t = next(iter(session.captures.values())).q.shape[1]
        samples = latent["samples"]
        features = DitFeatures(
            frame_size=(samples.shape[-2] * spatial, samples.shape[-1] * spatial),
            frame_count=source_frame_count(tokens_t, temporal),
            chunk_frames=[latent_frame_positions(tokens_t, temporal)],
            model=session.adapter.name,
            captures=captures,
            storage=" + ".join(h.session.store.summary() for h in handles),
        )
        return io.NodeOutput(features, ui=ui.PreviewText(features.storage))


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
                *extraction_inputs(),
                io.Int.Input("reference_frame", default=0, min=0, max=100000,
                             tooltip="Latent frame placed first in every chunk (the frame you will query)."),
                *storage_inputs(),
                io.Conditioning.Input("conditioning", optional=True,
                                      tooltip="Text conditioning (an empty prompt is best). Unconnected: a zero context, "
                                              "which avoids loading the text encoder."),
            ],
            outputs=[DitFeaturesType.Output(display_name="features")],
        )

    @classmethod
    def execute(cls, model, vae, images, blocks, sigma, seed, encoding, frames_per_chunk, reference_frame,
                storage_dtype, storage, conditioning=None) -> io.NodeOutput:
        model_blocks(blocks, "read", model, best=True)  # an unsupported model or unreadable blocks: refused first
        extraction = VideoExtraction(blocks, sigma, seed, encoding, frames_per_chunk, storage_dtype, storage)
        latent, positions = extraction.encode(vae, images)
        extraction, chosen = with_best_block(extraction, model, latent, positions, images, conditioning)
        features = extraction.extract(model, latent, positions, images, conditioning, reference_frame)
        return io.NodeOutput(features, ui=ui.PreviewText("\n".join(filter(None, [chosen, features.storage]))))


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
                io.Int.Input("block", default=-1, min=-2, max=1000,
                             tooltip="Captured block to read; -1 = the first captured; -2 = the captured block with the "
                                     "best label-free score on these frames (blocks 'best'; needs images)."),
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
        chosen = ""
        if block == -2:
            if images is None:
                raise ValueError("block -2 (best) scores the captured blocks on the video: connect the images.")
            block, chosen = choose_captured_block(features, images, TrackSettings(temperature=temperature or None))
        chunks = features.select(None if block < 0 else block, None if step < 0 else step, branch, sample)
        point = torch.tensor([[2 * (x + 0.5) / width - 1, 2 * (y + 0.5) / height - 1]])
        positions, maps = point_cost_over_video(chunks, float(query_frame), point, temperature or None, compute_window())
        maps = maps[:, 0]  # one query point
        shown = ui.PreviewText(chosen) if chosen else None
        if images is None:
            return io.NodeOutput(render_heatmaps(maps, (height, width)), ui=shown)
        nearest = [min(range(len(positions)), key=lambda i: abs(positions[i] - f)) for f in range(images.shape[0])]
        return io.NodeOutput(render_heatmaps(maps[nearest], (height, width), images[..., :3], opacity), ui=shown)


NODES = [AttentionCapture, CapturedFeatures, ExtractVideoFeatures, AttentionMap]
