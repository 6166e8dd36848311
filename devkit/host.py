"""Finding the ComfyUI host and importing it outside a ComfyUI process (tests, benchmarks, tools).

    python -m difftrack_devkit.host [--ci]

prints the ComfyUI folder the tests will use. With --ci (what `.ci/run`
calls) a machine without a host gets a writable copy of the shared 0.8.0
source (`../shared/host/ComfyUI`) in `.host/ComfyUI`; when even that is
missing it exits non-zero saying why, so CI never passes on the core tier alone.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CI_COPY = REPO / ".host" / "ComfyUI"  # ignored by git
SHARED_HOST = REPO.parent / "shared" / "host" / "ComfyUI"
NO_HOST = ("no ComfyUI host: set COMFYUI_PATH to a ComfyUI (>= 0.8.0) folder, install this pack under "
           "<ComfyUI>/custom_nodes, put ComfyUI at ~/ComfyUI, or run .ci/run beside ../shared/host/ComfyUI "
           "(it copies that one to .host/ComfyUI)")


def is_comfyui(path: Path) -> bool:
    return (path / "comfy" / "model_management.py").is_file() and (path / "main.py").is_file()


def find_comfyui() -> Path | None:
    """ComfyUI at $COMFYUI_PATH, else the parent of the custom_nodes/ holding this pack, else ~/ComfyUI,
    else the CI copy in .host/ComfyUI."""
    candidates = [os.environ.get("COMFYUI_PATH"), REPO.parent.parent if REPO.parent.name == "custom_nodes" else None,
                  Path.home() / "ComfyUI", CI_COPY]
    for candidate in filter(None, candidates):
        path = Path(candidate).expanduser().resolve()
        if is_comfyui(path):
            return path
    return None


def ensure_ci_host() -> Path:
    """find_comfyui(), else a fresh writable copy of the shared host source (the server writes inside its tree)."""
    found = find_comfyui()
    if found is not None:
        return found
    if not is_comfyui(SHARED_HOST):
        raise SystemExit(f"{NO_HOST}; {SHARED_HOST} is not there either, so host, e2e and browser tests cannot run.")
    shutil.copytree(SHARED_HOST, CI_COPY, symlinks=True)
    for path in CI_COPY.rglob("*"):  # CI lays shared/ out without write bits
        path.chmod(path.stat().st_mode | 0o200)
    CI_COPY.chmod(CI_COPY.stat().st_mode | 0o200)
    return CI_COPY


def load_host(comfyui: Path, cpu: bool | None = None):
    """Make ComfyUI at `comfyui` importable (on the CPU when `cpu`, or when None and no GPU is present) and return
    this pack, imported as the installed package `difftrack_pack` (`pip install -e .`)."""
    import torch

    if str(comfyui) not in sys.path:
        sys.path.insert(0, str(comfyui))  # ComfyUI is a folder of top-level modules, not an installable package
    import comfy.cli_args

    comfy.cli_args.args.cpu = not torch.cuda.is_available() if cpu is None else cpu
    # GPU users run PyTorch's SDPA; CPU's default sub-quadratic backend mis-broadcasts LTXV text masks at batch > 1.
    comfy.cli_args.args.use_pytorch_cross_attention = True
    import difftrack_pack

    return difftrack_pack


def require_host(cpu: bool | None = None):
    """load_host on the ComfyUI find_comfyui finds, or exit saying how to point at one."""
    comfyui = find_comfyui()
    if comfyui is None:
        raise SystemExit(NO_HOST + ".")
    return load_host(comfyui, cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ci", action="store_true", help="copy the shared host when none is found; fail without one")
    found = ensure_ci_host() if parser.parse_args().ci else find_comfyui()
    if found is None:
        raise SystemExit(NO_HOST + ".")
    print(found)


if __name__ == "__main__":
    main()
