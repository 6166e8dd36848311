"""Tracking quality on synthetic clips with exact ground truth, for every read-out, against three baselines.

    python bench/quality.py --seed S --clips N [--motion fast|slow|static-camera|mixed] [--frames F] [--device cpu|cuda]
                            [--blocks 7] [--unet <dit.safetensors> --vae <vae.safetensors>]

The models default to the tiny DiT and VAE in assets/tiny_wan/ (bench/train_tiny.py
trained them on "fast" clips, never on seeds this script draws). Each clip
(ditcorr.synthetic, 256x256 by default, seeded from S, in the chosen motion regime)
is encoded per frame and run through the same code as the nodes (extract_from_latent,
track_points) for every block (or the --blocks listed, e.g. a known best one on a CPU); queries are on frame 0, scored TAP-Vid style on the
256x256 raster. --picture PATH also draws the first three clips' tracks. Prints one JSON line, metrics in percent as TAP-Vid tables report them
(jitter in pixels): `readouts` gives, for argmax, refined and refined+pixel at the best
block (by the default read-out, refined+pixel), delta_1 .. delta_16, delta_avg, aj, oa
and jitter (RMS frame-to-frame motion of predicted tracks where the exact point stands
still and is visible); `baselines` the same for zero_motion (no motion), latent_nn
(nearest neighbour on VAE latents) and hidden_nn (nearest neighbour on the best block's
input hidden states instead of its q/k); `per_block` block -> delta_avg per read-out.
The top-level delta_avg, aj, oa, jitter are the default read-out's.
"""
from __future__ import annotations

import json
import math
import statistics

import torch

from difftrack_devkit import bench
from difftrack_devkit.testbed import TRAINED, TRAINED_DIT, TRAINED_VAE

SCORES = ("delta_1", "delta_2", "delta_4", "delta_8", "delta_16", "delta_avg", "aj", "oa")


def summary(runs: list[dict]) -> dict:
    """Per-video metrics averaged over videos, in percent (jitter: root mean square over videos, in pixels)."""
    out = {key: round(100 * statistics.fmean(run[key] for run in runs if not math.isnan(run[key])), 2) for key in SCORES}
    jitters = [run["jitter"] for run in runs if not math.isnan(run["jitter"])]
    out["jitter"] = round(math.sqrt(statistics.fmean(j * j for j in jitters)), 3) if jitters else None
    return out


