"""Host-free core of the DiffTrack node pack: features, chunking, correspondence cost, tracking, correspondence
analysis, mask propagation, attention motion flow, metrics, drawing.

Nothing here imports ComfyUI; it needs torch and numpy, and Pillow for the analysis chart's text (all three ship
with ComfyUI).
"""
from .chunks import plan_chunks
from .cost import point_cost, point_cost_over_video, sample_tokens
from .features import BRANCHES, QK, CaptureKey, DitFeatures, FeatureChunk, latent_frame_positions, source_frame_count
from .heatmap import colorize, render_heatmaps
from .selection import parse_indices
from .streaming import DeviceWindow

__all__ = [
    "BRANCHES", "QK", "CaptureKey", "DeviceWindow", "DitFeatures", "FeatureChunk", "colorize", "latent_frame_positions", "parse_indices",
    "plan_chunks", "point_cost", "point_cost_over_video", "render_heatmaps", "sample_tokens", "source_frame_count",
]
