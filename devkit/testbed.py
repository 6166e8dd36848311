"""A real ComfyUI server on 127.0.0.1 with this pack installed, tiny models and a clip on disk (e2e tests, the demo,
workflow thumbnails), and the shipped workflows turned into prompts those tiny models run.

Two layouts under the same file names: random-weight tiny models and a 64x64, 9-frame clip (tests), or the tiny
models trained on synthetic clips (assets/tiny_wan/) and the bundled 256x256, 13-frame clip (assets/demo/).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from .host import REPO, find_comfyui, load_host
from .server import ComfyServer, install_pack

TINY_WAN = "difftrack_tiny_wan.safetensors"
TINY_WAN_I2V = "difftrack_tiny_wan_i2v.safetensors"
TINY_VAE = "difftrack_tiny_wan_vae.safetensors"
CLIP = "difftrack_clip.mp4"
CLIP_FRAMES, CLIP_SIZE = 9, 64
FIRST_FRAME_MASK = "difftrack_first_frame.png"  # the mask workflow's Load Image: the clip's frame 0, object painted

# The first nodes of an API prompt that reads the clip: "1" the tiny DiT, "2" its VAE, "4" the clip's frames.
VIDEO_FRONT = {
    "1": {"class_type": "UNETLoader", "inputs": {"unet_name": TINY_WAN, "weight_dtype": "default"}},
    "2": {"class_type": "VAELoader", "inputs": {"vae_name": TINY_VAE}},
    "3": {"class_type": "LoadVideo", "inputs": {"file": CLIP}},
    "4": {"class_type": "GetVideoComponents", "inputs": {"video": ["3", 0]}},
}

TRAINED = REPO / "assets" / "tiny_wan"  # bench/train_tiny.py writes here
TRAINED_VAE, TRAINED_DIT = "difftrack_tiny_wan21_vae.safetensors", "difftrack_tiny_wan21_t2v.safetensors"
TRAINED_MOTION = "mostly-one-way-slow"  # the regime of its training clips (ditcorr/synthetic.py), the one it generates
DEMO_CLIP, DEMO_TRUTH = REPO / "assets" / "demo" / "clip.mp4", REPO / "assets" / "demo" / "clip_tracks.npz"
DEMO_FRAMES, DEMO_SIZE, DEMO_SEED = 13, 256, 7  # the demo clip: tools/demo.py renders it from seed DEMO_SEED
# Where bench/quality.py found the trained DiT tracking best (block and sigma).
TRAINED_QUALITY = REPO / "bench" / "results" / "quality_tiny_v2_seed1000_h100.json"


def write_models(models: Path, names: dict[str, str]) -> None:
    """Tiny models with random weights as files the stock loaders read: names maps a config ("wan", "wan_i2v", or
    "vae" for the Wan 2.1 VAE) to its file name."""
    load_host(find_comfyui())
    import safetensors.torch

    from .models import random_model, random_wan_vae_state_dict

    for config, name in names.items():
        if config == "vae":
            state, folder = random_wan_vae_state_dict(), "vae"
        else:
            state, folder = random_model(config).get_model_object("diffusion_model").state_dict(), "diffusion_models"
        safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, models / folder / name)


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


def write_first_frame_mask(path: Path, frame: np.ndarray, mask: np.ndarray) -> None:
    """A frame [H, W, 3] uint8 as a PNG whose alpha is cleared where `mask` [H, W] (bool) is set: what ComfyUI's mask
    editor saves, and Load Image's MASK output (1 - alpha) gives back the painted object."""
    from PIL import Image

    alpha = np.where(mask, 0, 255).astype(np.uint8)
    Image.fromarray(np.dstack([frame, alpha]), "RGBA").save(path)


