"""Where this repository and the ComfyUI host are."""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def find_comfyui() -> Path | None:
    candidates = [os.environ.get("COMFYUI_PATH"), REPO.parent.parent if REPO.parent.name == "custom_nodes" else None,
                  Path.home() / "ComfyUI"]
    for candidate in filter(None, candidates):
        path = Path(candidate).expanduser().resolve()
        if (path / "comfy" / "model_management.py").is_file() and (path / "main.py").is_file():
            return path
    return None


COMFYUI = find_comfyui()
