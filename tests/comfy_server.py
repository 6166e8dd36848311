"""A real ComfyUI server on 127.0.0.1 (CPU) with this pack installed and tiny models on disk, for e2e tests."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np

import hostlib
from locate import COMFYUI, REPO

TINY_WAN = "difftrack_tiny_wan.safetensors"
TINY_WAN_I2V = "difftrack_tiny_wan_i2v.safetensors"
TINY_VAE = "difftrack_tiny_wan_vae.safetensors"
CLIP = "difftrack_clip.mp4"
CLIP_FRAMES, CLIP_SIZE = 9, 64


def write_models(models: Path) -> None:
    """Tiny Wan DiT and Wan 2.1 VAE with random weights, as files the stock loaders read."""
    hostlib.load_host()
    import safetensors.torch
    from random_models import random_model, random_wan_vae_state_dict

    (models / "diffusion_models").mkdir(parents=True)
    (models / "vae").mkdir(parents=True)
    for config, name in (("wan_tiny", TINY_WAN), ("wan_i2v_tiny", TINY_WAN_I2V)):
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    def __init__(self, base: Path):
        self.base = base
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base / "server.log"
        self.process = None

    def start(self, timeout: float = 180.0) -> None:
        command = [sys.executable, str(COMFYUI / "main.py"), "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
                   "--base-directory", str(self.base), "--use-pytorch-cross-attention", "--disable-auto-launch"]
        self.process = subprocess.Popen(command, cwd=COMFYUI, stdout=self.log_path.open("w"), stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited during start-up:\n{self.log()}")
            try:
                self.get("/system_stats")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
        raise RuntimeError(f"ComfyUI did not answer within {timeout:.0f} s:\n{self.log()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.loads(response.read())

    def post(self, path: str, payload) -> bytes:
        request = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read()

    def run(self, prompt: dict, timeout: float = 300.0) -> dict:
        """Queue an API-format prompt; return its history entry once done. Fails with the server's words."""
        try:
            prompt_id = json.loads(self.post("/prompt", {"prompt": prompt, "client_id": str(uuid.uuid4())}))["prompt_id"]
        except urllib.error.HTTPError as error:
            raise AssertionError(f"/prompt refused the workflow: {error.read().decode()}") from None
        deadline = time.time() + timeout
        while time.time() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history:
                entry = history[prompt_id]
                status = entry.get("status", {})
                if status.get("status_str") != "success":
                    raise AssertionError(f"workflow failed: {json.dumps(status.get('messages'), indent=1)[-4000:]}")
                return entry
            time.sleep(0.3)
        raise AssertionError(f"workflow did not finish within {timeout:.0f} s:\n{self.log()}")


def start_server(base: Path) -> ComfyServer:
    """Lay out a ComfyUI base directory (the pack linked into custom_nodes, tiny models, a clip) and start a server."""
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "comfyui-difftrack").symlink_to(REPO, target_is_directory=True)
    write_models(base / "models")
    (base / "input").mkdir()
    write_clip(base / "input" / CLIP)
    server = ComfyServer(base)
    server.start()
    return server
