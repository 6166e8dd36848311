"""Correspondence Analysis: which blocks and noise levels of the loaded video DiT match content across frames."""
from __future__ import annotations

import csv
import io as text_io
import json
import os

import torch
import comfy.utils
import folder_paths
from comfy_api.latest import io, ui

from ..ditcorr.analysis import LABEL_FREE_QUANTITIES, REFERENCE_QUANTITIES, Analysis, best_cell, rank_cells
from ..ditcorr.chart import render_analysis
from ..ditcorr.points import check_tracks, grid_points, parse_points
from ..ditcorr.track import DIT_READOUTS, TrackSettings
from .analysis import ANALYSIS_FRAMES, analyse_features, sweep
from .extract import VideoExtraction, progress_step
from .vocabulary import CATEGORY, DitFeaturesType, blocks_tooltip, check_same_video, model_blocks, resolve_blocks

DEFAULT_SIGMAS = "0.05, 0.1, 0.2, 0.4, 0.6, 0.8"


def parse_sigmas(text: str) -> list[float]:
    """Distinct σ values from '0.05, 0.1, 0.2'; each must be in (0, 1]."""
    values = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"Cannot read σ {part!r}: write numbers like '0.05, 0.1, 0.2'.") from None
        if not 0 < value <= 1:
            raise ValueError(f"σ {part} is outside (0, 1]: noise levels of flow models run from just above 0 (clean) "
                             "to 1 (pure noise).")
        values.append(value)
    if not values:
        raise ValueError("No σ values given: write for example '0.05, 0.1, 0.2, 0.4'.")
    return sorted(set(values))


