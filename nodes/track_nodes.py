"""Nodes for point tracking: track clicked points, draw the tracks, save them."""
from __future__ import annotations

import contextlib
import os

import torch
import comfy.utils
import folder_paths
from comfy_api.latest import io, ui

from ..ditcorr.draw import draw_tracks, point_masks
from ..ditcorr.points import grid_points, parse_points, to_comfy_tracks, tracks_to_csv, tracks_to_json, tracks_to_npz
from ..ditcorr.refine import prefetch_frames
from ..ditcorr.track import PIXEL_READOUT, READOUTS, Tracks, TrackSettings, track_points
from .analysis import choose_captured_block, with_best_block
from .extract import VideoExtraction, extraction_inputs, progress_step
from .vocabulary import (AUTO_BLOCKS, CATEGORY, DitFeaturesType, check_same_video, compute_window, model_blocks,
                         resolve_blocks, storage_inputs, wants_best)

POINTS_TOOLTIP = ('Query points as JSON, pixels of the frames: [{"x": 120, "y": 80}] (KJNodes Points Editor), '
                  '[{"x": 120, "y": 80, "t": 10}] with a query frame, or [[120, 80], ...]. Ignored when grid_size > 0.')


def merge(parts: list[tuple[torch.Tensor, Tracks]], count: int) -> Tracks:
    """Tracks of query subsets (row indices, Tracks) back in the original query order."""
    frames = parts[0][1].path.shape[0]
    merged = Tracks(torch.zeros(frames, count, 2), torch.zeros(frames, count, dtype=torch.bool),
                    torch.zeros(frames, count), torch.zeros(frames, count))
    for rows, tracks in parts:
        for name in ("path", "visible", "confidence", "cycle_error"):
            getattr(merged, name)[:, rows] = getattr(tracks, name).cpu()
    return merged


