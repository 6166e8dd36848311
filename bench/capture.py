"""Cost of attention capture and of the early-stopping extraction path, on Wan 2.1 with random weights.

    python bench/capture.py --size tiny|1.3b|14b --device cpu|cuda [--storage gpu,cpu,auto]

Prints one JSON line. All timings go through ComfyUI's own sampling path
(CFGGuider, cfg 1, one model call at σ), on the same latent and text context:
  plain_s    the unpatched model
  capture_s  the model patched by Attention Capture (one block)
  extract_s  the extraction path, which stops the forward after the captured block
the last two for each feature storage (`by_storage`; the first storage's also
at the top level, peak_mem_gib for it). Each is the median of interleaved
repeats, so drift hits all of them alike.
"""
from __future__ import annotations

import json
import resource
import statistics

import torch

from difftrack_devkit import bench

# Wan 2.1 at 480x832, 81 frames: a [16, 21, 60, 104] latent, 21 x 30 x 52 = 32,760 tokens.
SIZES = {
    "tiny": dict(config="wan", latent=(16, 5, 16, 16), repeats=5, dtype=torch.float32),
    "1.3b": dict(config="wan_1.3b", latent=(16, 21, 60, 104), repeats=5, dtype=torch.bfloat16),
    "14b": dict(config="wan_14b", latent=(16, 21, 60, 104), repeats=3, dtype=torch.bfloat16),
}
SIGMA = 0.1


def main() -> None:
    parser = bench.parser(__doc__, SIZES)
    parser.add_argument("--block", type=int, default=None, help="block to capture (default: the middle one)")
    parser.add_argument("--storage", default="gpu,cpu", help="comma-separated feature storages: gpu, cpu, auto")
    args = parser.parse_args()
    run = bench.random_model_run(args, SIZES)

    import comfy.samplers

    from difftrack_pack.nodes.capture import CaptureRequest, CaptureSession
    from difftrack_pack.nodes.extract import single_forward, extract_from_latent

    size, model, adapter, conditioning = run.size, run.model, run.adapter, run.conditioning
    diffusion_model = model.get_model_object("diffusion_model")
    block = run.middle_block if args.block is None else args.block
    latent = torch.randn(1, *size["latent"], generator=run.generator)
    noise = torch.randn(latent.shape, generator=run.generator)
    frames = latent.shape[2]

    storages = args.storage.split(",")
    sessions, patched = {}, {}
    for storage in storages:
        sessions[storage] = CaptureSession(adapter, diffusion_model, [block], CaptureRequest(storage=storage))
        patched[storage] = model.clone()
        sessions[storage].install(patched[storage])

    def forward(patcher):
        guider = comfy.samplers.CFGGuider(patcher)
        guider.set_conds(conditioning, conditioning)
        guider.set_cfg(1.0)
        guider.sample(noise, latent, comfy.samplers.KSAMPLER(single_forward), torch.tensor([SIGMA, 0.0]),
                      seed=0, disable_pbar=True)

    def extract(storage):
        return extract_from_latent(model, latent, tuple(map(float, range(frames))),
                                   (8 * latent.shape[-2], 8 * latent.shape[-1]), frames, conditioning, [block], SIGMA,
                                   frames_per_chunk=0, request=CaptureRequest(storage=storage))

    runs = {"plain": lambda: forward(model)}
    for storage in storages:
        runs[f"capture_{storage}"] = lambda storage=storage: forward(patched[storage])
        runs[f"extract_{storage}"] = lambda storage=storage: extract(storage)
    for warm_up in runs.values():  # model load, kernel selection
        warm_up()
    times = {name: [] for name in runs}
    for _ in range(size["repeats"]):
        for name, timed_run in runs.items():
            times[name].append(run.timed(timed_run)[0])
    if run.cuda:
        torch.cuda.reset_peak_memory_stats()
    forward(patched[storages[0]])
    sessions[storages[0]].store.synchronize()
    peak = (torch.cuda.max_memory_allocated() / 2**30 if run.cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    assert extract(storages[0]).blocks() == [block]

    median = {name: statistics.median(values) for name, values in times.items()}
    plain = median["plain"]
    by_storage = {storage: {
        "capture_s": round(median[f"capture_{storage}"], 4), "overhead_ratio": round(median[f"capture_{storage}"] / plain, 4),
        "extract_s": round(median[f"extract_{storage}"], 4), "extract_ratio": round(median[f"extract_{storage}"] / plain, 4),
        "features": sessions[storage].store.summary()} for storage in storages}
    first = by_storage[storages[0]]
    print(json.dumps({
        "model": f"wan2.1-{args.size}", "device": run.device_name,
        "tokens": latent.shape[2] * (latent.shape[3] // 2) * (latent.shape[4] // 2), "block": block,
        "blocks_total": adapter.block_count(diffusion_model), "plain_s": round(plain, 4),
        **{key: first[key] for key in ("capture_s", "overhead_ratio", "extract_s", "extract_ratio")},
        "captured_bytes": sum(qk.nbytes for qk in sessions[storages[0]].captures.values()),
        "peak_mem_gib": round(peak, 3), "repeats": size["repeats"], "by_storage": by_storage,
        "all_s": {name: [round(t, 4) for t in values] for name, values in times.items()},
    }))


if __name__ == "__main__":
    with torch.inference_mode():  # as ComfyUI's executor runs every node
        main()
