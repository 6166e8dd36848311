"""Mask propagation: a mask drawn on one frame carried through the video by the video DiT's attention (DRIFT)."""
from __future__ import annotations

import json
from typing import Iterator

import torch
import comfy.utils
from comfy_api.latest import io, ui

from ..ditcorr.chunks import plan_windows
from ..ditcorr.draw import overlay_labels
from ..ditcorr.mask_prompts import mask_prompts
from ..ditcorr.propagate import (MAX_OBJECTS, PropagationSettings, fused_qk, label_image, label_maps,
                                 propagate_video)
from .analysis import with_best_block
from .extract import VideoExtraction, extract_from_latent, extraction_inputs, progress_step
from .vocabulary import (CATEGORY, DitFeaturesType, capture_request, check_same_video, compute_window, model_blocks,
                         resolve_blocks, storage_inputs, wants_best)

OBJECT_LAYOUTS = {
    "batch": "each mask of the batch is one object (a single mask: one object)",
    "values": "each distinct non-zero value of the (first) mask is one object, in increasing order (a label image, "
              "for example a PNG of object ids through Load Image and Image To Mask)",
}
RUNS = ("Latent frames per forward: the annotated frame plus a run of consecutive frames; runs overlap by the "
        "context, forward then backward in time from the annotated frame, each forward's q/k dropped once used "
        "(memory flat in the video's length). 0 = the whole video in one forward.")


def object_masks(mask: torch.Tensor, layout: str, frame_size: tuple[int, int]) -> torch.Tensor:
    """The annotated objects' masks [N, H, W] (bool) of a MASK input, with a message that says what to change for
    a mask of the wrong size, an empty one, or too many objects."""
    if tuple(mask.shape[-2:]) != frame_size:
        raise ValueError(f"The mask is {mask.shape[-1]}x{mask.shape[-2]} but the frames are {frame_size[1]}x"
                         f"{frame_size[0]}: draw the mask on a frame of this video (or resize it to the frames).")
    mask = mask.reshape(-1, *frame_size)
    if layout == "batch":
        objects = mask > 0.5
    else:
        values = (mask[0] * 255).round()
        levels = [v for v in values.unique().tolist() if v > 0]
        objects = (torch.stack([values == v for v in levels]) if levels
                   else torch.zeros(0, *frame_size, dtype=torch.bool))
    objects = objects[objects.flatten(1).any(dim=1)]  # a mask left empty names no object
    if objects.shape[0] == 0:
        raise ValueError("The mask is empty: paint the object(s) to follow on the annotated frame (right-click Load "
                         "Image > Open in MaskEditor), or connect a mask with something set above 0.5.")
    if objects.shape[0] > MAX_OBJECTS:
        raise ValueError(f"The mask holds {objects.shape[0]} objects; at most {MAX_OBJECTS} propagate at once. With "
                         f"mask_objects 'values', every distinct value is an object: an anti-aliased or soft mask "
                         f"has many; use 'batch', or a label image of object ids.")
    return objects


def nearest(positions, frame: int) -> float:
    """The token frame (source-frame position) nearest a source frame: where the annotated masks go."""
    return min(positions, key=lambda p: abs(p - frame))


def on_device(window, qk) -> tuple[torch.Tensor, torch.Tensor]:
    """A capture's q and k on the compute device (DeviceWindow.get)."""
    moved = window.get(qk)
    return moved.q, moved.k


def model_forwards(model, latent: torch.Tensor, positions: tuple[float, ...], frame_size: tuple[int, int],
                   frame_count: int, conditioning: list | None, extraction: VideoExtraction, reference: int,
                   overlap: int) -> Iterator[tuple[tuple[float, ...], torch.Tensor, torch.Tensor]]:
    """(positions, q, k) of each forward of the propagation's runs (plan_windows around latent frame `reference`),
    blocks fused, extracted one forward at a time and released after use; a progress bar over the forwards.
    frame_size, frame_count: of the frames the latent was encoded from."""
    chunks = plan_windows(latent.shape[2], extraction.frames_per_chunk, reference, overlap)
    request = capture_request("all", 0.0, 1000.0, "cond", extraction.storage_dtype, extraction.storage)
    blocks = model_blocks(extraction.blocks, "read", model)
    bar = comfy.utils.ProgressBar(len(chunks))
    for chunk in chunks:
        features = extract_from_latent(model, latent, positions, frame_size, frame_count, conditioning, blocks,
                                       extraction.sigma, extraction.seed, request=request, chunks=[chunk])
        yield from captured_forwards(features, blocks)
        features.release()
        bar.update(1)


