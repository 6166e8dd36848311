"""Tiny Wan + tiny VAE through the stock loaders; Extract Features -> Attention Map posted to /prompt."""
from __future__ import annotations

import numpy as np
from PIL import Image

from difftrack_devkit.testbed import CLIP_FRAMES, CLIP_SIZE, VIDEO_FRONT

NODES = ["DiffTrackAttentionCapture", "DiffTrackCapturedFeatures", "DiffTrackExtractFeatures", "DiffTrackAttentionMap",
         "DiffTrackTrackPoints", "DiffTrackDrawTracks", "DiffTrackSaveTracks", "DiffTrackCAG", "DiffTrackCAGGuider",
         "DiffTrackCAGSampler", "DiffTrackZeroConditioning"]


def test_server_lists_the_nodes_with_tooltips(comfy_server):
    info = comfy_server.get("/object_info")
    for node in NODES:
        assert node in info, f"{node} not registered; server log:\n{comfy_server.log()}"
        inputs = {**info[node]["input"].get("required", {}), **info[node]["input"].get("optional", {})}
        assert all(spec[1].get("tooltip") for spec in inputs.values() if len(spec) > 1), f"{node} has an input without tooltip"


def test_extract_features_to_attention_map(comfy_server):
    prompt = {
        **VIDEO_FRONT,  # 1 model, 2 vae, 4 the clip's frames
        "5": {"class_type": "DiffTrackExtractFeatures", "inputs": {
            "model": ["1", 0], "vae": ["2", 0], "images": ["4", 0], "blocks": "auto", "sigma": 0.1, "seed": 0,
            "encoding": "per_frame", "frames_per_chunk": 5, "reference_frame": 0, "storage_dtype": "model", "storage": "cpu"}},
        "6": {"class_type": "DiffTrackAttentionMap", "inputs": {
            "features": ["5", 0], "x": 16, "y": 32, "query_frame": 0, "block": -1, "step": -1, "branch": "cond",
            "sample": 0, "temperature": 0.0, "opacity": 0.6, "images": ["4", 0]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "difftrack_e2e"}},
    }
    entry = comfy_server.run(prompt)
    images = entry["outputs"]["7"]["images"]
    assert len(images) == CLIP_FRAMES
    for image in images:
        pixels = np.asarray(Image.open(comfy_server.output_path(image)))
        assert pixels.shape == (CLIP_SIZE, CLIP_SIZE, 3)
        assert pixels.std() > 5  # a heat map over the frame, not a blank image
