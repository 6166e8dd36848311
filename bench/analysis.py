"""Correspondence analysis: does the label-free choice find the blocks and σ that track best? And what a sweep costs.

    python bench/analysis.py --seed S --clips N [--device cpu|cuda] [--unet <dit> --vae <vae>] [--sigmas ...]
    python bench/analysis.py --size 1.3b --frames 81 [--device cuda]

Quality (the first form; the tiny models of assets/tiny_wan/ by default): synthetic clips with exact tracks
(ditcorr.synthetic, 256x256, 13 frames, 64 query points on frame 0, seeded from S, never drawn in training) go
through the node's own sweep (every block captured in one forward per σ), with the exact tracks as reference.
Prints one JSON line: `grid` (block -> σ -> delta_avg, confidence, attention_score, harmonic, label_free and the
label-free parts, each the mean over clips, in percent for delta_avg), `best_block_by_gt`, `best_sigma_by_gt`
and `best_delta_avg` (the cell with the highest mean δavg), `auto_block`, `auto_sigma`, `auto_delta_avg` (the cell
with the highest mean label-free score, and its δavg), `per_clip_auto_delta_avg` (each clip's own label-free choice,
as a user analysing one video gets it), `harmonic_block`/`harmonic_sigma`/`harmonic_delta_avg` (DiffTrack's ranking,
which needs the reference), `seconds`.

Cost (the second form): Wan 2.1 at real size with random weights, 480x832; a sweep of 6 σ over all blocks of 13
per-frame latent frames spread over `--frames` frames, 256 grid points, no reference, against one plain forward of
the whole video (81 frames: 21 latent frames, 32,760 tokens, through CFGGuider as bench/capture.py). Prints
`sweep_s`, `forward_s`, `sweep_to_forward_ratio`, `sweep_forwards_s` (the sweep's forwards alone: the rest is its
statistics), `peak_mem_gib` (the sweep's) and `forward_peak_mem_gib`.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch

from difftrack_devkit import bench
from difftrack_devkit.testbed import TRAINED, TRAINED_DIT, TRAINED_VAE

SIZES = {
    "tiny": dict(config="wan", dtype=torch.float32, frame_size=(64, 64), native_latent=(16, 5, 8, 8)),
    "1.3b": dict(config="wan_1.3b", dtype=torch.bfloat16, frame_size=(480, 832), native_latent=(16, 21, 60, 104)),
}
SIGMAS = (0.05, 0.1, 0.2, 0.4, 0.6, 0.8)


def quality(unet: str, vae: str, seed: int, clips: int, sigmas: tuple[float, ...], size: int = 256, frames: int = 13,
            points: int = 64) -> dict:
    import comfy.sd
    import comfy.utils

    from difftrack_pack.ditcorr.analysis import best_cell
    from difftrack_pack.ditcorr.synthetic import make_clip
    from difftrack_pack.nodes.analysis import sweep
    from difftrack_pack.nodes.encoding import encode_frames
    from difftrack_pack.nodes.vocabulary import model_blocks

    model = comfy.sd.load_diffusion_model(unet)
    autoencoder = comfy.sd.VAE(sd=comfy.utils.load_torch_file(vae))
    blocks = model_blocks("all", "analyse", model)
    quantities = ("delta_avg", "confidence", "attention_score", "harmonic", "label_free", "cycle_rate", "sharpness",
                  "appearance")
    per_cell: dict[tuple[int, float], dict[str, list[float]]] = {}
    own_choice = []
    begin = time.perf_counter()
    for index in range(clips):
        clip = make_clip(seed * 100_003 + index, (size, size), frames, points=points)
        queries = torch.cat([clip.tracks[:, 0], torch.zeros(points, 1)], dim=1)
        latent, positions = encode_frames(autoencoder, clip.frames, "per_frame")
        analysis = sweep(model, latent, positions, clip.frames, None, blocks, list(sigmas), index, queries,
                         (clip.tracks.transpose(0, 1), clip.visible.T))
        for cell in analysis.cells:
            record = per_cell.setdefault((cell.block, cell.sigma), {name: [] for name in quantities})
            for name in quantities:
                record[name].append(getattr(cell, name))
        own_choice.append(best_cell(analysis.cells).delta_avg)
    seconds = time.perf_counter() - begin

    mean = {cell: {name: statistics.fmean(values) for name, values in record.items()} for cell, record in per_cell.items()}
    best = max(mean, key=lambda cell: mean[cell]["delta_avg"])
    auto = max(mean, key=lambda cell: mean[cell]["label_free"])
    harmonic = max(mean, key=lambda cell: mean[cell]["harmonic"])
    percent = lambda value: round(100 * value, 2)  # noqa: E731  (TAP-Vid tables report percent)
    grid = {str(block): {f"{sigma:g}": {name: percent(value) if name == "delta_avg" else round(value, 4)
                                         for name, value in mean[(block, sigma)].items()} for sigma in sigmas}
            for block in blocks}
    return {
        "grid": grid, "best_block_by_gt": best[0], "best_sigma_by_gt": best[1],
        "best_delta_avg": percent(mean[best]["delta_avg"]), "auto_block": auto[0], "auto_sigma": auto[1],
        "auto_delta_avg": percent(mean[auto]["delta_avg"]), "per_clip_auto_delta_avg": percent(statistics.fmean(own_choice)),
        "harmonic_block": harmonic[0], "harmonic_sigma": harmonic[1], "harmonic_delta_avg": percent(mean[harmonic]["delta_avg"]),
        "seconds": round(seconds, 1), "clips": clips, "seed": seed, "frame_size": size, "frames": frames,
        "points": points, "sigmas": list(sigmas),
    }


def cost(args) -> dict:
    run = bench.random_model_run(args, SIZES)
    import comfy.samplers

    from difftrack_pack.ditcorr.analysis import analysis_frames
    from difftrack_pack.ditcorr.points import grid_points
    from difftrack_pack.nodes.analysis import sweep
    from difftrack_pack.nodes.capture import CaptureRequest
    from difftrack_pack.nodes.extract import extract_from_latent, single_forward
    from difftrack_pack.nodes.vocabulary import model_blocks

    size, model = run.size, run.model
    height, width = size["frame_size"]
    native = torch.randn(1, *size["native_latent"], generator=run.generator)
    noise = torch.randn(native.shape, generator=run.generator)
    per_frame = torch.randn(1, 16, args.frames, height // 8, width // 8, generator=run.generator)
    images = torch.rand(args.frames, height, width, 3, generator=run.generator)
    positions = tuple(float(i) for i in range(args.frames))
    blocks = model_blocks("all", "analyse", model)
    queries = grid_points(16, (height, width))

    def forward():
        guider = comfy.samplers.CFGGuider(model)
        guider.set_conds(run.conditioning, run.conditioning)
        guider.set_cfg(1.0)
        guider.sample(noise, native, comfy.samplers.KSAMPLER(single_forward), torch.tensor([0.1, 0.0]), seed=0,
                      disable_pbar=True)

    def analyse():
        return sweep(model, per_frame, positions, images, run.conditioning, blocks, list(SIGMAS), 0, queries,
                     storage="gpu")

    def forwards_only():  # the sweep's extraction forwards without its statistics: where the rest of the time goes
        chosen = analysis_frames(args.frames)
        for sigma in SIGMAS:
            extract_from_latent(model, per_frame[:, :, chosen], tuple(positions[i] for i in chosen), (height, width),
                                args.frames, run.conditioning, blocks, sigma, frames_per_chunk=0,
                                request=CaptureRequest(storage="gpu")).release()

    forward()  # model load, kernel selection
    analyse()
    forward_times, sweep_times, forwards_times = [], [], []
    for _ in range(args.repeats):
        forward_times.append(run.timed(forward)[0])
        sweep_times.append(run.timed(analyse)[0])
        forwards_times.append(run.timed(forwards_only)[0])
    peaks = {}
    for name, job in (("forward", forward), ("sweep", analyse)):
        if run.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        job()
        peaks[name] = round(torch.cuda.max_memory_allocated() / 2**30, 3) if run.cuda else None
    forward_s, sweep_s = statistics.median(forward_times), statistics.median(sweep_times)
    return {"model": f"wan2.1-{args.size}", "device": run.device_name, "frames": args.frames,
            "frame_size": [height, width], "blocks": len(blocks), "sigmas": list(SIGMAS), "analysed_frames": 13,
            "points": len(queries), "forward_s": round(forward_s, 4), "sweep_s": round(sweep_s, 4),
            "sweep_to_forward_ratio": round(sweep_s / forward_s, 3),
            "sweep_forwards_s": round(statistics.median(forwards_times), 4), "peak_mem_gib": peaks["sweep"],
            "forward_peak_mem_gib": peaks["forward"], "repeats": args.repeats,
            "all_s": {"forward": [round(t, 4) for t in forward_times], "sweep": [round(t, 4) for t in sweep_times]}}


def main() -> None:
    parser = bench.parser(__doc__)
    parser.add_argument("--size", choices=list(SIZES), default=None, help="time a sweep at this model size instead")
    parser.add_argument("--frames", type=int, default=81, help="with --size: frames of the video")
    parser.add_argument("--repeats", type=int, default=3, help="with --size: timed repeats (medians)")
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--sigmas", default=",".join(map(str, SIGMAS)), help="comma-separated σ values")
    parser.add_argument("--unet", default=str(TRAINED / TRAINED_DIT), help="default: the tiny DiT trained on these clips")
    parser.add_argument("--vae", default=str(TRAINED / TRAINED_VAE), help="default: the tiny VAE trained on these clips")
    args = parser.parse_args()
    if args.size is not None:
        print(json.dumps(cost(args)))
        return
    bench.start(args)
    sigmas = tuple(float(s) for s in args.sigmas.split(","))
    device = bench.device_name(args.device)
    model = "wan2.1-tiny" if args.unet == str(TRAINED / TRAINED_DIT) else Path(args.unet).name  # the trained tiny DiT
    print(json.dumps({"model": model, "device": device, **quality(args.unet, args.vae, args.seed, args.clips, sigmas)}))


if __name__ == "__main__":
    with torch.inference_mode():  # as ComfyUI's executor runs every node
        main()
