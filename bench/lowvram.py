"""Extraction and tracking with ComfyUI's partial loading (low VRAM) against the fully loaded model.

    python bench/lowvram.py --size tiny|1.3b --device cuda [--frames F] [--points N] [--loaded 0.5]

The same random-weight Wan, its weights in CPU memory with the GPU as load device (as ComfyUI's loaders give
it), is run twice through the pack's extraction (13-frame chunks, the middle block) and tracking (refined+pixel,
frames in CPU memory): once fully loaded, once in ComfyUI's LOW_VRAM state with the reserved VRAM set so that
only about `--loaded` of the weights fit on the GPU (the rest are cast in layer by layer, as --lowvram and
--reserve-vram do). Prints one JSON line: the weights' size and how much of them each run had on the GPU,
seconds, peak GPU memory, and how far the partial run's captured q/k and tracks are from the full run's
(`features_max_abs_diff`, `tracks_max_abs_diff_px`, `equal`).
"""
from __future__ import annotations

import json
import time

import torch

from difftrack_devkit import bench
from difftrack_bench.track import SIZES, tracking_inputs  # the same model sizes and inputs as the tracking benchmark


def main() -> None:
    parser = bench.parser(__doc__, SIZES)
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--points", type=int, default=1000)
    parser.add_argument("--loaded", type=float, default=0.5, help="share of the weights the low-VRAM run may load")
    args = parser.parse_args()
    if args.device != "cuda":
        raise SystemExit("Partial loading moves weights between CPU and GPU memory: run with --device cuda.")
    bench.start(args)
    import comfy.model_management as management
    import comfy.model_patcher

    from difftrack_devkit.models import random_model, text_conditioning
    from difftrack_pack.ditcorr.track import TrackSettings, track_points
    from difftrack_pack.nodes.extract import extract_from_latent
    from difftrack_pack.nodes.vocabulary import compute_window, model_and_adapter

    size = SIZES[args.size]
    generator = torch.Generator().manual_seed(0)
    on_cpu = random_model(size["config"], dtype=size["dtype"], device="cpu")
    diffusion_model, adapter = model_and_adapter(on_cpu)
    block = adapter.block_count(diffusion_model) // 2
    conditioning = text_conditioning(on_cpu, generator)
    weight_bytes = sum(t.numel() * t.element_size() for t in diffusion_model.state_dict().values())
    del on_cpu, diffusion_model
    latent, frame_size, frames, queries = tracking_inputs(size, args.frames, args.points, generator)

    def run() -> dict:
        # A fresh copy of the same seeded weights each run, in CPU memory as a loader leaves them.
        weights = random_model(size["config"], dtype=size["dtype"], device="cpu").model
        patcher = comfy.model_patcher.ModelPatcher(weights, load_device=torch.device("cuda"),
                                                   offload_device=torch.device("cpu"))
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        begin = time.perf_counter()
        features = extract_from_latent(patcher, latent, tuple(map(float, range(args.frames))), frame_size, args.frames,
                                       conditioning, [block], 0.1, frames_per_chunk=13)
        loaded = patcher.loaded_size()
        tracks = track_points(features.select_many(), queries, frame_size, args.frames,
                              TrackSettings(readout="refined+pixel"), device_window=compute_window(), frames=frames)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - begin
        result = {"loaded_gib": round(loaded / 2**30, 3), "seconds": round(seconds, 3),
                  "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3),
                  "q": [qk.q.float().cpu() for qk in features.captures.values()], "path": tracks.path.cpu()}
        features.release()
        management.unload_all_models()
        del patcher, weights
        return result

    full = run()
    free = management.get_free_memory(torch.device("cuda"))  # as load_models_gpu counts it (with torch's cache)
    management.vram_state = management.VRAMState.LOW_VRAM
    # ComfyUI loads min(0.4 free, free - 0.8 GiB - reserved) of the weights in this state (load_models_gpu).
    management.EXTRA_RESERVED_VRAM = max(0, int(free - 0.8 * 2**30 - args.loaded * weight_bytes))
    partial = run()
    feature_diff = max((a - b).abs().max().item() for a, b in zip(full.pop("q"), partial.pop("q")))
    track_diff = (full.pop("path") - partial.pop("path")).abs().max().item()
    print(json.dumps({
        "model": f"wan2.1-{args.size}", "device": torch.cuda.get_device_name(), "frames": args.frames,
        "points": args.points, "block": block, "weights_gib": round(weight_bytes / 2**30, 3),
        "full": full, "low_vram": partial, "reserved_vram_gib": round(management.EXTRA_RESERVED_VRAM / 2**30, 3),
        "features_max_abs_diff": feature_diff, "tracks_max_abs_diff_px": track_diff,
        "equal": feature_diff == 0.0 and track_diff == 0.0,
    }))


if __name__ == "__main__":
    with torch.inference_mode():  # as ComfyUI's executor runs every node
        main()
