"""Motion transfer on the tiny models: generations guided by a synthetic reference's motion flow against the same
noise unguided, scored against the reference without our DiT; and its cost on the GPU.

    python bench/motion_transfer.py --seed S --clips N [--device cpu|cuda] [--steps 20] [--iterations 5]
                                    [--guided 0.2] [--rate 0.002,0.001] [--blocks 7] [--schedules 0:1,0:3]
                                    [--unet DIT --vae VAE]
    python bench/motion_transfer.py --cost --size tiny|1.3b [--steps 50] [--schedules 0:1,2:3] [--device cuda]

Per clip: the reference is a rendered synthetic clip (256x256x13, seeded from S, "fast" motion: a panning
background and moving sprites); Motion Flow from Video reads it per frame (the tiny VAE's layout) at the chosen
blocks; then one generation from noise seeded by the clip (Zero Conditioning, euler, cfg 1, `--steps` steps) with
the Motion Transfer Sampler per `--schedules` entry W:G[:I] (the flow's frame window W, 0 = every pair; the gradient
on every G-th iteration; I = 1: the reference's keys and values injected at block 0) and one with plain euler. Scores (ditcorr/motion.py, OpenCV's DIS flow): motion
fidelity of the generation's flow tracks (a 16x16 grid) to the reference's, and whether the generation's
background pan (the flow's per-axis median, averaged over the clip) points within 45 degrees of the reference's.
Prints one JSON line: mf_unguided, pan_match_unguided, seconds_unguided, and per schedule (`by_schedule`; the first
one's also at the top level) mf_guided, pan_match_guided (fractions of clips), amf_loss_before / amf_loss_after
(the flow loss at the first and last computed gradient of each guided step, averaged), seconds_guided (per clip);
and the settings. With --embeddings, `embeddings`: motion embeddings learned during a generation with the clip's
noise (mf_learning, pan_match_learning, their amf_loss_before / after, seconds_learning), then applied with the
next seed's noise and no optimisation (mf_zero_shot, pan_match_zero_shot, seconds_zero_shot) against that seed
unguided (mf_unguided_other_seed, pan_match_unguided_other_seed).

Cost (--cost): a random-weight Wan 2.1 at 480x832 and 81 frames (1.3b: 21 latent frames; tiny: 64x64, 5) samples
`--steps` steps of euler with CFG (cfg 5, cond and uncond batched), plainly and with the Motion Transfer Sampler
(DiTFlow's schedule: the first 20 % of the steps guided, `--iterations` Adam steps each, the middle block, the blocks
before it checkpointed), once per `--schedules` entry W:G: the frame window W (0: every ordered pair of latent
frames, as published; N: only pairs at most N latent frames apart, FastVMT's local pairs) and the gradient computed
on every G-th iteration (1: all, as published; G > 1: FastVMT's gradient reuse); with --embeddings each schedule also
learns motion embeddings instead of optimising the latent (`W:G:embeddings`). Prints one JSON line: plain_s, and
per schedule guided_s, guided_to_plain_ratio, peak_mem_gib (device memory at its highest during that sampling run,
the model's weights included), the pairs guided and the gradients computed; plain_peak_mem_gib likewise.
"""
from __future__ import annotations

import json
import math
import statistics
import time

import torch

from difftrack_devkit import bench
from difftrack_devkit.testbed import TRAINED, TRAINED_DIT, TRAINED_VAE

SIZE, FRAMES, GRID = 256, 13, 16
COST_SIZES = {
    "tiny": dict(config="wan", latent=(16, 5, 8, 8), frames=17, dtype=torch.float32),
    "1.3b": dict(config="wan_1.3b", latent=(16, 21, 60, 104), frames=81, dtype=torch.bfloat16),  # 480x832
}


