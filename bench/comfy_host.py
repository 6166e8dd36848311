"""Importing ComfyUI and this pack outside a ComfyUI process (tests and benchmarks)."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
PACK_NAME = "difftrack_pack"


def find_comfyui() -> Path | None:
    """ComfyUI at $COMFYUI_PATH, else the parent of the custom_nodes/ holding this pack, else ~/ComfyUI."""
    candidates = [os.environ.get("COMFYUI_PATH"), REPO.parent.parent if REPO.parent.name == "custom_nodes" else None,
                  Path.home() / "ComfyUI"]
    for candidate in filter(None, candidates):
        path = Path(candidate).expanduser().resolve()
        if (path / "comfy" / "model_management.py").is_file() and (path / "main.py").is_file():
            return path
    return None


def load_host(comfyui: Path, cpu: bool | None = None):
    """Make ComfyUI at `comfyui` importable (on the CPU when `cpu`, or when None and no GPU is present) and import
    this pack by path.

    The pack is imported as a package named difftrack_pack (never by putting the
    repository on sys.path: ComfyUI owns the top-level name `nodes`).
    """
    if str(comfyui) not in sys.path:
        sys.path.insert(0, str(comfyui))
    import comfy.cli_args

    comfy.cli_args.args.cpu = not torch.cuda.is_available() if cpu is None else cpu
    # GPU users run PyTorch's SDPA; CPU's default sub-quadratic backend mis-broadcasts LTXV text masks at batch > 1.
    comfy.cli_args.args.use_pytorch_cross_attention = True
    if PACK_NAME not in sys.modules:
        spec = importlib.util.spec_from_file_location(PACK_NAME, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACK_NAME] = module
        spec.loader.exec_module(module)
    return sys.modules[PACK_NAME]


def require_host(cpu: bool | None = None):
    """load_host on the ComfyUI find_comfyui finds, or exit saying how to point at one."""
    comfyui = find_comfyui()
    if comfyui is None:
        raise SystemExit("ComfyUI not found: set COMFYUI_PATH to a ComfyUI (>= 0.8.0) checkout.")
    return load_host(comfyui, cpu)


def benchmark_model(config: str, dtype: torch.dtype, device: str, generator: torch.Generator):
    """A random-weight model for benchmarks: (ModelPatcher, its adapter, its middle block, a random text CONDITIONING)."""
    from random_models import random_model

    from difftrack_pack.nodes.adapters import adapter_for

    model = random_model(config, dtype=dtype, device=device)
    diffusion_model = model.get_model_object("diffusion_model")
    adapter = adapter_for(diffusion_model)
    context, extra = adapter.zero_context(diffusion_model)
    conditioning = [[torch.randn(context.shape, generator=generator), extra]]
    return model, adapter, adapter.block_count(diffusion_model) // 2, conditioning
