"""Does the tiny DiT generate the motion it was trained on? Motion metrics of clips it samples from noise against
training-style clips of the same renderer settings, measured without our DiT.

    python bench/generation.py --seed S --clips N [--device cpu|cuda] [--steps 20] [--shift X] [--picture P]
                               [--motion REGIME]

N clips of 256x256x13 are sampled from seed S's noise (Zero Conditioning, euler, `--steps` steps, cfg 1, the stock
KSampler; `--shift` sets the flow sampler's shift as ModelSamplingSD3 does, else the model's own) with the tiny DiT
and VAE of assets/tiny_wan/ (or `--unet`/`--vae`), and N clips are rendered by ditcorr/synthetic.py (the regime the
model was trained on, `--motion`: "mostly-one-way-slow" for the shipped one; seeds drawn from S as bench/quality.py draws them: never a training clip). Per clip (bench/cag_quality.py's metrics:
OpenCV's DIS flow and the sprite finder of devkit/sprites.py): the background pan (the flow's per-axis median per
frame pair), whether it moves (mean pan >= 0.5 px/frame) and moves coherently (also every frame pair's pan within
0.75 px of the clip's mean), the longest run of frames one outlined sprite is found again in, and the warp error.

Prints one JSON line: `generated` and `real`, each with moving_fraction, coherent_fraction, mean_speed (px/frame,
the mean over clips of each clip's mean pan), sprite_persistence (mean frames), persistent_fraction (clips whose
sprites persist >= 10 of 13 frames), warp_error; and `meets`, the tiny-model acceptance: coherent_fraction >= 0.75,
generated mean_speed >= half the real one, persistent_fraction >= 0.75.

`--from-real 0.3,0.5,...` also samples from the rendered clips themselves, each encoded frame by frame and noised
as KSampler's `denoise` does (the last `--steps` of a longer schedule), and reports the same metrics per denoise
value under `from_real`, with the noise level the sampling starts from (`start_sigma`): where along the schedule
the model keeps, or loses, the motion its input already has. `--one-step 0.5,0.9,...` reports, per noise level,
how well one prediction of the clean latent from a noised one keeps its motion (`one_step`: the correlation of the
predicted and the true latent's deviation from their own mean over time), for the rendered clips and for as many
training clips (bench/train_tiny.py's seeds): equal values say the model did not memorise its training clips.
"""
from __future__ import annotations

import json
import statistics
import time

import torch

from difftrack_devkit import bench
from difftrack_bench.cag_quality import FRAMES, SIZE, clip_metrics, decode_per_frame, generate, rendered_clips
from difftrack_devkit.testbed import TRAINED, TRAINED_DIT, TRAINED_MOTION, TRAINED_VAE

PERSISTENT_FRAMES = 10  # of 13: a sprite found again in this many frames in a row persists


def motion_summary(per_clip: list[dict[str, float]]) -> dict[str, float]:
    """The fractions and means over clips of bench/cag_quality.clip_metrics' per-clip metrics."""
    mean = lambda values: round(statistics.fmean(values), 4)  # noqa: E731
    return {"moving_fraction": mean([m["pan_speed"] >= 0.5 for m in per_clip]),
            "coherent_fraction": mean([m["pan_coherent"] for m in per_clip]),
            "mean_speed": mean([m["pan_speed"] for m in per_clip]),
            "sprite_persistence": mean([m["sprite_persistence"] for m in per_clip]),
            "persistent_fraction": mean([m["sprite_persistence"] >= PERSISTENT_FRAMES for m in per_clip]),
            "warp_error": mean([m["warp_error"] for m in per_clip])}


def acceptance(generated: dict[str, float], real: dict[str, float]) -> dict[str, bool]:
    """The tiny-model acceptance on motion_summary's of generated and real clips."""
    return {"coherent": generated["coherent_fraction"] >= 0.75,
            "speed": generated["mean_speed"] >= 0.5 * real["mean_speed"],
            "sprites": generated["persistent_fraction"] >= 0.75}


def sampling_model(model, shift: float | None):
    """The model with its flow sampler's shift set (ModelSamplingSD3's patch), or as loaded when shift is None."""
    if shift is None:
        return model
    from comfy_extras.nodes_model_advanced import ModelSamplingSD3

    return ModelSamplingSD3().patch(model, shift)[0]


def encoded(vae, clips: list[torch.Tensor]) -> torch.Tensor:
    """Clips [T, H, W, 3] -> their latents [N, C, T, h, w], every frame encoded alone (as the tiny VAE's were)."""
    from difftrack_pack.nodes.encoding import encode_frames

    return torch.cat([encode_frames(vae, clip, "per_frame")[0] for clip in clips])


def from_real(model, vae, positive, latents: torch.Tensor, denoise: float, steps: int, seed: int,
              batch: int) -> dict[str, float]:
    """motion_summary of clips sampled from `latents` ([N, C, T, h, w], as `encoded` gives) with KSampler's
    `denoise`, plus the noise level the sampling starts from."""
    import comfy.samplers
    import nodes as comfy_nodes

    sampled = []
    for first in range(0, len(latents), batch):
        samples = comfy_nodes.common_ksampler(model, seed + first, steps, 1.0, "euler", "simple", positive, positive,
                                              {"samples": latents[first:first + batch]}, denoise=denoise)[0]["samples"]
        sampled += decode_per_frame(vae, samples)
    schedule = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", int(steps / denoise))
    return {**motion_summary([clip_metrics(clip) for clip in sampled]),
            "start_sigma": round(float(schedule[-(steps + 1)]), 4)}