def captured_forwards(features, blocks: list[int]) -> Iterator[tuple[tuple[float, ...], torch.Tensor, torch.Tensor]]:
    """(positions, q, k) of each captured forward of `features` (Extract Features' output, or one forward the node
    extracted), the chosen blocks fused, on the compute device."""
    selections, window = features.select_many(blocks), compute_window()
    for index in range(len(selections[0])):
        yield selections[0][index].frames, *fused_qk([on_device(window, selection[index].qk) for selection in selections])


class PropagateMask(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DiffTrackPropagateMask",
            display_name="Propagate Mask (DiffTrack)",
            category=CATEGORY,
            description=("Carries object masks drawn on one frame through the whole video with the video DiT's own "
                         "attention (after DRIFT: attention as a label-propagation kernel, no training): each frame's "
                         "labels are an attention-weighted sum of those of the annotated frame and the last predicted "
                         "frames, upsampled edge-aware. Outputs per-frame masks, a preview, and per frame a box and "
                         "points for a SAM node to refine them."),
            inputs=[
                io.Mask.Input("mask", tooltip="The object mask(s) drawn on the annotated frame, at the frames' size."),
                io.Combo.Input("mask_objects", options=list(OBJECT_LAYOUTS), default="batch",
                               tooltip="; ".join(f"{name}: {what}" for name, what in OBJECT_LAYOUTS.items()) + "."),
                io.Int.Input("annotated_frame", default=0, min=0, max=100000,
                             tooltip="The frame of the video the mask was drawn on; propagation runs forward and "
                                     "backward in time from it."),
                io.Int.Input("context", default=3, min=0, max=16,
                             tooltip="Predicted frames each frame takes labels from, besides the annotated frame."),
                io.Int.Input("radius", default=6, min=0, max=64,
                             tooltip="Half-width, in tokens, of the window around a token where its labels may come "
                                     "from (0 = the whole frame): objects moving faster need more."),
                io.Int.Input("top_k", default=16, min=0, max=1024,
                             tooltip="Context tokens each token keeps, the most attended (0 = all)."),
                io.Float.Input("temperature", default=0.0, min=0.0, max=1000.0, step=0.01,
                               tooltip="Softmax temperature of q·k/τ; 0 = √(head dim) / 4, sharper than the "
                                       "model's own √(head dim): fewer, better-matching sources per token."),
                io.Boolean.Input("fit_head_weights", default=True,
                                 tooltip="Weight the attention heads for this video: fitted on the annotated frame "
                                         "alone (30 small steps, well under a second), so that heads that see the "
                                         "object count more. Off: every head counts the same."),
                *extraction_inputs(" With features: which captured blocks to fuse ('auto' = every captured block).",
                                   when="When extracting: ", chunking=RUNS),
                *storage_inputs(),
                io.Int.Input("upscale", default=1, min=1, max=3,
                             tooltip="When extracting: the frames are enlarged this many times (bicubic) before the "
                                     "model sees them, so each token covers a smaller patch: small objects and thin "
                                     "parts follow better; radius stays in tokens of the frames as given. Costs about "
                                     "upscale² the tokens (more in time: attention grows with their square)."),
                io.Image.Input("images", tooltip="The video: the masks snap to its edges, and the preview shows it."),
                DitFeaturesType.Input("features", optional=True,
                                      tooltip="Features to propagate with (Extract Features with the annotated frame "
                                              "as reference_frame); without them, model and vae extract them."),
                io.Model.Input("model", optional=True, tooltip="Without features: the video DiT to extract features with."),
                io.Vae.Input("vae", optional=True, tooltip="Without features: the model's VAE."),
                io.Conditioning.Input("conditioning", optional=True,
                                      tooltip="When extracting: an empty prompt (else a zero context)."),
            ],
            outputs=[
                io.Mask.Output(display_name="masks", tooltip="Per frame, every propagated object together."),
                io.Mask.Output(display_name="object_masks",
                               tooltip="Per object, per frame: object 1's frames first, then object 2's, ..."),
                io.Image.Output(display_name="preview", tooltip="The frames with each object tinted and outlined."),
                io.String.Output(display_name="prompts",
                                 tooltip='Per frame and object, for SAM: [{"frame": t, "objects": [{"object": i, '
                                         '"box": [x0, y0, x1, y1], "positive": [{"x": .., "y": ..}], "negative": '
                                         '[..]}]}], pixels; an object not found on a frame has box null.'),
            ],
        )

    @classmethod
    def execute(cls, mask, mask_objects, annotated_frame, context, radius, top_k, temperature, fit_head_weights,
                blocks, sigma, seed, encoding, frames_per_chunk, storage_dtype, storage, upscale, images, features=None,
                model=None, vae=None, conditioning=None) -> io.NodeOutput:
        if features is None and (model is None or vae is None):
            raise ValueError("Connect either features (from Extract Features) or model and vae.")
        frame_count, frame_size = images.shape[0], tuple(images.shape[1:3])
        if not 0 <= annotated_frame < frame_count:
            raise ValueError(f"annotated_frame {annotated_frame} is outside the video's {frame_count} frames "
                             f"(0..{frame_count - 1}): set it to the frame the mask was drawn on.")
        objects = object_masks(mask, mask_objects, frame_size)
        if features is not None and upscale != 1:
            raise ValueError(f"upscale {upscale} applies when this node extracts: with features connected set it to 1, "
                             f"and to propagate at a finer grid enlarge the images for Extract Features (Upscale Image "
                             f"By) and multiply radius by the same factor.")
        settings = PropagationSettings(temperature=temperature or None, context=context, radius=upscale * radius or None,
                                       top_k=top_k, fit_steps=PropagationSettings.fit_steps if fit_head_weights else 0)
        chosen = ""
        if features is not None:
            check_same_video(images, features)
            if wants_best(blocks):
                raise ValueError("blocks 'best' scores blocks while extracting: name the captured blocks to fuse, "
                                 "or connect model and vae instead of features.")
            forwards = captured_forwards(features, resolve_blocks(blocks, "fuse", features.blocks()))
            positions = sorted({p for frames in features.chunk_frames for p in frames})
            annotated = nearest(positions, annotated_frame)
        else:
            model_blocks(blocks, "read", model, best=True)  # an unsupported model or unreadable blocks: refused first
            extraction = VideoExtraction(blocks, sigma, seed, encoding, frames_per_chunk, storage_dtype, storage)
            latent, positions = extraction.encode(vae, images, upscale)
            extraction, chosen = with_best_block(extraction, model, latent, positions, images, conditioning, upscale)
            annotated = nearest(positions, annotated_frame)
            forwards = model_forwards(model, latent, positions, (upscale * frame_size[0], upscale * frame_size[1]),
                                      frame_count, conditioning, extraction, positions.index(annotated), context)
        bar = comfy.utils.ProgressBar(max(1, len(positions) - 1) + frame_count)  # token frames, then pixel frames
        step = progress_step(bar)
        labels, _ = propagate_video(forwards, annotated, objects, settings, step)
        maps = label_maps(labels, images, annotated_frame, label_image(objects), step)
        count = objects.shape[0]
        per_object = torch.stack([maps == index for index in range(1, count + 1)]).flatten(0, 1).float()
        preview = overlay_labels(images, maps)
        shown = ui.ImageSaveHelper.save_animated_webp(preview, "difftrack_masks", io.FolderType.temp, cls, fps=8.0,
                                                      lossless=False, quality=80, method=4)
        extra = {"text": (chosen,)} if chosen else {}
        return io.NodeOutput((maps > 0).float(), per_object, preview, json.dumps(mask_prompts(maps, count)),
                             ui={**ui.SavedImages([shown], is_animated=frame_count > 1).as_dict(), **extra})


NODES = [PropagateMask]
