"""Host tier: real ComfyUI model classes at tiny sizes, on CPU (or GPU where present)."""
import sys
from pathlib import Path

import pytest
import torch

import hostlib

sys.path.insert(0, str(Path(__file__).resolve().parent))  # qk_references
hostlib.load_host()


@pytest.fixture(autouse=True)
def like_comfyui_executor():
    """ComfyUI runs every node under torch.inference_mode(); so do the host tests."""
    with torch.inference_mode():
        yield
