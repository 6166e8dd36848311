"""CAG through /prompt: SamplerCustomAdvanced + CAG Guider, and the stock KSampler + the CAG patch, each writing a video."""
from __future__ import annotations

import av
import numpy as np
import pytest

from difftrack_devkit.testbed import TINY_VAE, TINY_WAN

COMMON = {
    "1": {"class_type": "UNETLoader", "inputs": {"unet_name": TINY_WAN, "weight_dtype": "default"}},
    "2": {"class_type": "VAELoader", "inputs": {"vae_name": TINY_VAE}},
    "3": {"class_type": "DiffTrackZeroConditioning", "inputs": {"model": ["1", 0]}},
    "4": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 64, "height": 64, "length": 9, "batch_size": 1}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["2", 0]}},
    "9": {"class_type": "CreateVideo", "inputs": {"images": ["8", 0], "fps": 8.0}},
    "10": {"class_type": "SaveVideo", "inputs": {"video": ["9", 0], "filename_prefix": "difftrack/cag", "format": "mp4",
                                                 "codec": "h264"}},
}
CAG = {"cag_scale": 1.0, "blocks": "auto", "start_percent": 0.0, "end_percent": 1.0, "variant": "renormalised",
       "reuse_prefix": True}
GUIDER = {
    "5": {"class_type": "DiffTrackCAGGuider", "inputs": {"model": ["1", 0], "positive": ["3", 0], "negative": ["3", 0],
                                                         "cfg": 4.0, **CAG}},
    "6": {"class_type": "BasicScheduler", "inputs": {"model": ["1", 0], "scheduler": "simple", "steps": 3, "denoise": 1.0}},
    "11": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
    "12": {"class_type": "RandomNoise", "inputs": {"noise_seed": 0}},
    "7": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["12", 0], "guider": ["5", 0], "sampler": ["11", 0],
                                                            "sigmas": ["6", 0], "latent_image": ["4", 0]}},
}
PATCH = {
    "5": {"class_type": "DiffTrackCAG", "inputs": {"model": ["1", 0], **CAG}},
    "7": {"class_type": "KSampler", "inputs": {"model": ["5", 0], "seed": 0, "steps": 3, "cfg": 4.0, "sampler_name": "euler",
                                               "scheduler": "simple", "positive": ["3", 0], "negative": ["3", 0],
                                               "latent_image": ["4", 0], "denoise": 1.0}},
}


PLAIN = {"7": {**PATCH["7"], "inputs": {**PATCH["7"]["inputs"], "model": ["1", 0]}}}


def with_scale(graph: dict, scale: float) -> dict:
    return {key: {**node, "inputs": {**node["inputs"], "cag_scale": scale}} if "cag_scale" in node["inputs"] else node
            for key, node in graph.items()}


def video(comfy_server, graph) -> np.ndarray:
    outputs = comfy_server.run({**COMMON, **graph})["outputs"]
    (entry,) = outputs["10"]["images"]
    with av.open(str(comfy_server.output_path(entry))) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


@pytest.mark.parametrize("graph", [GUIDER, PATCH], ids=["guider", "ksampler_patch"])
def test_cag_generates_a_video_that_is_plain_sampling_at_scale_zero(comfy_server, graph):
    """Known answers through the server: at cag_scale 0 both graphs give the plain KSampler's video exactly (same
    seed, same cfg, no extra pass); at scale 1 the video changes."""
    plain = video(comfy_server, PLAIN)
    assert plain.shape == (9, 64, 64, 3)
    assert np.array_equal(video(comfy_server, with_scale(graph, 0.0)), plain)
    guided = video(comfy_server, graph)
    assert guided.shape == plain.shape and not np.array_equal(guided, plain)
