"""Tracking quality on synthetic clips with exact ground truth, against three baselines.

    python bench/quality.py --seed S --clips N [--device cpu|cuda] [--unet <dit.safetensors> --vae <vae.safetensors>]

The models default to the tiny DiT and VAE in assets/tiny_wan/ (bench/train_tiny.py
trained them on such clips, never on seeds this script draws). Each clip
(ditcorr.synthetic, 256x256 by default, seeded from S) is encoded per frame and run through
the same code as the nodes (extract_from_latent, track_points) for every block;
queries are on frame 0, scored TAP-Vid style on the 256x256 raster. Prints one
JSON line, metrics in percent as TAP-Vid tables report them: delta_avg, aj, oa (refined read-out at the best block, occlusion
prediction on), argmax_delta_avg (the published read-out there), per_block
(block -> delta_avg), baselines: zero_motion (no motion), latent_nn (nearest
neighbour on VAE latents), hidden_nn (nearest neighbour on the best block's
input hidden states instead of its q/k), each a delta_avg.
"""
from __future__ import annotations

import json
import math
import statistics

import torch

from difftrack_devkit import bench
from difftrack_devkit.testbed import TRAINED, TRAINED_DIT, TRAINED_VAE


def evaluate(unet: str, vae: str, seed: int, clips: int, size: int = 256, frames: int = 13, points: int = 64,
             sigma: float = 0.2, blocks: list[int] | None = None) -> dict:
    import comfy.sd
    import comfy.utils

    from difftrack_pack.ditcorr.metrics import tapvid_metrics, to_raster
    from difftrack_pack.ditcorr.synthetic import make_clip
    from difftrack_pack.ditcorr.track import TrackSettings, nearest_neighbour_tracks, track_points
    from difftrack_pack.nodes.adapters import adapter_for
    from difftrack_pack.nodes.encoding import encode_frames
    from difftrack_pack.nodes.extract import extract_from_latent

    model = comfy.sd.load_diffusion_model(unet)
    autoencoder = comfy.sd.VAE(sd=comfy.utils.load_torch_file(vae))
    diffusion_model = model.get_model_object("diffusion_model")
    adapter = adapter_for(diffusion_model)
    blocks = blocks if blocks is not None else list(range(adapter.block_count(diffusion_model)))
    frame_size = (size, size)

    def score(path, visible, clip):  # path [T, N, 2], visible [T, N]
        metrics = tapvid_metrics(to_raster(path.transpose(0, 1), frame_size), visible.T, to_raster(clip.tracks, frame_size),
                                 clip.visible, torch.zeros(clip.tracks.shape[0]), "first")
        return metrics

    results = {"refined": {b: [] for b in blocks}, "argmax": {b: [] for b in blocks}, "hidden_nn": {b: [] for b in blocks},
               "zero_motion": [], "latent_nn": []}
    for index in range(clips):
        clip = make_clip(seed * 100_003 + index, frame_size, frames, points=points)
        queries = torch.cat([clip.tracks[:, 0], torch.zeros(points, 1)], dim=1)
        latent, positions = encode_frames(autoencoder, clip.frames, "per_frame")
        grid = adapter.token_grid(diffusion_model, latent.shape)
        hidden = {}

        def recorder(block):
            def patch(args, extra):
                tokens = args[adapter.image_stream_key][0, -math.prod(grid):]
                hidden[block] = tokens.reshape(*grid, -1).float().cpu()
                return extra["original_block"](args)
            return patch

        recording = model.clone()
        for block in blocks:
            recording.set_model_patch_replace(recorder(block), "dit", adapter.block_key, block)
        features = extract_from_latent(recording, latent, positions, frame_size, frames, None, blocks, sigma, seed=index,
                                       frames_per_chunk=0)
        all_visible = torch.ones(frames, points, dtype=torch.bool)
        for block in blocks:
            selection = features.select_many([block])
            for readout in ("refined", "argmax"):
                tracks = track_points(selection, queries, frame_size, frames, TrackSettings(readout=readout))
                results[readout][block].append(score(tracks.path.cpu(), tracks.visible.cpu(), clip))
            results["hidden_nn"][block].append(score(nearest_neighbour_tracks(hidden[block], queries, frame_size), all_visible, clip))
        still = queries[:, :2][None].expand(frames, -1, -1)
        results["zero_motion"].append(score(still, all_visible, clip))
        latents = latent[0].permute(1, 2, 3, 0).float().cpu()  # [T, h, w, C]
        results["latent_nn"].append(score(nearest_neighbour_tracks(latents, queries, frame_size), all_visible, clip))
        features.release()

    mean = lambda runs, key="delta_avg": round(100 * statistics.fmean(run[key] for run in runs), 2)  # noqa: E731  (percent)
    per_block = {block: mean(results["refined"][block]) for block in blocks}
    best = max(per_block, key=per_block.get)
    return {
        "delta_avg": per_block[best], "aj": mean(results["refined"][best], "aj"), "oa": mean(results["refined"][best], "oa"),
        "best_block": best, "argmax_delta_avg": mean(results["argmax"][best]), "per_block": per_block,
        "baselines": {"zero_motion": mean(results["zero_motion"]), "latent_nn": mean(results["latent_nn"]),
                      "hidden_nn": mean(results["hidden_nn"][best])},
        "clips": clips, "seed": seed, "frame_size": size, "frames": frames, "points": points, "sigma": sigma,
    }


def main() -> None:
    parser = bench.parser(__doc__)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--clips", type=int, default=50)
    parser.add_argument("--unet", default=str(TRAINED / TRAINED_DIT), help="default: the tiny DiT trained on these clips")
    parser.add_argument("--vae", default=str(TRAINED / TRAINED_VAE), help="default: the tiny VAE trained on these clips")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--frames", type=int, default=13)
    parser.add_argument("--sigma", type=float, default=0.2)
    args = parser.parse_args()
    bench.start(args)
    print(json.dumps(evaluate(args.unet, args.vae, args.seed, args.clips, args.size, args.frames, sigma=args.sigma)))


if __name__ == "__main__":
    with torch.inference_mode():  # as ComfyUI's executor runs every node
        main()
