"""What a user waits for: Track Points from video frames to tracks, on Wan 2.1 (VAE and DiT) with random weights.

    python bench/extract_e2e.py --size tiny|1.3b --device cpu|cuda --frames F --points N [--sweep 1,2,4,8,16]

Prints one JSON line. The path is the node's own (the encoding without its
cache, the extraction with the query frame in every 13-frame chunk, stopping
after the middle block; tracking N random points from frame 0 on the model's
device), timed a phase at a time with the device's queue drained between:
  encode_s, forward_s, track_s, total_s   per-frame encoding (the default)
  native: {...}                           the same with the whole clip encoded at once
Medians of repeats. For comparison, the per-frame encoding as it was (one
`vae.encode` call per frame: one_call_per_frame_encode_s) and batched without
the single-frame 2D convolutions (batched_3d_encode_s); --sweep times the
per-frame encoding at other batch limits. encode_peak_gib is the device memory
the per-frame encoding needs on top of what was allocated before it: it is
bounded by the batch, not the clip (compare --frames 81 with 481).
"""
from __future__ import annotations

import json
import statistics

import torch

from difftrack_devkit import bench

SIZES = {
    "tiny": dict(config="wan", vae_dim=8, frame_size=(64, 64), dtype=torch.float32),
    "1.3b": dict(config="wan_1.3b", vae_dim=96, frame_size=(480, 832), dtype=torch.bfloat16),  # Wan 2.1's own VAE width
}


def main() -> None:
    parser = bench.parser(__doc__, SIZES)
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--points", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sweep", default="", help="comma-separated batch limits to time the per-frame encoding at")
    args = parser.parse_args()
    run = bench.random_model_run(args, SIZES)

    from difftrack_devkit.models import random_wan_vae
    from difftrack_pack.ditcorr.track import TrackSettings, track_points
    from difftrack_pack.nodes.encoding import MAX_BATCH, encode_each_frame, encode_with_progress
    from difftrack_pack.nodes.extract import VideoExtraction
    from difftrack_pack.nodes.vocabulary import compute_window

    size, generator = run.size, run.generator
    vae = random_wan_vae(dim=size["vae_dim"])
    height, width = size["frame_size"]
    images = torch.rand(args.frames, height, width, 3, generator=generator)  # an IMAGE batch, on the CPU as ComfyUI's
    queries = torch.cat([torch.rand(args.points, 2, generator=generator) * torch.tensor([width - 1.0, height - 1.0]),
                         torch.zeros(args.points, 1)], dim=1)

    def track_points_run(encoding: str) -> dict:
        """One Track Points run, the node's steps one at a time: seconds of each."""
        extraction = VideoExtraction(blocks=str(run.middle_block), encoding=encoding, storage="auto")
        encode_s, (latent, positions) = run.timed(lambda: encode_with_progress(vae, images, encoding, cache=None))
        forward_s, features = run.timed(lambda: extraction.extract(run.model, latent, positions, images, run.conditioning))
        track_s, _ = run.timed(lambda: track_points(features.select_many(), queries, (height, width), args.frames,
                                                    TrackSettings(), device_window=compute_window()))
        features.release()
        return {"encode_s": encode_s, "forward_s": forward_s, "track_s": track_s,
                "total_s": encode_s + forward_s + track_s, "latent_frames": latent.shape[2]}

    def medians(runs: list[dict]) -> dict:
        return {key: round(statistics.median(r[key] for r in runs), 4) for key in runs[0]}

    def encode_each(**options) -> float:
        return run.timed(lambda: encode_each_frame(vae, images, **options))[0]

    for encoding in ("per_frame", "native"):
        track_points_run(encoding)  # warm-up: model loads, kernel selection
    timings = {"per_frame": [], "native": []}
    for _ in range(args.repeats):
        for encoding, runs in timings.items():
            runs.append(track_points_run(encoding))
    per_frame, native = medians(timings["per_frame"]), medians(timings["native"])

    def one_call_per_frame() -> None:
        for index in range(args.frames):
            vae.encode(images[index:index + 1])

    one_call_per_frame_s = run.timed(one_call_per_frame)[0]
    batched_3d_s = statistics.median(encode_each(single_frame_2d=False) for _ in range(args.repeats))
    sweep = {int(limit): round(statistics.median(encode_each(max_batch=int(limit)) for _ in range(args.repeats)), 4)
             for limit in args.sweep.split(",") if limit}
    if run.cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        encode_each()
        encode_peak = round((torch.cuda.max_memory_allocated() - base) / 2**30, 3)
    else:
        encode_peak = None
    print(json.dumps({
        "model": f"wan2.1-{args.size}", "device": run.device_name, "frames": args.frames,
        "frame_size": [height, width], "points": args.points, "block": run.middle_block,
        "vae_dtype": str(vae.vae_dtype).removeprefix("torch."), "max_batch": MAX_BATCH,
        **per_frame, "encode_share": round(per_frame["encode_s"] / per_frame["total_s"], 4),
        "native": native,
        "one_call_per_frame_encode_s": round(one_call_per_frame_s, 4), "batched_3d_encode_s": round(batched_3d_s, 4),
        "encode_s_by_max_batch": sweep, "encode_peak_gib": encode_peak, "repeats": args.repeats,
        "all": {encoding: [{key: round(value, 4) for key, value in r.items()} for r in runs]
                for encoding, runs in timings.items()},
    }))


if __name__ == "__main__":
    with torch.inference_mode():  # as ComfyUI's executor runs every node
        main()
