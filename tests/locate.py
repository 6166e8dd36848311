"""Where this repository and the ComfyUI host are (the one search rule lives in bench/comfy_host.py)."""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tools"))  # headless: the ComfyUI server driver shared with the demo
from comfy_host import find_comfyui  # noqa: E402

COMFYUI = find_comfyui()
