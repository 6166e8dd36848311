"""TAP-Vid evaluation of the full tracking pipeline on a model checkpoint.

    python bench/tapvid_eval.py --davis tapvid_davis.pkl --unet wan2.1_t2v_1.3B_bf16.safetensors \
        --vae wan_2.1_vae.safetensors [--size 480x832] [--query-mode first|strided] [--readout refined|argmax] ...

The pickle is TAP-Vid's DAVIS layout: {video: {"video": uint8 [T, H, W, 3],
"points": [N, T, 2] (x, y) in [0, 1], "occluded": bool [N, T]}}. Each video is
resized to --size, its queries are taken as TAP-Vid does ("first": each point's
first visible frame; "strided": every 5th frame where the point is visible),
tracked by the Track Points node's own code (features extracted per query
frame), and scored on the 256x256 raster. Prints one JSON line: the metrics
(percent) averaged over videos, the options, and per-video metrics.
"""
from __future__ import annotations

import argparse
import json
import pickle
import sys
import time

import torch
import torch.nn.functional as F

from difftrack_devkit.host import require_host
from difftrack_devkit.nodes import run_node


def queries_of(points: torch.Tensor, occluded: torch.Tensor, size: tuple[int, int], mode: str, stride: int = 5):
    """TAP-Vid queries: (x, y, frame) in pixels of `size` and, per query, the index of its track."""
    height, width = size
    rows, owners = [], []
    for n in range(points.shape[0]):
        visible = (~occluded[n]).nonzero()[:, 0].tolist()
        frames = visible[:1] if mode == "first" else [t for t in visible if t % stride == 0]
        for t in frames:
            rows.append([float(points[n, t, 0]) * width, float(points[n, t, 1]) * height, float(t)])
            owners.append(n)
    return torch.tensor(rows), torch.tensor(owners, dtype=torch.long)


def evaluate(davis: str, unet: str, vae: str, size=(480, 832), query_mode="first", readout="refined", blocks="auto",
             sigma=0.1, encoding="per_frame", frames_per_chunk=13, max_videos=0, log=print, tracker=None) -> dict:
    """TAP-Vid metrics of the Track Points node (or of `tracker(name, images, queries) -> (path [T, N, 2] pixels,
    visible [T, N])`, for checking this evaluation itself) over the videos of a TAP-Vid DAVIS pickle."""
    import comfy.sd
    import comfy.utils

    from difftrack_pack.ditcorr.metrics import average, tapvid_metrics, to_raster
    from difftrack_pack.nodes.track_nodes import TrackPoints

    if tracker is None:
        model = comfy.sd.load_diffusion_model(unet)
        autoencoder = comfy.sd.VAE(sd=comfy.utils.load_torch_file(vae))
    with open(davis, "rb") as file:
        videos = pickle.load(file)
    names = sorted(videos)[: max_videos or None]
    per_video = {}
    for name in names:
        start = time.perf_counter()
        data = videos[name]
        frames = torch.from_numpy(data["video"]).float().div(255)
        images = F.interpolate(frames.permute(0, 3, 1, 2), size=size, mode="bilinear", antialias=True,
                               align_corners=False).permute(0, 2, 3, 1).clamp(0, 1)
        points, occluded = torch.as_tensor(data["points"]).float(), torch.as_tensor(data["occluded"]).bool()
        queries, owners = queries_of(points, occluded, size, query_mode)
        if tracker is None:
            text = json.dumps([{"x": x, "y": y, "t": int(t)} for x, y, t in queries.tolist()])
            tracks, _, _ = run_node(TrackPoints, points=text, readout=readout, blocks=blocks, sigma=sigma,
                                    encoding=encoding, frames_per_chunk=frames_per_chunk, model=model, vae=autoencoder,
                                    images=images).args
            path, visible = tracks["track_path"], tracks["track_visibility"]
        else:
            path, visible = tracker(name, images, queries)
        gt = to_raster(points[owners] * torch.tensor([size[1], size[0]]), size)  # [Q, T, 2]
        pred = to_raster(path.transpose(0, 1), size)
        per_video[name] = tapvid_metrics(pred, visible.T, gt, ~occluded[owners], queries[:, 2], query_mode)
        log(f"{name}: {len(queries)} queries, AJ {100 * per_video[name]['aj']:.1f}, "
            f"δavg {100 * per_video[name]['delta_avg']:.1f}, OA {100 * per_video[name]['oa']:.1f} (%), "
            f"{time.perf_counter() - start:.1f} s")
    percent = lambda metrics: {key: round(100 * value, 2) for key, value in metrics.items()}  # noqa: E731  as TAP-Vid tables
    return {"mean": percent(average(list(per_video.values()))), "videos": len(per_video),
            "per_video": {name: percent(metrics) for name, metrics in per_video.items()},
            "options": dict(size=list(size), query_mode=query_mode, readout=readout, blocks=blocks, sigma=sigma,
                            encoding=encoding, frames_per_chunk=frames_per_chunk)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--davis", required=True, help="tapvid_davis.pkl")
    parser.add_argument("--unet", required=True, help="diffusion model file (what UNETLoader would load)")
    parser.add_argument("--vae", required=True, help="its VAE file")
    parser.add_argument("--size", default="480x832", help="HEIGHTxWIDTH the videos are resized to")
    parser.add_argument("--query-mode", choices=["first", "strided"], default="first")
    parser.add_argument("--readout", choices=["refined", "argmax"], default="refined")
    parser.add_argument("--blocks", default="auto")
    parser.add_argument("--sigma", type=float, default=0.1)
    parser.add_argument("--encoding", choices=["per_frame", "native"], default="per_frame")
    parser.add_argument("--frames-per-chunk", type=int, default=13)
    parser.add_argument("--max-videos", type=int, default=0, help="0 = all")
    args = parser.parse_args()
    require_host()
    height, width = (int(v) for v in args.size.lower().split("x"))
    result = evaluate(args.davis, args.unet, args.vae, (height, width), args.query_mode, args.readout, args.blocks,
                      args.sigma, args.encoding, args.frames_per_chunk, args.max_videos,
                      log=lambda line: print(line, flush=True, file=sys.stderr))
    print(json.dumps(result))


if __name__ == "__main__":
    with torch.inference_mode():  # as ComfyUI's executor runs every node
        main()
