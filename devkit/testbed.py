"""A real ComfyUI server on 127.0.0.1 (CPU) with this pack installed and tiny models on disk, for e2e tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .host import find_comfyui, load_host
from .server import ComfyServer, install_pack

TINY_WAN = "difftrack_tiny_wan.safetensors"
TINY_WAN_I2V = "difftrack_tiny_wan_i2v.safetensors"
TINY_VAE = "difftrack_tiny_wan_vae.safetensors"
CLIP = "difftrack_clip.mp4"
CLIP_FRAMES, CLIP_SIZE = 9, 64


def write_models(models: Path) -> None:
    """Tiny Wan DiT and Wan 2.1 VAE with random weights, as files the stock loaders read."""
    load_host(find_comfyui())
    import safetensors.torch

    from .models import random_model, random_wan_vae_state_dict

    (models / "diffusion_models").mkdir(parents=True)
    (models / "vae").mkdir(parents=True)
    for config, name in (("wan", TINY_WAN), ("wan_i2v", TINY_WAN_I2V)):
        state = random_model(config).get_model_object("diffusion_model").state_dict()
        safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, models / "diffusion_models" / name)
    safetensors.torch.save_file({k: v.contiguous() for k, v in random_wan_vae_state_dict().items()}, models / "vae" / TINY_VAE)


def write_clip(path: Path) -> None:
    """A short clip of a bright square moving right on a dark textured background."""
    import av

    rng = np.random.default_rng(0)
    background = (rng.random((CLIP_SIZE, CLIP_SIZE, 3)) * 60).astype(np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width = stream.height = CLIP_SIZE
        stream.pix_fmt = "yuv420p"
        for t in range(CLIP_FRAMES):
            frame = background.copy()
            frame[24:40, 8 + 4 * t:24 + 4 * t] = (240, 200, 40)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def start_server(base: Path) -> ComfyServer:
    """Lay out a ComfyUI base directory (the pack linked into custom_nodes, tiny models, a clip) and start a server."""
    install_pack(base)
    write_models(base / "models")
    (base / "input").mkdir()
    write_clip(base / "input" / CLIP)
    server = ComfyServer(find_comfyui(), base)
    server.start()
    return server