def draw_picture(shown: list, block: int, motion: str, path: str) -> None:
    """The last frame of each shown clip with every point's whole track drawn: the exact tracks, then each read-out's
    at `block` (trails that zigzag where the exact ones are straight or still are jitter)."""
    from difftrack_pack.ditcorr.draw import draw_tracks
    from difftrack_pack.ditcorr.track import READOUTS

    def last_frame(frames, path, visible):  # its central half, so that a pixel of jitter shows
        height, width = frames.shape[1:3]
        drawn = draw_tracks(frames, path, visible, trail=frames.shape[0], radius=2.0, line_width=1.0)[-1]
        return drawn[height // 4: height - height // 4, width // 4: width - width // 4]

    rows = {"exact": [last_frame(frames, truth, seen) for frames, truth, seen, _ in shown]}
    for readout in READOUTS:
        rows[readout] = [last_frame(frames, *tracks[(readout, block)]) for frames, _, _, tracks in shown]
    bench.image_sheet(rows, [f"{motion} clip {i}: last frame, centre" for i in range(len(shown))], path, tile=320, label_width=130)


def evaluate(unet: str, vae: str, seed: int, clips: int, size: int = 256, frames: int = 13, points: int = 64,
             sigma: float = 0.2, blocks: list[int] | None = None, motion: str = "fast", picture: str = "",
             pictured: int = 3) -> dict:
    import comfy.sd
    import comfy.utils

    from difftrack_pack.ditcorr.metrics import static_jitter, tapvid_metrics, to_raster
    from difftrack_pack.ditcorr.synthetic import make_clip
    from difftrack_pack.ditcorr.track import PIXEL_READOUT, READOUTS, TrackSettings, nearest_neighbour_tracks, track_points
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
        predicted, truth = to_raster(path.transpose(0, 1), frame_size), to_raster(clip.tracks, frame_size)
        metrics = tapvid_metrics(predicted, visible.T, truth, clip.visible, torch.zeros(clip.tracks.shape[0]), "first")
        return {**metrics, "jitter": static_jitter(predicted, truth, clip.visible)}

    results = {readout: {b: [] for b in blocks} for readout in (*READOUTS, "hidden_nn")}
    results.update(zero_motion=[], latent_nn=[])
    shown = []  # the first clips' (frames, exact tracks, {(read-out, block): tracks}) for the picture
    for index in range(clips):
        clip = make_clip(seed * 100_003 + index, frame_size, frames, points=points, motion=motion)
        queries = torch.cat([clip.tracks[:, 0], torch.zeros(points, 1)], dim=1)
        latent, positions = encode_frames(autoencoder, clip.frames, "per_frame")
        grid = adapter.token_grid(diffusion_model, latent.shape)
        recording, hidden = bench.recording_hidden_states(model, adapter, blocks, grid)
        features = extract_from_latent(recording, latent, positions, frame_size, frames, None, blocks, sigma, seed=index,
                                       frames_per_chunk=0)
        all_visible = torch.ones(frames, points, dtype=torch.bool)
        if picture and index < pictured:
            shown.append((clip.frames, clip.tracks.transpose(0, 1), clip.visible.T, {}))
        for block in blocks:
            selection = features.select_many([block])
            for readout in READOUTS:
                tracks = track_points(selection, queries, frame_size, frames, TrackSettings(readout=readout),
                                      frames=clip.frames)
                results[readout][block].append(score(tracks.path.cpu(), tracks.visible.cpu(), clip))
                if picture and index < pictured:
                    shown[-1][3][(readout, block)] = (tracks.path.cpu(), tracks.visible.cpu())
            results["hidden_nn"][block].append(score(nearest_neighbour_tracks(hidden[block], queries, frame_size), all_visible, clip))
        still = queries[:, :2][None].expand(frames, -1, -1)
        results["zero_motion"].append(score(still, all_visible, clip))
        latents = latent[0].permute(1, 2, 3, 0).float().cpu()  # [T, h, w, C]
        results["latent_nn"].append(score(nearest_neighbour_tracks(latents, queries, frame_size), all_visible, clip))
        features.release()

    per_block = {readout: {block: summary(results[readout][block])["delta_avg"] for block in blocks} for readout in READOUTS}
    best = max(per_block[PIXEL_READOUT], key=per_block[PIXEL_READOUT].get)
    readouts = {readout: summary(results[readout][best]) for readout in READOUTS}
    if picture:
        draw_picture(shown, best, motion, picture)
    default = readouts[PIXEL_READOUT]
    return {
        "delta_avg": default["delta_avg"], "aj": default["aj"], "oa": default["oa"], "jitter": default["jitter"],
        "best_block": best, "readouts": readouts, "per_block": per_block,
        "baselines": {"zero_motion": summary(results["zero_motion"]), "latent_nn": summary(results["latent_nn"]),
                      "hidden_nn": summary(results["hidden_nn"][best])},
        "motion": motion, "clips": clips, "seed": seed, "frame_size": size, "frames": frames, "points": points, "sigma": sigma,
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
    parser.add_argument("--motion", default="fast", help="motion regime of the clips: fast, slow, static-camera, mixed")
    parser.add_argument("--picture", default="", help="also draw the first clips' tracks, every read-out, as a PNG here")
    parser.add_argument("--blocks", default="", help="comma-separated blocks to run (default: every block)")
    args = parser.parse_args()
    bench.start(args)
    print(json.dumps(evaluate(args.unet, args.vae, args.seed, args.clips, args.size, args.frames, sigma=args.sigma,
                              blocks=[int(b) for b in args.blocks.split(",")] if args.blocks else None,
                              motion=args.motion, picture=args.picture)))


if __name__ == "__main__":
    with torch.inference_mode():  # as ComfyUI's executor runs every node
        main()