def first_frame(clip: Path) -> np.ndarray:
    """Frame 0 of a video file, [H, W, 3] uint8."""
    import av

    with av.open(str(clip)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


def lay_out(base: Path, trained: bool = False, i2v: bool = True) -> None:
    """A ComfyUI base directory: the pack linked into custom_nodes, the tiny models (random, or the trained ones;
    the i2v model is always random) and a clip under the names above."""
    install_pack(base)
    for folder in (base / "models" / "diffusion_models", base / "models" / "vae", base / "input"):
        folder.mkdir(parents=True, exist_ok=True)
    if trained:
        (base / "models" / "diffusion_models" / TINY_WAN).symlink_to(TRAINED / TRAINED_DIT)
        (base / "models" / "vae" / TINY_VAE).symlink_to(TRAINED / TRAINED_VAE)
        shutil.copy(DEMO_CLIP, base / "input" / CLIP)
        from difftrack_pack.ditcorr.synthetic import Scene  # the demo clip's scene (tools/demo.py): its sprites

        mask = Scene(DEMO_SEED, (DEMO_SIZE, DEMO_SIZE), DEMO_FRAMES).labels()[0].numpy() > 0
    else:
        write_models(base / "models", {"wan": TINY_WAN, "vae": TINY_VAE})
        write_clip(base / "input" / CLIP)
        mask = np.zeros((CLIP_SIZE, CLIP_SIZE), dtype=bool)
        mask[24:40, 8:24] = True  # write_clip's square on frame 0
    write_first_frame_mask(base / "input" / FIRST_FRAME_MASK, first_frame(base / "input" / CLIP), mask)
    if i2v:
        write_models(base / "models", {"wan_i2v": TINY_WAN_I2V})


def start_server(base: Path, trained: bool = False, i2v: bool = True, cpu: bool = True) -> ComfyServer:
    """lay_out, then a ComfyUI server on it (on the CPU unless told otherwise)."""
    lay_out(base, trained, i2v)
    server = ComfyServer(find_comfyui(), base, cpu=cpu)
    server.start()
    return server


def bypass(prompt: dict, key: str, through: str) -> None:
    """Remove a node, connecting its consumers to what fed its `through` input."""
    source = prompt.pop(key)["inputs"][through]
    for node in prompt.values():
        for name, value in node["inputs"].items():
            if isinstance(value, list) and value and value[0] == key:
                node["inputs"][name] = source


def tiny_prompt(prompt: dict, size: int = CLIP_SIZE, frames: int = CLIP_FRAMES, steps: int = 2,
                trained: bool = False) -> dict:
    """A shipped workflow's prompt (API format) for the tiny models: real model files swapped for the tiny ones, the
    text encoder for Zero Conditioning, frames shrunk to size x size (the clip's), `frames` long, `steps` sampling
    steps. The WanMove model becomes the tiny Wan i2v model, its distill LoRA is bypassed and the optional CLIP
    vision input is dropped (no tiny CLIP vision model exists). With the trained models, Track Points reads the
    block and sigma where bench/quality.py found them tracking best (unless a link, such as Correspondence
    Analysis's choice, feeds them)."""
    prompt = json.loads(json.dumps(prompt))
    for key in [k for k, node in prompt.items() if node["class_type"] == "LoraLoaderModelOnly"]:
        bypass(prompt, key, "model")
    model = next(key for key, node in prompt.items() if node["class_type"] == "UNETLoader")
    scale_x, scale_y = size / 832, size / 480
    small = {"width": size, "height": size}
    tracking = {}
    if trained:
        quality = json.loads(TRAINED_QUALITY.read_text())
        tracking = {"blocks": str(quality["best_block"]), "sigma": quality["sigma"]}
    out = {}
    for key, node in prompt.items():
        kind, inputs = node["class_type"], dict(node["inputs"])
        if kind in ("CLIPLoader", "CLIPVisionLoader", "CLIPVisionEncode"):
            continue
        if kind == "CLIPTextEncode":
            kind, inputs = "DiffTrackZeroConditioning", {"model": [model, 0]}
        if kind == "UNETLoader":
            inputs["unet_name"] = TINY_WAN_I2V if "WanMove" in inputs["unet_name"] else TINY_WAN
        inputs.pop("clip_vision_output", None)
        inputs.update({"VAELoader": {"vae_name": TINY_VAE}, "LoadVideo": {"file": CLIP}, "ImageScale": small,
                       "EmptyHunyuanLatentVideo": {**small, "length": frames},
                       "WanMoveTrackToVideo": {**small, "length": frames},
                       "KSampler": {"steps": steps}, "DiffTrackCAGSampler": {"steps": steps},
                       "BasicScheduler": {"steps": steps}}.get(kind, {}))
        if kind == "DiffTrackTrackPoints":
            points = json.loads(inputs["points"])
            inputs["points"] = json.dumps([{**p, "x": p["x"] * scale_x, "y": p["y"] * scale_y} for p in points])
            inputs.update(frames_per_chunk=5, **{k: v for k, v in tracking.items() if not isinstance(inputs.get(k), list)})
        if kind == "DiffTrackPropagateMask":
            inputs.update(frames_per_chunk=5, **{k: v for k, v in tracking.items() if not isinstance(inputs.get(k), list)})
        if kind == "DiffTrackAttentionMap":
            inputs["x"], inputs["y"] = int(inputs["x"] * scale_x), int(inputs["y"] * scale_y)
        out[key] = {"class_type": kind, "inputs": inputs}
    return out
