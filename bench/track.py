"""Cost of tracking against the cost of the forwards that produce its features, on Wan 2.1 with random weights.

    python bench/track.py --size tiny|1.3b --device cpu|cuda --points N --frames F [--storage gpu,cpu,auto]
                          [--readout refined+pixel|refined|argmax]

Prints one JSON line, with these per feature storage (`by_storage`; the first
storage's also at the top level): forward_s, the extraction of F per-frame
latent frames (13-frame chunks, the middle block); track_s, tracking N random
points from frame 0 through all F frames on the model's device (the chosen
read-out, default refined+pixel, with the cycle check; features stored elsewhere
are streamed there a chunk at a time; the frames for the pixel step start in CPU
memory, as a ComfyUI IMAGE does); dit_track_s, the same with the refined read-out
(the DiT's part alone); torch_ops_track_s, the chosen read-out with the cost maps from
torch ops instead of the fused kernel (ditcorr.fused; the same off CUDA), and
fused_vs_torch_ops_px, how far the refined read-out's points move between the two;
pixel_s, the pixel step alone on the refined tracks, and pixel_frames_on_device_s, the
same with the frames already on the device; peak_extra_mem_gib, device memory tracking
needs on top of the model and whatever the features occupy; with the pixel step,
track_after_copying_extraction_s (and its ratio to forward_s), tracking when its frames
started copying before the extraction, as Track Points does when it extracts the
features itself (given features from Extract Features, it is track_s). Medians of repeats.
forward_vs_gpu and track_to_forward_ratio compare within the run; tracks_equal says the tracks
are the same whatever the storage.
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


def tracking_inputs(size: dict, frames: int, points: int, generator: torch.Generator):
    """What a tracking run reads, drawn from `generator`: a per-frame latent [1, 16, F, h, w], its frame size, the
    frames [F, H, W, 3] in CPU memory (as an IMAGE) and `points` random queries on frame 0 [N, 3]."""
    latent = torch.randn(1, 16, frames, *size["latent_hw"], generator=generator)
    frame_size = (8 * size["latent_hw"][0], 8 * size["latent_hw"][1])
    images = torch.rand(frames, *frame_size, 3, generator=generator)
    queries = torch.cat([torch.rand(points, 2, generator=generator) * torch.tensor([frame_size[1] - 1.0, frame_size[0] - 1.0]),
                         torch.zeros(points, 1)], dim=1)
    return latent, frame_size, images, queries


def main() -> None:
    parser = bench.parser(__doc__, SIZES)
    parser.add_argument("--points", type=int, default=1000)
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--storage", default="gpu,cpu", help="comma-separated feature storages: gpu, cpu, auto")
    parser.add_argument("--readout", default="refined+pixel", help="argmax, refined or refined+pixel")
    parser.add_argument("--profile", action="store_true", help="also print where tracking spends its time (stderr)")
    args = parser.parse_args()
    run = bench.random_model_run(args, SIZES)

    from difftrack_pack.ditcorr import DeviceWindow
    from difftrack_pack.ditcorr.refine import prefetch_frames, refine_tracks
    from difftrack_pack.ditcorr.track import PIXEL_READOUT, TrackSettings, track_points
    from difftrack_pack.nodes.capture import CaptureRequest
    from difftrack_pack.nodes.extract import extract_from_latent

    size, model, block, conditioning, generator = run.size, run.model, run.middle_block, run.conditioning, run.generator
    latent, frame_size, frames, queries = tracking_inputs(size, args.frames, args.points, generator)

    def measure(storage: str) -> tuple[dict, torch.Tensor]:
        def extract():
            return extract_from_latent(model, latent, tuple(map(float, range(args.frames))), frame_size, args.frames,
                                       conditioning, [block], 0.1, frames_per_chunk=13,
                                       request=CaptureRequest(storage=storage))

        features = extract()  # warm-up
        # A fresh window per call, as each Track Points run makes: its first chunk's copy is part of the cost.
        track = lambda readout=args.readout, fused_kernel=True, copier=None: track_points(  # noqa: E731
            features.select_many(), queries, frame_size, args.frames,
            TrackSettings(readout=readout, fused_kernel=fused_kernel), device_window=DeviceWindow(args.device),
            frames=frames, copier=copier)
        track()  # warm-up (and the kernel's compilation)
        if args.profile:
            run.profile(track, f"tracking, {storage} storage")
        forward_times, track_times, dit_times, torch_ops_times, overlapped_times = [], [], [], [], []
        for _ in range(args.repeats):
            seconds, features = run.timed(extract)
            forward_times.append(seconds)
            seconds, tracks = run.timed(track)
            track_times.append(seconds)
            if args.readout == PIXEL_READOUT:  # as Track Points runs with a model: frames copy while it extracts
                copier = prefetch_frames(frames, queries, torch.device(args.device))
                features.release()
                features = extract()
                overlapped_times.append(run.timed(lambda: track(copier=copier))[0])
            dit_times.append(run.timed(lambda: track("refined"))[0])
            torch_ops_times.append(run.timed(lambda: track(fused_kernel=False))[0])
        # The fused kernel against the torch ops on the DiT read-out, where it acts: how far the tracks move.
        coarse = track("refined")
        moved = (coarse.path - track("refined", fused_kernel=False).path).norm(dim=-1)
        # The pixel step alone on those tracks, its frames in CPU memory (as tracking gets them) or already on the device.
        grid = features.select_many()[0][0][1].q.shape[2:4]
        pixel = lambda video: refine_tracks(video, queries, coarse.path, coarse.visible,  # noqa: E731
                                            (frame_size[1] / grid[1], frame_size[0] / grid[0]))
        on_device = frames.to(args.device)
        pixel(on_device)
        pixel_times = [run.timed(lambda: pixel(frames))[0] for _ in range(args.repeats)]
        pixel_on_device_times = [run.timed(lambda: pixel(on_device))[0] for _ in range(args.repeats)]
        del on_device
        if run.cuda:
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            run.timed(track)
            extra_mem = round((torch.cuda.max_memory_allocated() - base) / 2**30, 3)
        else:
            extra_mem = None  # no device allocator to ask on the CPU
        forward_s, track_s = statistics.median(forward_times), statistics.median(track_times)
        result = {"forward_s": round(forward_s, 4), "track_s": round(track_s, 4),
                  "dit_track_s": round(statistics.median(dit_times), 4),
                  "track_to_forward_ratio": round(track_s / forward_s, 4), "peak_extra_mem_gib": extra_mem,
                  "torch_ops_track_s": round(statistics.median(torch_ops_times), 4),
                  **({"track_after_copying_extraction_s": round(statistics.median(overlapped_times), 4),
                      "track_after_copying_extraction_ratio": round(statistics.median(overlapped_times) / forward_s, 4)}
                     if overlapped_times else {}),
                  "pixel_s": round(statistics.median(pixel_times), 4),
                  "pixel_frames_on_device_s": round(statistics.median(pixel_on_device_times), 4),
                  "fused_vs_torch_ops_px": {"max": round(moved.max().item(), 4), "mean": round(moved.mean().item(), 5)},
                  "features": features.storage, "chunks": len(features.chunk_frames),
                  "visible_fraction": round(tracks.visible.float().mean().item(), 3),
                  "all_s": {"forward": [round(t, 4) for t in forward_times], "track": [round(t, 4) for t in track_times],
                            "dit_track": [round(t, 4) for t in dit_times],
                            "torch_ops_track": [round(t, 4) for t in torch_ops_times],
                            "track_after_copying_extraction": [round(t, 4) for t in overlapped_times]}}
        features.release()
        return result, tracks.path.cpu()

    by_storage, paths = {}, {}
    for storage in args.storage.split(","):
        by_storage[storage], paths[storage] = measure(storage)
    first = by_storage[next(iter(by_storage))]
    if "gpu" in by_storage:
        for result in by_storage.values():
            result["forward_vs_gpu"] = round(result["forward_s"] / by_storage["gpu"]["forward_s"], 4)
    print(json.dumps({
        "model": f"wan2.1-{args.size}", "device": run.device_name, "points": args.points, "frames": args.frames,
        "readout": args.readout,
        "tokens_per_frame": (size["latent_hw"][0] // 2) * (size["latent_hw"][1] // 2), "block": block,
        **{key: first[key] for key in ("chunks", "forward_s", "track_s", "dit_track_s", "track_to_forward_ratio",
                                       "track_after_copying_extraction_ratio", "peak_extra_mem_gib") if key in first},
        "tracks_equal": all(torch.equal(path, next(iter(paths.values()))) for path in paths.values()),
        "by_storage": by_storage,
    }))


if __name__ == "__main__":
    with torch.inference_mode():  # as ComfyUI's executor runs every node
        main()
