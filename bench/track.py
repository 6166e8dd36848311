"""Cost of tracking against the cost of the forwards that produce its features, on Wan 2.1 with random weights.

    python bench/track.py --size tiny|1.3b --device cpu|cuda --points N --frames F

Prints one JSON line. forward_s: the extraction of F per-frame latent frames
(13-frame chunks, the middle block, features kept on the device); track_s:
tracking N random points from frame 0 through all F frames (refined read-out,
cycle check); peak_extra_mem_gib: device memory tracking needs on top of the
model and the features. Medians of repeats.
"""
from __future__ import annotations

import json
import statistics

import torch

from difftrack_devkit import bench

SIZES = {
    "tiny": dict(config="wan", latent_hw=(16, 16), dtype=torch.float32),
    "1.3b": dict(config="wan_1.3b", latent_hw=(60, 104), dtype=torch.bfloat16),  # 480x832
}


def main() -> None:
    parser = bench.parser(__doc__, SIZES)
    parser.add_argument("--points", type=int, default=1000)
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    run = bench.random_model_run(args, SIZES)

    from difftrack_pack.ditcorr.track import TrackSettings, track_points
    from difftrack_pack.nodes.capture import CaptureRequest
    from difftrack_pack.nodes.extract import extract_from_latent

    size, model, block, conditioning, generator = run.size, run.model, run.middle_block, run.conditioning, run.generator
    latent = torch.randn(1, 16, args.frames, *size["latent_hw"], generator=generator)
    frame_size = (8 * size["latent_hw"][0], 8 * size["latent_hw"][1])
    queries = torch.cat([torch.rand(args.points, 2, generator=generator) * torch.tensor([frame_size[1] - 1.0, frame_size[0] - 1.0]),
                         torch.zeros(args.points, 1)], dim=1)

    def extract():
        return extract_from_latent(model, latent, tuple(map(float, range(args.frames))), frame_size, args.frames,
                                   conditioning, [block], 0.1, frames_per_chunk=13, request=CaptureRequest(offload=False))

    features = extract()  # warm-up
    track = lambda: track_points(features.select_many(), queries, frame_size, args.frames, TrackSettings())  # noqa: E731
    track()  # warm-up
    forward_times, track_times = [], []
    for _ in range(args.repeats):
        seconds, features = run.timed(extract)
        forward_times.append(seconds)
        seconds, tracks = run.timed(track)
        track_times.append(seconds)
    if run.cuda:
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        run.timed(track)
        extra_mem = (torch.cuda.max_memory_allocated() - base) / 2**30
    else:
        extra_mem = None  # no device allocator to ask on the CPU
    forward_s, track_s = statistics.median(forward_times), statistics.median(track_times)
    print(json.dumps({
        "model": f"wan2.1-{args.size}", "device": run.device_name,
        "points": args.points, "frames": args.frames, "chunks": len(features.chunk_frames),
        "tokens_per_frame": (size["latent_hw"][0] // 2) * (size["latent_hw"][1] // 2), "block": block,
        "forward_s": round(forward_s, 4), "track_s": round(track_s, 4),
        "track_to_forward_ratio": round(track_s / forward_s, 4), "peak_extra_mem_gib": None if extra_mem is None else round(extra_mem, 3),
        "visible_fraction": round(tracks.visible.float().mean().item(), 3),
        "all_s": {"forward": [round(t, 4) for t in forward_times], "track": [round(t, 4) for t in track_times]},
    }))


if __name__ == "__main__":
    with torch.inference_mode():  # as ComfyUI's executor runs every node
        main()
