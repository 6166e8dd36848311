"""What CAG does to generated motion, measured without our DiT: optical-flow and sprite metrics of clips the tiny
models generate with and without it, same seeds for every arm.

    python bench/cag_quality.py --seed S --clips N [--device cpu|cuda] [--scales 0.5,1,2,3]
                                [--variants renormalised,published] [--blocks auto,best] [--steps 20]

The defaults (2 clips, scale 1, both variants, both block choices: five arms) are a first look in about 8 minutes
on a 2-core CPU with the shipped DiT (3 clips took 11 minutes); the README's table for the DiT before it is
`--clips 12 --scales 0.5,1,2,3` on a GPU (17 arms).

Each arm generates N clips of 256x256x13 from the same noise (Zero Conditioning, euler, `--steps` steps, cfg 1,
through the pack's CAG patch on the stock KSampler) with the tiny DiT and VAE of assets/tiny_wan/; `best` is the
block Correspondence Analysis's label-free score picks for this model on a rendered clip (for the tiny DiT: the
last of its 8 blocks), `auto` the fixed default (n/2, n/2+2: blocks 4 and 6). Per clip (ditcorr/motion.py, with OpenCV's DIS flow):
  warp_error         photometric error of each frame warped onto the previous one by the flow (lower: steadier)
  motion             mean flow magnitude, px/frame (a frozen clip has a low warp error and no motion)
  pan_speed          the background's pan (the flow's per-axis median), px/frame
  pan_coherent       1 when that pan is coherent (>= 0.5 px/frame, every frame pair within 0.75 px of the mean)
  sprite_persistence the most frames in a row one outlined sprite is found again
Prints one JSON line: per arm the mean and a bootstrap 95 % interval (over clips) of each metric, seconds per
sampling step, and the same metrics for N rendered clips of the model's training regime (`real`, `--motion`: the
shipped DiT's by default) for scale.
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch

from difftrack_devkit import bench
from difftrack_devkit.testbed import TRAINED, TRAINED_DIT, TRAINED_MOTION, TRAINED_VAE

SIZE, FRAMES = 256, 13
METRICS = ("warp_error", "motion", "pan_speed", "pan_coherent", "sprite_persistence")


def clip_metrics(clip: torch.Tensor) -> dict[str, float]:
    from difftrack_devkit.flow import dis_flows
    from difftrack_devkit.sprites import sprite_persistence
    from difftrack_pack.ditcorr.motion import dominant_motion, motion_magnitude, pan_statistics, warp_error

    forward, backward = dis_flows(clip)
    pan = pan_statistics(dominant_motion(forward))
    return {"warp_error": warp_error(clip, forward, backward), "motion": motion_magnitude(forward),
            "pan_speed": pan["mean_speed"], "pan_coherent": float(pan["coherent"]),
            "sprite_persistence": float(sprite_persistence(clip))}


def summary(values: list[float], rounds: int = 2000, seed: int = 0) -> dict[str, float]:
    """Mean and a percentile-bootstrap 95 % interval of the mean (resampling clips)."""
    data = np.asarray(values, dtype=np.float64)
    means = np.random.default_rng(seed).choice(data, size=(rounds, len(data)), replace=True).mean(1)
    return {"mean": round(float(data.mean()), 4), "low": round(float(np.percentile(means, 2.5)), 4),
            "high": round(float(np.percentile(means, 97.5)), 4)}


def generate(model, vae, positive, seed: int, clips: int, steps: int, guidance: tuple | None) -> tuple[list, float]:
    """`clips` clips [T, H, W, 3] from one seed's noise (the same for every arm), and the seconds per step."""
    import nodes as comfy_nodes

    from difftrack_pack.nodes.cag_nodes import cag_model

    guided = model if guidance is None else cag_model(model, guidance[0], guidance[2], 0.0, 1.0, guidance[1], True)
    latent = {"samples": torch.zeros(clips, 16, FRAMES, SIZE // 8, SIZE // 8)}
    begin = time.perf_counter()
    samples = comfy_nodes.common_ksampler(guided, seed, steps, 1.0, "euler", "simple", positive, positive,
                                          latent)[0]["samples"]
    seconds = (time.perf_counter() - begin) / steps
    return decode_per_frame(vae, samples), seconds


def rendered_clips(seed: int, count: int, motion: str) -> list[torch.Tensor]:
    """`count` clips [FRAMES, SIZE, SIZE, 3] of a motion regime, seeded from `seed` as bench/quality.py seeds its
    clips (never a training clip): what generated clips are scored against."""
    from difftrack_pack.ditcorr.synthetic import make_clip

    return [make_clip(seed * 100_003 + index, (SIZE, SIZE), FRAMES, motion=motion).frames for index in range(count)]


def decode_per_frame(vae, samples: torch.Tensor) -> list[torch.Tensor]:
    """Latents [N, C, FRAMES, h, w] -> N clips [FRAMES, SIZE, SIZE, 3]: every latent frame decoded alone (the tiny
    VAE's frames are encoded alone)."""
    frames = samples.transpose(1, 2).reshape(-1, samples.shape[1], 1, *samples.shape[3:])  # one-frame clips
    return list(vae.decode(frames).reshape(samples.shape[0], FRAMES, SIZE, SIZE, 3))


def analysed_block(model, vae, seed: int) -> int:
    """The block Correspondence Analysis's label-free score picks for this model (blocks 'best', σ 0.2) on a rendered
    clip of the synthetic world."""
    from difftrack_pack.ditcorr.synthetic import make_clip
    from difftrack_pack.nodes.analysis import choose_block
    from difftrack_pack.nodes.encoding import encode_frames
    from difftrack_pack.nodes.vocabulary import model_blocks

    frames = make_clip(seed * 100_003 + 99_999, (SIZE, SIZE), FRAMES).frames
    latent, positions = encode_frames(vae, frames, "per_frame")
    return choose_block(model, latent, positions, frames, None, model_blocks("all", "analyse", model), 0.2, 0)[0]


def main() -> None:
    parser = bench.parser(__doc__)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--clips", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--scales", default="1")
    parser.add_argument("--variants", default="renormalised,published")
    parser.add_argument("--blocks", default="auto,best", help="auto (the fixed default) and/or best (block 7)")
    parser.add_argument("--picture", default="", help="also write the first clip of every arm as a PNG grid here")
    parser.add_argument("--unet", default=str(TRAINED / TRAINED_DIT))
    parser.add_argument("--vae", default=str(TRAINED / TRAINED_VAE))
    parser.add_argument("--motion", default=TRAINED_MOTION, help="motion regime of the rendered clips: the one the "
                                                                 "model was trained on (bench/train_tiny.py --motion)")
    args = parser.parse_args()
    bench.start(args)
    import comfy.sd
    import comfy.utils

    from difftrack_devkit.nodes import run_node
    from difftrack_pack.nodes.cag_nodes import ZeroConditioning

    model = comfy.sd.load_diffusion_model(args.unet)
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(args.vae))
    positive = run_node(ZeroConditioning, model=model).args[0]
    chosen = {"auto": "auto", "best": str(analysed_block(model, vae, args.seed))}
    arms = {"plain": None}
    for blocks in args.blocks.split(","):
        for variant in args.variants.split(","):
            for scale in args.scales.split(","):
                arms[f"cag_{variant}_{blocks}_{scale}"] = (float(scale), variant, chosen[blocks])
    results, first_clips = {}, {}
    begin = time.perf_counter()
    for name, guidance in arms.items():
        videos, step_s = generate(model, vae, positive, args.seed, args.clips, args.steps, guidance)
        first_clips[name] = videos[0]
        per_clip = [clip_metrics(video) for video in videos]
        results[name] = {"seconds_per_step": round(step_s, 4),
                         **{metric: summary([m[metric] for m in per_clip]) for metric in METRICS}}
        print(f"{name}: {time.perf_counter() - begin:.0f} s", file=sys.stderr, flush=True)
    real = [clip_metrics(clip) for clip in rendered_clips(args.seed, args.clips, args.motion)]
    if args.picture:
        frames = (0, 4, 8, 12)  # one row per arm, the same noise in every row
        bench.image_sheet({name.replace("cag_", "CAG ").replace("_", " "): [clip[f] for f in frames]
                           for name, clip in first_clips.items()}, [f"frame {f}" for f in frames], args.picture)
    print(json.dumps({
        "model": "wan2.1-tiny" if args.unet == str(TRAINED / TRAINED_DIT) else args.unet,
        "device": bench.device_name(args.device), "seed": args.seed,
        "clips": args.clips, "steps": args.steps, "motion": args.motion, "best_block": int(chosen["best"]), "arms": results,
        "real": {metric: summary([m[metric] for m in real]) for metric in METRICS},
        "seconds": round(time.perf_counter() - begin, 1),
    }))


if __name__ == "__main__":
    with torch.inference_mode():  # as ComfyUI's executor runs every node
        main()