class TrackPoints(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DiffTrackTrackPoints",
            display_name="Track Points (DiffTrack)",
            category=CATEGORY,
            description=("Tracks points through a video with the video DiT's own attention (DiffTrack): from captured "
                         "features, or from MODEL + VAE + images (then features are extracted per query frame). "
                         "Outputs ComfyUI TRACKS (core WanMove nodes read them), a visibility mask and coordinates."),
            inputs=[
                io.String.Input("points", multiline=True, default='[{"x": 64, "y": 64}]', tooltip=POINTS_TOOLTIP),
                io.Int.Input("grid_size", default=0, min=0, max=256,
                             tooltip="0: track `points`. N > 0: track an N x N grid (inside `mask` if connected) instead."),
                io.Int.Input("query_frame", default=0, min=0, max=100000,
                             tooltip="Frame of the grid, and of points given without a frame."),
                io.Combo.Input("readout", options=list(READOUTS), default=PIXEL_READOUT,
                               tooltip="argmax: the best token's centre (published DiffTrack, 16-px steps on Wan). "
                                       "refined: soft-argmax around it, a few pixels. refined+pixel: refined, then "
                                       "each point aligned on the images' pixels (Lucas-Kanade, checked, carried "
                                       "through time): still points stay still, textured points land within a "
                                       "pixel; needs the images; about 0.05 s more than refined for 1,000 points "
                                       "over 81 frames on an H100."),
                io.Int.Input("window", default=2, min=0, max=8,
                             tooltip="refined: half-width of the soft-argmax window, in tokens."),
                io.Float.Input("cycle_tolerance", default=1.0, min=0.0, max=100.0, step=0.1,
                               tooltip="A point is occluded when tracking it back misses its start by more tokens than this."),
                io.Float.Input("min_confidence", default=3.0, min=0.0, max=1000.0, step=0.1,
                               tooltip="A point is occluded when its cost peak is lower than this many times a flat map."),
                io.Float.Input("temperature", default=0.0, min=0.0, max=1000.0, step=0.01,
                               tooltip="Softmax temperature of q·k/τ; 0 = √(head dim)."),
                *extraction_inputs(f" With features: which captured blocks to fuse ('auto' = {AUTO_BLOCKS['fuse']}; "
                                   "'best' = the captured block with the best label-free score).",
                                   when="When extracting: "),
                *storage_inputs(),
                DitFeaturesType.Input("features", optional=True, tooltip="Features to track with (from Extract Features)."),
                io.Model.Input("model", optional=True, tooltip="Without features: the video DiT to extract features with."),
                io.Vae.Input("vae", optional=True, tooltip="Without features: the model's VAE."),
                io.Image.Input("images", optional=True, tooltip="The video. Needed without features; with features, checked against them."),
                io.Conditioning.Input("conditioning", optional=True, tooltip="When extracting: an empty prompt (else a zero context)."),
                io.Mask.Input("mask", optional=True, tooltip="Restricts the grid to where the mask is set (its query frame)."),
            ],
            outputs=[
                io.Tracks.Output(display_name="tracks"),
                io.Mask.Output(display_name="visibility", tooltip="Per frame, a disc at each visible point."),
                io.String.Output(display_name="coordinates", tooltip="Tracks as JSON point lists (WanMoveTracksFromCoords, KJNodes, ATI)."),
            ],
        )

    @classmethod
    def execute(cls, points, grid_size, query_frame, readout, window, cycle_tolerance, min_confidence, temperature, blocks,
                sigma, seed, encoding, frames_per_chunk, storage_dtype, storage, features=None, model=None, vae=None,
                images=None, conditioning=None, mask=None) -> io.NodeOutput:
        if features is None and (model is None or vae is None or images is None):
            raise ValueError("Connect either features (from Extract Features) or model, vae and images.")
        frame_size = tuple(images.shape[1:3]) if images is not None else features.frame_size
        frame_count = images.shape[0] if images is not None else features.frame_count
        if features is not None and images is not None:
            check_same_video(images, features)
        if grid_size > 0:
            queries = grid_points(grid_size, frame_size, None if mask is None else mask[min(query_frame, mask.shape[0] - 1)], query_frame)
        else:
            queries = parse_points(points, default_frame=query_frame)
        settings = TrackSettings(readout=readout, window=window, temperature=temperature or None,
                                 cycle_tolerance=cycle_tolerance, min_confidence=min_confidence)
        groups = [(frame, (queries[:, 2] == frame).nonzero()[:, 0]) for frame in queries[:, 2].unique().tolist()]

        chosen = ""
        if features is not None:
            if wants_best(blocks):
                if images is None:
                    raise ValueError("blocks 'best' scores the captured blocks on the video: connect the images.")
                block, chosen = choose_captured_block(features, images, settings)
                blocks = str(block)
            used = resolve_blocks(blocks, "fuse", features.blocks())
            # One step per (query frame, other token frame) pair, as track_points reports them.
            token_frames = len({p for frames in features.chunk_frames for p in frames})
            bar = comfy.utils.ProgressBar(max(1, token_frames - 1) * len(groups))
            tracks = track_points(features.select_many(used), queries, frame_size, frame_count, settings, progress_step(bar),
                                  compute_window(), images)
        else:
            model_blocks(blocks, "read", model, best=True)  # an unsupported model or unreadable blocks: refused first
            extraction = VideoExtraction(blocks, sigma, seed, encoding, frames_per_chunk, storage_dtype, storage)
            latent, positions = extraction.encode(vae, images)
            extraction, chosen = with_best_block(extraction, model, latent, positions, images, conditioning)
            used = model_blocks(extraction.blocks, "read", model)
            parts = []
            for frame, rows in groups:  # one extraction per query frame, with that frame in every chunk
                reference = min(range(len(positions)), key=lambda i: abs(positions[i] - frame))
                window = compute_window()
                # The pixel step's frames copy to the device while the model runs.
                copier = (prefetch_frames(images, queries[rows], window.device, settings.pixel)
                          if readout == PIXEL_READOUT else None)
                with copier or contextlib.nullcontext():
                    extracted = extraction.extract(model, latent, positions, images, conditioning, reference)
                    bar = comfy.utils.ProgressBar(max(1, len(positions) - 1))  # every frame but the query's
                    parts.append((rows, track_points(extracted.select_many(), queries[rows], frame_size, frame_count,
                                                     settings, progress_step(bar), window, images, copier)))
                extracted.release()
            tracks = merge(parts, queries.shape[0])
        radius = max(2.0, min(frame_size) / 90)
        masks = point_masks(tracks.path, tracks.visible, frame_size, radius)
        shown = {}
        if images is not None:  # the query frame, for the points editor (a key of its own: no duplicate preview)
            frame = min(query_frame, images.shape[0] - 1)
            shown["difftrack_frame"] = ui.ImageSaveHelper.save_images(
                images[frame:frame + 1], "difftrack_frame", io.FolderType.temp, cls, compress_level=1)
        if chosen:
            shown["text"] = (chosen,)
        comfy_tracks = {**to_comfy_tracks(tracks), "difftrack_blocks": used}  # extra keys are ignored by core nodes
        return io.NodeOutput(comfy_tracks, masks, tracks_to_json(tracks.path), ui=shown)