def reference_queries(tracks: dict, images: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Query points on frame 0 from reference TRACKS (the tracks visible there) and the reference itself."""
    path, visible = tracks["track_path"].float().cpu(), tracks["track_visibility"].bool().cpu()
    check_tracks(path, visible)
    frames, height, width = images.shape[:3]
    if path.shape[0] != frames:
        raise ValueError(f"The reference tracks have {path.shape[0]} frames but the video has {frames}: connect the "
                         "tracks made on this video (all of its frames).")
    inside = (path[..., 0] >= 0) & (path[..., 0] < width) & (path[..., 1] >= 0) & (path[..., 1] < height)
    if (visible & ~inside).any():
        x, y = path[visible & ~inside][0].tolist()
        raise ValueError(f"A visible reference point ({x:g}, {y:g}) lies outside the {width}x{height} frames: the "
                         "tracks were made on frames of another size; resize them or the video to match.")
    keep = visible[0]
    if not keep.any():
        raise ValueError("No reference track is visible on frame 0, where the analysis queries them.")
    queries = torch.cat([path[0, keep], torch.zeros(int(keep.sum()), 1)], dim=1)
    return queries, (path[:, keep], visible[:, keep])


def table_csv(analysis: Analysis) -> str:
    rows = [cell.row() for cell in analysis.cells]
    out = text_io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


class CorrespondenceAnalysis(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DiffTrackCorrespondenceAnalysis",
            display_name="Correspondence Analysis (DiffTrack)",
            category=CATEGORY,
            description=("Which blocks and noise levels of this video DiT match content across frames (DiffTrack's "
                         "analysis): per block x σ, matching accuracy against reference tracks, attention confidence "
                         "and cross-frame attention score with their harmonic mean, and a label-free score (cycle "
                         "consistency, peak sharpness, appearance agreement) that needs no reference. Outputs heat "
                         "maps, the best block and σ to wire into Track Points or Extract Features, and the table "
                         "(also saved as CSV)."),
            inputs=[
                io.Image.Input("images", tooltip="The video (its frames also score appearance agreement)."),
                io.String.Input("sigmas", default=DEFAULT_SIGMAS,
                                tooltip="Noise levels to analyse, comma-separated, each in (0, 1]; one forward each "
                                        "(with features: ignored, the captured steps' σ are used)."),
                io.String.Input("blocks", default="all",
                                tooltip=blocks_tooltip("Candidate blocks", "analyse") + " Memory: every candidate's "
                                        "q/k of the analysed frames at once (Wan 1.3B at 480x832: about 60 MB a block "
                                        "for 13 frames); name fewer blocks or analyse fewer frames when that does not "
                                        "fit. Only query rows' statistics are kept between σ values."),
                io.Int.Input("frames", default=ANALYSIS_FRAMES, min=2, max=1024,
                             tooltip="Frames analysed, spread evenly over the video (first and last included): one "
                                     "forward of this many latent frames per σ."),
                io.Int.Input("grid_size", default=16, min=1, max=128,
                             tooltip="Without reference tracks and points: an N x N grid of query points on frame 0."),
                io.String.Input("points", default="", multiline=True,
                                tooltip='Query points on frame 0 instead of the grid, as in Track Points: '
                                        '[{"x": 120, "y": 80}]. Ignored with reference tracks (their points on frame '
                                        '0 are the queries).'),
                io.Combo.Input("readout", options=list(DIT_READOUTS), default="refined",
                               tooltip="Read-out of the tracked matches (argmax = DiffTrack's own analysis; refined = "
                                       "what Track Points does by default)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the noise added to the latent."),
                io.String.Input("filename_prefix", default="difftrack/analysis",
                                tooltip="The table is saved as <prefix>_NNNNN_.csv in the output folder."),
                io.Tracks.Input("reference_tracks", optional=True,
                                tooltip="Tracks of this video to score matching accuracy against (Track Points, "
                                        "another tracker's TRACKS, or saved tracks read back). Without them only "
                                        "the label-free score ranks."),
                DitFeaturesType.Input("features", optional=True,
                                      tooltip="Features captured at many blocks (and steps) instead of extracting "
                                              "here; then model and vae are not needed."),
                io.Model.Input("model", optional=True, tooltip="Without features: the video DiT to analyse."),
                io.Vae.Input("vae", optional=True, tooltip="Without features: the model's VAE."),
                io.Conditioning.Input("conditioning", optional=True,
                                      tooltip="An empty-prompt conditioning; unconnected, a zero context is used."),
            ],
            outputs=[
                io.Image.Output(display_name="image", tooltip="One heat map per quantity, blocks x σ, best cell outlined "
                                "(the node itself previews the ranking one, large)."),
                io.String.Output(display_name="blocks", tooltip="The best block, as Track Points' and Extract "
                                 "Features' blocks input reads it (by the harmonic mean with reference tracks, "
                                 "else by the label-free score)."),
                io.Float.Output(display_name="sigma", tooltip="The best cell's σ, for their sigma input."),
                io.String.Output(display_name="table", tooltip="Every cell's quantities as JSON."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, images, sigmas, blocks, frames, grid_size, points, readout, seed, filename_prefix,
                reference_tracks=None, features=None, model=None, vae=None, conditioning=None) -> io.NodeOutput:
        if features is None and (model is None or vae is None):
            raise ValueError("Connect either features (captured at the candidate blocks) or model and vae.")
        sigma_values = parse_sigmas(sigmas)
        settings = TrackSettings(readout=readout)
        if reference_tracks is not None:
            queries, reference = reference_queries(reference_tracks, images)
        else:
            reference = None
            queries = (parse_points(points) if points.strip() else grid_points(grid_size, tuple(images.shape[1:3])))
            if (queries[:, 2] != 0).any():
                raise ValueError("The analysis queries points on frame 0: drop the points' frames ('t').")
        if features is not None:
            check_same_video(images, features)
        candidates = (resolve_blocks(blocks, "analyse", features.blocks()) if features is not None
                      else model_blocks(blocks, "analyse", model))
        if not candidates:
            raise ValueError("No blocks to analyse: name at least one block, or 'all'.")
        if features is not None:
            bar = comfy.utils.ProgressBar(len(candidates) * len(features.steps()))
            analysis = Analysis(rank_cells(analyse_features(features, images, candidates, queries, reference,
                                                            settings, progress_step(bar))))
        else:
            model_blocks(",".join(map(str, candidates)), "read", model)  # range check before encoding
            latent, positions = VideoExtraction(encoding="per_frame").encode(vae, images)
            bar = comfy.utils.ProgressBar(len(sigma_values) * len(candidates))
            analysis = sweep(model, latent, positions, images, conditioning, candidates, sigma_values, seed, queries,
                             reference, settings, frames, on_cell=progress_step(bar))
        by = "harmonic" if reference is not None else "label_free"
        best, auto = best_cell(analysis.cells, by), best_cell(analysis.cells, "label_free")
        shown = (["delta_avg", *REFERENCE_QUANTITIES[1:], "harmonic"] if reference is not None
                 else list(REFERENCE_QUANTITIES[1:])) + [*LABEL_FREE_QUANTITIES, "label_free"]
        picture = render_analysis(analysis, shown)
        table = {"cells": [cell.row() for cell in analysis.cells], "ranked_by": by,
                 "best": {"block": best.block, "sigma": best.sigma},
                 "label_free_choice": {"block": auto.block, "sigma": auto.sigma}}
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix,
                                                                              folder_paths.get_output_directory())
        filename = f"{name}_{counter:05}_.csv"
        with open(os.path.join(folder, filename), "w", newline="") as file:
            file.write(table_csv(analysis))
        # In the node, the quantity that ranks (and the accuracy, with a reference) large enough to read at the
        # node's width; every panel is in the IMAGE output.
        shown_in_node = render_analysis(analysis, ["delta_avg", by] if reference is not None else [by], font_size=24,
                                        columns=1)
        preview = ui.ImageSaveHelper.save_images(shown_in_node, "difftrack_analysis", io.FolderType.temp, cls)
        summary = (f"best by {by}: block {best.block}, σ {best.sigma:g}; label-free choice: block {auto.block}, "
                   f"σ {auto.sigma:g}; table: {os.path.join(subfolder, filename)}")
        return io.NodeOutput(picture, str(best.block), float(best.sigma), json.dumps(table),
                             ui={"images": preview, "text": (summary,)})


NODES = [CorrespondenceAnalysis]