def flow_tracks(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(tracks [T, GRID*GRID, 2] of a grid carried by DIS flow, the mean background pan [2]) of frames [T, H, W, 3]."""
    from difftrack_devkit.flow import dis_flows
    from difftrack_pack.ditcorr.motion import dominant_motion, integrate_tracks

    forward, _ = dis_flows(frames)
    step = SIZE / GRID
    ys, xs = torch.meshgrid(torch.arange(GRID) * step + step / 2, torch.arange(GRID) * step + step / 2, indexing="ij")
    return integrate_tracks(forward, torch.stack([xs.flatten(), ys.flatten()], dim=1)), dominant_motion(forward).mean(0)


def same_direction(a: torch.Tensor, b: torch.Tensor, degrees: float = 45.0) -> bool:
    if a.norm() < 1e-6 or b.norm() < 1e-6:
        return False
    return float(torch.dot(a, b) / (a.norm() * b.norm())) >= math.cos(math.radians(degrees))


def cost(args) -> dict:
    """Guided against plain sampling time and peak memory on a random-weight model (see the docstring)."""
    run = bench.random_model_run(args, COST_SIZES)
    import comfy.samplers

    from difftrack_pack.nodes.motion_transfer import TransferSettings, motion_flow, transfer_sampler

    size, model, generator = run.size, run.model, run.generator
    positive = run.conditioning
    negative = [[torch.randn(positive[0][0].shape, generator=generator), positive[0][1]]]
    channels, latent_frames, height, width = size["latent"]
    reference = torch.randn(1, *size["latent"], generator=generator)
    positions = tuple(float(min(size["frames"] - 1, 4 * t)) for t in range(latent_frames))  # Wan's 4x in time
    frame_size = (8 * height, 8 * width)
    noise = torch.randn(1, *size["latent"], generator=generator)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", args.steps)

    def sample(sampler, steps=None):
        guider = comfy.samplers.CFGGuider(model)
        guider.set_conds(positive, negative)
        guider.set_cfg(5.0)
        chosen = sigmas if steps is None else sigmas[-steps - 1:]
        return guider.sample(noise, torch.zeros_like(noise), sampler, chosen, seed=0, disable_pbar=True)

    def measured(sampler) -> tuple[float, float | None]:
        if run.cuda:
            torch.cuda.reset_peak_memory_stats()
        seconds, _ = run.timed(lambda: sample(sampler))
        return seconds, round(torch.cuda.max_memory_allocated() / 2**30, 3) if run.cuda else None

    plain = comfy.samplers.sampler_object("euler")
    sample(plain, steps=2)  # warm-up: kernels, the model on the device
    plain_s, plain_peak = measured(plain)
    schedules, settings = {}, TransferSettings(iterations=args.iterations)
    for schedule in args.schedules.split(","):
        window, every = (int(part) for part in schedule.split(":"))
        flow = motion_flow(model, reference, positions, frame_size, size["frames"], None, [run.middle_block],
                           2.0, 0.0, 0, window)
        for optimise in ("latent", "embeddings") if args.embeddings else ("latent",):
            settings = TransferSettings(iterations=args.iterations, gradient_every=every, optimise=optimise)
            warm_up = TransferSettings(guided_share=1.0, iterations=1, optimise=optimise)
            sample(transfer_sampler("euler", flow, warm_up), steps=1)
            report = []
            guided_s, guided_peak = measured(transfer_sampler("euler", flow, settings, report))
            schedules[schedule + (":embeddings" if optimise == "embeddings" else "")] = {
                "frame_window": window, "gradient_every": every, "optimise": optimise, "guided_s": round(guided_s, 3),
                "guided_to_plain_ratio": round(guided_s / plain_s, 4), "peak_mem_gib": guided_peak,
                "pairs": len(flow.pairs), "gradients": sum(len(losses) for losses in report)}
    return {"model": f"wan2.1-{args.size}", "device": run.device_name, "latent": list(size["latent"]),
            "steps": args.steps, "guided_steps": settings.guided_steps(args.steps), "iterations": args.iterations,
            "block": run.middle_block, "checkpoint_blocks": settings.checkpoint_blocks, "plain_s": round(plain_s, 3),
            "plain_peak_mem_gib": plain_peak, "by_schedule": schedules}


def main() -> None:
    parser = bench.parser(__doc__, COST_SIZES)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--guided", type=float, default=0.2)
    parser.add_argument("--rate", default="0.002,0.001", help="learning rate on the first and last guided step, as "
                        "for 10 guided steps (the sampler scales it by 10 / guided steps)")
    parser.add_argument("--blocks", default="7", help="guidance blocks (the tiny DiT's matching block is 7)")
    parser.add_argument("--unet", default=str(TRAINED / TRAINED_DIT), help="the DiT (default: the tiny one shipped)")
    parser.add_argument("--vae", default=str(TRAINED / TRAINED_VAE), help="its VAE")
    parser.add_argument("--cost", action="store_true", help="time guided against plain sampling (random weights)")
    parser.add_argument("--schedules", default="0:1", help="frame window (0 = all pairs), gradient_every and (quality "
                                                          "runs) 1 to inject K/V at block 0, as W:G[:I], comma-separated")
    parser.add_argument("--embeddings", action="store_true",
                        help="also learn motion embeddings on each reference (the first schedule's window and "
                             "gradient reuse) and reuse them zero-shot with another seed; with --cost, also time "
                             "learning them per schedule")
    args = parser.parse_args()
    if args.cost:
        print(json.dumps(cost(args)))
        return
    bench.start(args)
    import comfy.samplers
    import comfy.sd
    import comfy.utils

    from difftrack_devkit.nodes import run_node
    from difftrack_pack.ditcorr.motion import motion_fidelity
    from difftrack_pack.ditcorr.synthetic import make_clip
    from difftrack_pack.nodes.cag_nodes import ZeroConditioning
    from difftrack_pack.nodes.motion_nodes import ApplyMotionEmbeddings, MotionFlowFromVideo
    from difftrack_pack.nodes.motion_transfer import TransferSettings, transfer_sampler

    model = comfy.sd.load_diffusion_model(args.unet)
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(args.vae))
    positive = run_node(ZeroConditioning, model=model).args[0]
    start_rate, end_rate = (float(r) for r in args.rate.split(","))
    schedules = {schedule: (*(int(part) for part in schedule.split(":")), 0)[:3] for schedule in args.schedules.split(",")}
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", args.steps)

    def generate(sampler, seed: int, sampled=model) -> tuple[torch.Tensor, float]:
        latent = torch.zeros(1, 16, FRAMES, SIZE // 8, SIZE // 8)
        noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
        guider = comfy.samplers.CFGGuider(sampled)
        guider.set_conds(positive, positive)
        guider.set_cfg(1.0)
        begin = time.perf_counter()
        samples = guider.sample(noise, latent, sampler, sigmas, seed=seed, disable_pbar=True)
        seconds = time.perf_counter() - begin
        frames = samples.transpose(1, 2).reshape(FRAMES, -1, 1, SIZE // 8, SIZE // 8)  # one-frame clips
        return vae.decode(frames).reshape(FRAMES, SIZE, SIZE, 3).float(), seconds

    def scores(video: torch.Tensor, reference_tracks: torch.Tensor, reference_pan: torch.Tensor) -> tuple[float, float]:
        tracks, pan = flow_tracks(video)
        return motion_fidelity(reference_tracks, tracks), float(same_direction(pan, reference_pan))

    rows = {name: [] for name in ("unguided", *schedules, "embeddings")}
    euler = comfy.samplers.sampler_object("euler")
    for index in range(args.clips):
        clip_seed = args.seed * 100_003 + index
        reference = make_clip(clip_seed, (SIZE, SIZE), FRAMES).frames
        reference_tracks, reference_pan = flow_tracks(reference)
        plain, plain_s = generate(comfy.samplers.sampler_object("euler"), clip_seed)
        mf, pan = scores(plain, reference_tracks, reference_pan)
        rows["unguided"].append({"mf_unguided": mf, "pan_match_unguided": pan, "seconds_unguided": plain_s})
        flows = {}
        for name, (window, every, inject) in schedules.items():
            if window not in flows:
                flows[window] = run_node(MotionFlowFromVideo, model=model, vae=vae, images=reference, blocks=args.blocks,
                                         encoding="per_frame", frame_window=window).args[0]
            report = []
            settings = TransferSettings(args.guided, args.iterations, start_rate, end_rate, gradient_every=every,
                                        inject_blocks=(0,) if inject else ())
            guided, guided_s = generate(transfer_sampler("euler", flows[window], settings, report), clip_seed)
            mf, pan = scores(guided, reference_tracks, reference_pan)
            rows[name].append({"mf_guided": mf, "pan_match_guided": pan, "seconds_guided": guided_s,
                               "amf_loss_before": statistics.fmean(losses[0] for losses in report),
                               "amf_loss_after": statistics.fmean(losses[-1] for losses in report)})
        if args.embeddings:  # learned with this clip's noise, then reused with the next seed's, no optimisation
            window, every, _ = next(iter(schedules.values()))
            report, learned = [], []
            settings = TransferSettings(args.guided, args.iterations, start_rate, end_rate, gradient_every=every,
                                        optimise="embeddings")
            video, learning_s = generate(transfer_sampler("euler", flows[window], settings, report, learned), clip_seed)
            mf, pan = scores(video, reference_tracks, reference_pan)
            patched = run_node(ApplyMotionEmbeddings, model=model, motion_embeddings=learned[0]).args[0]
            zero_shot, zero_shot_s = generate(euler, clip_seed + 1, patched)
            mf_zero_shot, pan_zero_shot = scores(zero_shot, reference_tracks, reference_pan)
            mf_other, pan_other = scores(generate(euler, clip_seed + 1)[0], reference_tracks, reference_pan)
            rows["embeddings"].append({
                "mf_learning": mf, "pan_match_learning": pan, "mf_zero_shot": mf_zero_shot,
                "pan_match_zero_shot": pan_zero_shot, "mf_unguided_other_seed": mf_other,
                "pan_match_unguided_other_seed": pan_other, "seconds_learning": learning_s,
                "seconds_zero_shot": zero_shot_s, "amf_loss_before": statistics.fmean(losses[0] for losses in report),
                "amf_loss_after": statistics.fmean(losses[-1] for losses in report)})
    mean = lambda runs: {key: round(statistics.fmean(run[key] for run in runs), 4) for key in runs[0]}  # noqa: E731
    by_schedule = {name: mean(rows[name]) for name in schedules}
    print(json.dumps({
        **by_schedule[next(iter(schedules))], **mean(rows["unguided"]), "by_schedule": by_schedule,
        **({"embeddings": mean(rows["embeddings"])} if args.embeddings else {}),
        "model": "wan2.1-tiny" if args.unet == str(TRAINED / TRAINED_DIT) else args.unet,
        "device": bench.device_name(args.device),
        "seed": args.seed, "clips": args.clips, "steps": args.steps, "iterations": args.iterations,
        "guided": args.guided, "rate": args.rate, "blocks": args.blocks,
    }))


if __name__ == "__main__":
    with torch.inference_mode():  # as ComfyUI's executor runs every node
        main()