class DrawTracks(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DiffTrackDrawTracks",
            display_name="Draw Tracks (DiffTrack)",
            category=CATEGORY,
            description="Draws tracks on the video: fading trails, a colour per point, hollow markers while occluded.",
            inputs=[
                io.Image.Input("images", tooltip="The frames the tracks were computed on."),
                io.Tracks.Input("tracks", tooltip="From Track Points (or any node giving ComfyUI TRACKS)."),
                io.Int.Input("trail", default=16, min=1, max=1000, tooltip="How many past frames each trail spans."),
                io.Float.Input("radius", default=0.0, min=0.0, max=100.0, step=0.5, tooltip="Marker radius in pixels; 0 = from the frame size."),
                io.Float.Input("line_width", default=0.0, min=0.0, max=100.0, step=0.5, tooltip="Trail width in pixels; 0 = from the radius."),
                io.Boolean.Input("show_ids", default=False, tooltip="Write each point's number next to it."),
                io.Float.Input("opacity", default=1.0, min=0.0, max=1.0, step=0.05, tooltip="Opacity of everything drawn."),
            ],
            outputs=[io.Image.Output(display_name="images")],
        )

    @classmethod
    def execute(cls, images, tracks, trail, radius, line_width, show_ids, opacity) -> io.NodeOutput:
        bar = comfy.utils.ProgressBar(images.shape[0])
        drawn = draw_tracks(images, tracks["track_path"], tracks["track_visibility"], trail, radius or None,
                            line_width or None, show_ids, opacity, progress_step(bar))
        preview = ui.ImageSaveHelper.save_animated_webp(drawn, "difftrack_preview", io.FolderType.temp, cls, fps=8.0,
                                                        lossless=False, quality=80, method=4)
        return io.NodeOutput(drawn, ui=ui.SavedImages([preview], is_animated=drawn.shape[0] > 1))


SAVE_FORMATS = {"json": ("json", lambda p, v: tracks_to_json(p).encode()), "npz": ("npz", tracks_to_npz),
                "csv": ("csv", lambda p, v: tracks_to_csv(p, v).encode())}


class SaveTracks(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DiffTrackSaveTracks",
            display_name="Save Tracks (DiffTrack)",
            category=CATEGORY,
            description=("Writes tracks to the output folder: JSON point lists (KJNodes, ATI, WanMove), npz in TAP-Vid "
                         "layout (tracks [N, T, 2], occluded [N, T]) or CSV."),
            inputs=[
                io.Tracks.Input("tracks", tooltip="From Track Points."),
                io.String.Input("filename_prefix", default="difftrack/tracks", tooltip="File name prefix inside the output folder."),
                io.Combo.Input("format", options=[*SAVE_FORMATS, "all"], default="all", tooltip="Which file(s) to write."),
            ],
            outputs=[io.String.Output(display_name="coordinates", tooltip="The tracks as JSON point lists.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, tracks, filename_prefix, format) -> io.NodeOutput:
        path, visible = tracks["track_path"], tracks["track_visibility"]
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, folder_paths.get_output_directory())
        written = []
        for key in (SAVE_FORMATS if format == "all" else [format]):
            extension, encode = SAVE_FORMATS[key]
            filename = f"{name}_{counter:05}_.{extension}"
            with open(os.path.join(folder, filename), "wb") as file:
                file.write(encode(path, visible))
            written.append({"filename": filename, "subfolder": subfolder, "type": "output"})
        return io.NodeOutput(tracks_to_json(path), ui={"tracks": written})


NODES = [TrackPoints, DrawTracks, SaveTracks]
