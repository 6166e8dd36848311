"""Correspondence analysis over blocks x σ on a video, and the `best` block choice built on it (DiffTrack §4)."""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch
import comfy.model_management

from ..ditcorr import DitFeatures
from ..ditcorr.analysis import Analysis, FrameColours, analysis_frames, best_cell, rank_cells, score_cell
from ..ditcorr.points import grid_points
from ..ditcorr.track import TrackSettings
from .encoding import enlarged
from .extract import VideoExtraction, extract_from_latent
from .vocabulary import capture_request, compute_window, model_blocks, wants_best

ANALYSIS_FRAMES = 13  # one forward of 13 frames spread over the video per σ (DiffTrack's chunk length)
CHOICE_GRID = 8  # query points per side when `best` chooses a block


def analyse_features(features: DitFeatures, images: torch.Tensor, blocks: list[int] | None, queries: torch.Tensor,
                     reference: tuple[torch.Tensor, torch.Tensor] | None, settings: TrackSettings,
                     on_cell: Callable[[], None] = lambda: None) -> list:
    """A cell per captured (block, step) of `features` (blocks None = all captured), σ read from the captures."""
    positions = sorted({p for frames in features.chunk_frames for p in frames})
    colours = FrameColours.of(images, positions, features.token_grid)
    cells = []
    for block in features.blocks() if blocks is None else blocks:
        for step in features.steps():
            comfy.model_management.throw_exception_if_processing_interrupted()
            chunks = features.select(block, step)
            cells.append(score_cell(block, round(chunks[0].qk.sigma, 6), chunks, queries, colours, reference,
                                    settings, compute_window()))
            on_cell()
    return cells


def sweep(model, latent: torch.Tensor, positions: tuple[float, ...], images: torch.Tensor, conditioning: list | None,
          blocks: list[int], sigmas: list[float], seed: int, queries: torch.Tensor,
          reference: tuple[torch.Tensor, torch.Tensor] | None = None, settings: TrackSettings = TrackSettings(),
          frames: int = ANALYSIS_FRAMES, storage: str = "auto", on_cell: Callable[[], None] = lambda: None) -> Analysis:
    """Every (block, σ) cell on `frames` latent frames spread over the video: per σ one forward of them that captures
    every candidate block (it stops after the deepest), then each block's cell; its q/k are released before the
    next σ. latent: [1, C, T, h, w] of the whole video with the source-frame position of each latent frame."""
    chosen = analysis_frames(latent.shape[2], frames)
    request = capture_request("all", 0.0, 1000.0, "cond", "model", storage)
    cells = []
    for sigma in sigmas:
        features = extract_from_latent(model, latent[:, :, chosen], tuple(positions[i] for i in chosen),
                                       tuple(images.shape[1:3]), images.shape[0], conditioning, blocks, sigma, seed,
                                       frames_per_chunk=0, request=request)
        for cell in analyse_features(features, images, blocks, queries, reference, settings, on_cell):
            cell.sigma = sigma
            cells.append(cell)
        features.release()
    return Analysis(rank_cells(cells))


def choose_block(model, latent: torch.Tensor, positions: tuple[float, ...], images: torch.Tensor,
                 conditioning: list | None, blocks: list[int], sigma: float, seed: int,
                 settings: TrackSettings = TrackSettings()) -> tuple[int, str]:
    """`blocks="best"`: the block with the highest label-free score on this video at `sigma` (one extra forward of
    13 frames spread over it), and a line saying what was chosen."""
    queries = grid_points(CHOICE_GRID, tuple(images.shape[1:3]))
    analysis = sweep(model, latent, positions, images, conditioning, blocks, [sigma], seed, queries, None, settings)
    return report_choice(analysis)


def choose_captured_block(features: DitFeatures, images: torch.Tensor, settings: TrackSettings) -> tuple[int, str]:
    """`best` among the blocks already captured in `features` (all its steps scored)."""
    queries = grid_points(CHOICE_GRID, tuple(images.shape[1:3]))
    return report_choice(Analysis(rank_cells(analyse_features(features, images, None, queries, None, settings))))


def report_choice(analysis: Analysis) -> tuple[int, str]:
    best = best_cell(analysis.cells)
    ranked = sorted(analysis.cells, key=lambda c: c.label_free, reverse=True)[:3]
    runners = ", ".join(f"block {c.block}: {c.label_free:.2f}" for c in ranked)
    return best.block, (f"blocks 'best' chose block {best.block} of {len(analysis.blocks)} scored (label-free score "
                        f"{best.label_free:.2f}; top: {runners})")


def with_best_block(extraction: VideoExtraction, model, latent: torch.Tensor, positions: tuple[float, ...],
                    images: torch.Tensor, conditioning: list | None, upscale: int = 1) -> tuple[VideoExtraction, str]:
    """The extraction with `blocks="best"` replaced by the block chosen on this video (and what was chosen), or
    unchanged (and "") for any other blocks. upscale: the latent is of the frames enlarged this many times (the
    choice then tracks on them; they are only made when it runs)."""
    if not wants_best(extraction.blocks):
        return extraction, ""
    block, message = choose_block(model, latent, positions, enlarged(images, upscale), conditioning,
                                  model_blocks("best", "read", model, best=True), extraction.sigma, extraction.seed)
    return dataclasses.replace(extraction, blocks=str(block)), message
