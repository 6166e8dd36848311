"""GGUF files of tiny models, laid out as city96's ComfyUI-GGUF reads them, and third-party packs loaded for tests.

The `gguf` package (llama.cpp's writer and quantisers) writes them: 2-D weights of
at least 1,024 values in the chosen quantised type, everything else in F32, and
tensors of more than four dimensions (Wan's patch embedding) flattened with their
shape in `comfy.gguf.orig_shape.<name>`, as the pack's own convert tool does.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch

from .host import REPO

EXTRA_PACKS = REPO.parent / "shared" / "host" / "custom_nodes_extra"
GGUF_PACK = "ComfyUI-GGUF"  # the module name KJNodes looks the pack up by, as ComfyUI names it from its folder


def load_node_pack(folder: str):
    """Import a node pack from ../shared/host/custom_nodes_extra/<folder> as ComfyUI would (module name = folder)."""
    if folder in sys.modules:
        return sys.modules[folder]
    path = EXTRA_PACKS / folder
    if not (path / "__init__.py").is_file():
        raise FileNotFoundError(f"No node pack at {path}: the tests need ../shared/host/custom_nodes_extra beside the checkout.")
    spec = importlib.util.spec_from_file_location(folder, path / "__init__.py", submodule_search_locations=[str(path)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[folder] = module
    spec.loader.exec_module(module)
    return module


def load_node_module(folder: str, path: str, name: str):
    """Import one file of a node pack in custom_nodes_extra as a module of its own (for a file without relative
    imports, when the pack's __init__ needs more than a test host has, as KJNodes' needs ComfyUI's server)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EXTRA_PACKS / folder / path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def write_gguf(state_dict: dict[str, torch.Tensor], path: Path, quantisation: str, arch: str = "wan") -> dict[str, torch.Tensor]:
    """Write `state_dict` as a GGUF file with its large 2-D weights quantised (`quantisation`: a GGMLQuantizationType
    name such as "Q8_0" or "Q4_K"). Returns the state dict the file holds, dequantised (float32): the weights a
    model loaded from it computes with."""
    import gguf

    quantised = gguf.GGMLQuantizationType[quantisation]
    writer = gguf.GGUFWriter(str(path), arch=arch)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    held = {}
    for key, tensor in state_dict.items():
        data = tensor.float().numpy()
        kind = quantised if data.ndim == 2 and data.size >= 1024 else gguf.GGMLQuantizationType.F32
        if data.ndim > 4:  # GGUF holds at most four dimensions
            writer.add_array(f"comfy.gguf.orig_shape.{key}", [int(size) for size in data.shape])
            data = data.reshape(data.shape[0], -1)
        stored = gguf.quants.quantize(data, kind)
        writer.add_tensor(key, stored, raw_dtype=kind)
        held[key] = torch.from_numpy(np.ascontiguousarray(gguf.quants.dequantize(stored, kind))).reshape(tensor.shape)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return held