def one_step(model, latents: torch.Tensor, levels: list[float], seed: int) -> dict[str, float]:
    """Per noise level: the correlation between the temporal deviation (each latent pixel minus its mean over time)
    of clean latents [N, C, T, h, w] (as `encoded` gives) and of the model's one-step prediction of them from their
    noised versions (Zero Conditioning: an all-zero text context)."""
    base = model.model
    clean = base.process_latent_in(latents)
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed))
    context = torch.zeros(len(clean), 1, 4096)
    deviation = lambda latent: latent - latent.mean(dim=2, keepdim=True)  # noqa: E731
    truth = deviation(clean)
    correlations = {}
    for level in levels:
        noisy = clean + level * (noise - clean)
        predicted = deviation(base.apply_model(noisy, torch.full((len(clean),), level), c_crossattn=context).float())
        correlations[str(level)] = round(float((truth * predicted).sum() / (truth.norm() * predicted.norm())), 4)
    return correlations


def main() -> None:
    parser = bench.parser(__doc__)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--shift", type=float, default=None, help="the flow sampler's shift (default: the model's)")
    parser.add_argument("--batch", type=int, default=4, help="clips sampled at once")
    parser.add_argument("--picture", default="", help="also write frames 0, 4, 8, 12 of two generated and two real clips")
    parser.add_argument("--from-real", default="", help="comma-separated denoise values: also sample from the rendered "
                                                        "clips partly noised (see above)")
    parser.add_argument("--one-step", default="", help="comma-separated noise levels: one-step motion correlation on "
                                                       "rendered and training clips (see above)")
    parser.add_argument("--motion", default=TRAINED_MOTION, help="motion regime of the rendered and training clips: the "
                                                                 "one the model was trained on (bench/train_tiny.py --motion)")
    parser.add_argument("--unet", default=str(TRAINED / TRAINED_DIT))
    parser.add_argument("--vae", default=str(TRAINED / TRAINED_VAE))
    args = parser.parse_args()
    bench.start(args)
    import comfy.sd
    import comfy.utils

    from difftrack_devkit.nodes import run_node
    from difftrack_pack.nodes.cag_nodes import ZeroConditioning

    model = sampling_model(comfy.sd.load_diffusion_model(args.unet), args.shift)
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(args.vae))
    positive = run_node(ZeroConditioning, model=model).args[0]
    begin = time.perf_counter()
    generated = []
    for first in range(0, args.clips, args.batch):  # each batch from its own seed, so N clips are N clips of any batch
        generated += generate(model, vae, positive, args.seed + first, min(args.batch, args.clips - first), args.steps,
                              None)[0]
    sampling_s = time.perf_counter() - begin
    real = rendered_clips(args.seed, args.clips, args.motion)
    scores = {"generated": motion_summary([clip_metrics(clip) for clip in generated]),
              "real": motion_summary([clip_metrics(clip) for clip in real])}
    real_latents = encoded(vae, real) if args.one_step or args.from_real else None  # once, for both
    if args.one_step:
        from difftrack_bench.train_tiny import TRAIN_SEED_BASE
        from difftrack_pack.ditcorr.synthetic import Scene

        training = [Scene(TRAIN_SEED_BASE + index, (SIZE, SIZE), FRAMES, motion=args.motion).render()
                    for index in range(args.clips)]
        levels = [float(value) for value in args.one_step.split(",")]
        scores["one_step"] = {"rendered": one_step(model, real_latents, levels, args.seed),
                              "training": one_step(model, encoded(vae, training), levels, args.seed)}
    if args.from_real:
        scores["from_real"] = {value: from_real(model, vae, positive, real_latents, float(value), args.steps,
                                                args.seed, args.batch) for value in args.from_real.split(",")}
    if args.picture:
        frames = (0, 4, 8, 12)
        rows = {f"generated {i + 1}": [generated[i][f] for f in frames] for i in range(min(2, len(generated)))}
        rows.update({f"real {i + 1}": [real[i][f] for f in frames] for i in range(min(2, len(real)))})
        bench.image_sheet(rows, [f"frame {f}" for f in frames], args.picture)
    print(json.dumps({
        "model": "wan2.1-tiny" if args.unet == str(TRAINED / TRAINED_DIT) else args.unet,
        "device": bench.device_name(args.device), "seed": args.seed,
        "clips": args.clips, "steps": args.steps, "shift": args.shift, "motion": args.motion, **scores,
        "meets": acceptance(scores["generated"], scores["real"]),
        "seconds_per_clip": round(sampling_s / args.clips, 2), "seconds": round(time.perf_counter() - begin, 1),
    }))


if __name__ == "__main__":
    with torch.inference_mode():  # as ComfyUI's executor runs every node
        main()
