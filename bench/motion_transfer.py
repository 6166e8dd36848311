"""Motion transfer on the tiny models: generations guided by a synthetic reference's motion flow against the same
noise unguided, scored against the reference without our DiT.

    python bench/motion_transfer.py --seed S --clips N [--device cpu|cuda] [--steps 20] [--iterations 5]
                                    [--guided 0.2] [--rate 0.002,0.001] [--blocks 7]

Per clip: the reference is a rendered synthetic clip (256x256x13, seeded from S, "fast" motion: a panning
background and moving sprites); Motion Flow from Video reads it per frame (the tiny VAE's layout) at the chosen
blocks; then one generation from noise seeded by the clip (Zero Conditioning, euler, cfg 1, `--steps` steps) with
the Motion Transfer Sampler and one with plain euler. Scores (ditcorr/motion.py, OpenCV's DIS flow): motion
fidelity of the generation's flow tracks (a 16x16 grid) to the reference's, and whether the generation's
background pan (the flow's per-axis median, averaged over the clip) points within 45 degrees of the reference's.
Prints one JSON line: mf_guided, mf_unguided, pan_match_guided, pan_match_unguided (fractions of clips),
amf_loss_before / amf_loss_after (the flow loss at the first and last iteration of each guided step, averaged),
seconds_guided, seconds_unguided (per clip), and the settings.
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


def main() -> None:
    parser = bench.parser(__doc__)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--guided", type=float, default=0.2)
    parser.add_argument("--rate", default="0.002,0.001", help="learning rate on the first and last guided step")
    parser.add_argument("--blocks", default="7", help="guidance blocks (the tiny DiT's matching block is 7)")
    args = parser.parse_args()
    bench.start(args)
    import comfy.samplers
    import comfy.sd
    import comfy.utils

    from difftrack_devkit.nodes import run_node
    from difftrack_pack.ditcorr.motion import motion_fidelity
    from difftrack_pack.ditcorr.synthetic import make_clip
    from difftrack_pack.nodes.cag_nodes import ZeroConditioning
    from difftrack_pack.nodes.motion_nodes import MotionFlowFromVideo
    from difftrack_pack.nodes.motion_transfer import TransferSettings, transfer_sampler

    model = comfy.sd.load_diffusion_model(str(TRAINED / TRAINED_DIT))
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(TRAINED / TRAINED_VAE)))
    positive = run_node(ZeroConditioning, model=model).args[0]
    start_rate, end_rate = (float(r) for r in args.rate.split(","))
    settings = TransferSettings(args.guided, args.iterations, start_rate, end_rate)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", args.steps)

    def generate(sampler, seed: int) -> tuple[torch.Tensor, float]:
        latent = torch.zeros(1, 16, FRAMES, SIZE // 8, SIZE // 8)
        noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
        guider = comfy.samplers.CFGGuider(model)
        guider.set_conds(positive, positive)
        guider.set_cfg(1.0)
        begin = time.perf_counter()
        samples = guider.sample(noise, latent, sampler, sigmas, seed=seed, disable_pbar=True)
        seconds = time.perf_counter() - begin
        frames = samples.transpose(1, 2).reshape(FRAMES, -1, 1, SIZE // 8, SIZE // 8)  # one-frame clips
        return vae.decode(frames).reshape(FRAMES, SIZE, SIZE, 3).float(), seconds

    rows = []
    for index in range(args.clips):
        clip_seed = args.seed * 100_003 + index
        reference = make_clip(clip_seed, (SIZE, SIZE), FRAMES).frames
        flow, _ = run_node(MotionFlowFromVideo, model=model, vae=vae, images=reference, blocks=args.blocks,
                           encoding="per_frame").args
        report = []
        guided, guided_s = generate(transfer_sampler("euler", flow, settings, report), clip_seed)
        plain, plain_s = generate(comfy.samplers.sampler_object("euler"), clip_seed)
        reference_tracks, reference_pan = flow_tracks(reference)
        row = {"seconds_guided": guided_s, "seconds_unguided": plain_s,
               "amf_loss_before": statistics.fmean(losses[0] for losses in report),
               "amf_loss_after": statistics.fmean(losses[-1] for losses in report)}
        for name, video in (("guided", guided), ("unguided", plain)):
            tracks, pan = flow_tracks(video)
            row[f"mf_{name}"] = motion_fidelity(reference_tracks, tracks)
            row[f"pan_match_{name}"] = float(same_direction(pan, reference_pan))
        rows.append(row)
    print(json.dumps({
        **{key: round(statistics.fmean(row[key] for row in rows), 4) for key in rows[0]},
        "model": "wan2.1-tiny", "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "seed": args.seed, "clips": args.clips, "steps": args.steps, "iterations": args.iterations,
        "guided": args.guided, "rate": args.rate, "blocks": args.blocks,
    }))


if __name__ == "__main__":
    with torch.inference_mode():  # as ComfyUI's executor runs every node
        main()
