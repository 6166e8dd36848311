"""Features of a real video: encode frames, then one clean forward per chunk (DiffTrack §5.1-5.4)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch
import comfy.model_management
import comfy.samplers
import comfy.utils
from comfy_api.latest import io

from ..ditcorr import DitFeatures, plan_chunks
from .capture import CaptureRequest, CaptureSession, ForwardStopped
from .encoding import ENCODINGS, encode_with_progress
from .vocabulary import blocks_tooltip, capture_request, model_and_adapter, model_blocks


def single_forward(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """A 'sampler' that only runs the model once at the first σ (the hooks do the rest)."""
    return model(x, sigmas[0] * x.new_ones([x.shape[0]]), **(extra_args or {}))


def extract_from_latent(patcher, latent: torch.Tensor, positions: tuple[float, ...], frame_size: tuple[int, int],
                        frame_count: int, conditioning: list | None, blocks: list[int], sigma: float, seed: int = 0,
                        frames_per_chunk: int = 13, reference_frame: int = 0, request: CaptureRequest | None = None,
                        on_chunk: Callable[[], None] = lambda: None, chunks: list[list[int]] | None = None) -> DitFeatures:
    """q/k of `blocks` for every chunk of a clean latent noised to `sigma`.

    latent: [1, C, T, h, w] (not yet process_latent_in'ed, as a VAE returns it).
    positions: source-frame position of each latent frame.
    frame_size / frame_count: (height, width) and length of the source video.
    conditioning: ComfyUI CONDITIONING, or None for the model family's zero context.
    reference_frame: latent frame placed first in every chunk.
    chunks: the latent frames of each forward instead (the first of each its reference), for other layouts than
        plan_chunks' strided one.
    The user's model is not modified: the hook lives on a clone.
    """
    diffusion_model, adapter = model_and_adapter(patcher)
    if conditioning is None:
        context, extra = adapter.zero_context(diffusion_model)
        conditioning = [[context, extra]]
    request = dataclasses.replace(request or CaptureRequest(), stop_after_last_block=True)
    session = CaptureSession(adapter, diffusion_model, blocks, request)
    model = patcher.clone()
    session.install(model)

    chunks = chunks if chunks is not None else plan_chunks(latent.shape[2], frames_per_chunk, reference_frame)
    features = DitFeatures(
        frame_size=frame_size,
        frame_count=frame_count,
        chunk_frames=[tuple(positions[i] for i in chunk) for chunk in chunks],
        model=adapter.name,
    )
    sampler = comfy.samplers.KSAMPLER(single_forward)
    sigmas = torch.tensor([float(sigma), 0.0])
    generator = torch.Generator().manual_seed(seed)
    for index, chunk in enumerate(chunks):
        comfy.model_management.throw_exception_if_processing_interrupted()
        chunk_latent = latent[:, :, chunk]
        noise = torch.randn(chunk_latent.shape, generator=generator, dtype=torch.float32)
        guider = comfy.samplers.CFGGuider(model)
        guider.set_conds(conditioning, conditioning)
        guider.set_cfg(1.0)
        session.chunk = index
        try:
            guider.sample(noise, chunk_latent, sampler, sigmas, seed=seed, disable_pbar=True)
        except ForwardStopped:
            pass
        problem = session.missing()
        if problem is not None:
            raise RuntimeError(problem)
        features.captures.update(session.captures)
        on_chunk()
    session.store.synchronize()
    features.storage = session.store.summary()
    return features


def progress_step(bar: comfy.utils.ProgressBar) -> Callable[[], None]:
    """A callback for long loops: advance a node's progress bar, stop when the user cancels."""
    def step():
        comfy.model_management.throw_exception_if_processing_interrupted()
        bar.update(1)
    return step


def extract_with_progress(patcher, latent: torch.Tensor, positions: tuple[float, ...], images: torch.Tensor,
                          conditioning: list | None, blocks: list[int], sigma: float, seed: int, frames_per_chunk: int,
                          reference_frame: int, request: CaptureRequest) -> DitFeatures:
    """extract_from_latent for the video `images`, with a progress bar over its chunks."""
    if reference_frame >= latent.shape[2]:
        raise ValueError(f"reference_frame {reference_frame} is outside the {latent.shape[2]} latent frames of this video.")
    bar = comfy.utils.ProgressBar(len(plan_chunks(latent.shape[2], frames_per_chunk, reference_frame)))
    return extract_from_latent(patcher, latent, positions, tuple(images.shape[1:3]), images.shape[0], conditioning,
                               blocks, sigma, seed, frames_per_chunk, reference_frame, request, progress_step(bar))


STRIDED_CHUNKS = ("Latent frames per forward: the reference frame plus strided others; chunks repeat until every "
                  "frame is covered. 0 = the whole video in one forward.")


def extraction_inputs(blocks_help: str = "", when: str = "", chunking: str = STRIDED_CHUNKS) -> list:
    """How features are extracted from a video: the inputs Extract Features, Track Points and Propagate Mask share.
    `blocks_help` is appended to the blocks tooltip, `when` put before the others ("When extracting: "); `chunking`
    says how the node lays its forwards out."""
    return [
        io.String.Input("blocks", default="auto",
                        tooltip=blocks_tooltip("Blocks whose self-attention q/k are read", "read", best=True)
                        + blocks_help),
        io.Float.Input("sigma", default=0.1, min=0.001, max=1.0, step=0.001,
                       tooltip=when + "Noise level of the forward (flow models; timestep = 1000·σ). 0.02-0.2 works "
                                      "best: low enough to keep the content, high enough to be in-distribution."),
        io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                     tooltip=when + "Seed of the noise added to the latent."),
        io.Combo.Input("encoding", options=list(ENCODINGS), default="per_frame",
                       tooltip=when + "per_frame: each frame encoded alone, one latent frame per video frame "
                                      "(DiffTrack). native: the whole clip at once, with the VAE's temporal "
                                      "compression (fewer, coarser frames; tracks are interpolated)."),
        io.Int.Input("frames_per_chunk", default=13, min=0, max=1024,
                     tooltip=when + chunking),
    ]


@dataclass
class VideoExtraction:
    """The settings of extraction_inputs (and the storage inputs), and the one code path that runs them."""

    blocks: str = "auto"
    sigma: float = 0.1
    seed: int = 0
    encoding: str = "per_frame"
    frames_per_chunk: int = 13
    storage_dtype: str = "model"
    storage: str = "cpu"

    def encode(self, vae, images: torch.Tensor, upscale: int = 1) -> tuple[torch.Tensor, tuple[float, ...]]:
        """The latent of the video (its frames enlarged `upscale` times) and the source-frame position of each latent
        frame, with a progress bar."""
        return encode_with_progress(vae, images, self.encoding, upscale=upscale)

    def extract(self, model, latent: torch.Tensor, positions: tuple[float, ...], images: torch.Tensor,
                conditioning: list | None, reference_frame: int = 0) -> DitFeatures:
        """Features of the encoded video with latent frame `reference_frame` in every chunk."""
        request = capture_request("all", 0.0, 1000.0, "cond", self.storage_dtype, self.storage)
        return extract_with_progress(model, latent, positions, images, conditioning, model_blocks(self.blocks, "read", model),
                                     self.sigma, self.seed, self.frames_per_chunk, reference_frame, request)
