"""Train the tiny Wan 2.1-format VAE and DiT shipped in assets/tiny_wan/ (how they were made: assets/README.md).

    COMFYUI_PATH=<ComfyUI> python bench/train_tiny.py --motion one-way-slow --out <first part> --compile
    COMFYUI_PATH=<ComfyUI> python bench/train_tiny.py --resume <first part> --motion mostly-one-way-slow \
        [--out assets/tiny_wan] --compile

The defaults and these regimes are the settings of the shipped run, which went in
these two parts (the GPU machine's calls last at most 10 minutes): `--resume <out
of the last part>` keeps that part's VAE and trains its DiT further on clips of
the same seeds; each part's record nests the one before it.

Clips come from ditcorr.synthetic (256x256, 13 frames, the "fast" regime unless --motion
says otherwise; seeds TRAIN_SEED_BASE + i, which bench/quality.py never draws). Then, on one GPU:

1. the VAE (ComfyUI's WanVAE class, base width 8) learns to reconstruct single
   frames through its own encode/decode, the path ComfyUI takes for a one-frame
   video; afterwards its 1x1 latent convolutions are rescaled so that Wan 2.1's
   latent normalisation maps its latents to zero mean and unit variance;
2. every frame is encoded alone (the pack's per-frame encoding) and the DiT
   (ComfyUI's WanModel class, dim 384) learns flow matching as Wan does, on the
   normalised latents, with a fixed all-zero text context.

Both are written as the safetensors the stock VAELoader and UNETLoader read,
with a JSON record of the run (settings, steps, losses, time, device).
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from difftrack_devkit import bench
from difftrack_devkit.host import require_host
from difftrack_devkit.testbed import TRAINED, TRAINED_DIT, TRAINED_VAE
TRAIN_SEED_BASE = 2 ** 50  # quality.py draws seed * 100_003 + index, far below this
VAE_DIM = 8
DIT_CONFIG = dict(dim=384, ffn_dim=384, num_heads=3, num_layers=8)  # the shipped DiT: 29.6 MB (bf16; dim 256: 13.9)


def dit_config(dim: int, ffn_dim: int, layers: int) -> dict:
    """A WanModel size. ComfyUI's loader reads a Wan checkpoint's head count as dim / 128: heads of 128 channels."""
    if dim % 128:
        raise ValueError(f"--dit-dim {dim}: ComfyUI reads Wan's heads as 128 channels each, so give a multiple of 128.")
    return dict(dim=dim, ffn_dim=ffn_dim, num_heads=dim // 128, num_layers=layers)


def render(seed_size_frames_motion: tuple[int, int, int, str]) -> np.ndarray:
    from difftrack_pack.ditcorr.synthetic import Scene

    seed, size, frames, motion = seed_size_frames_motion
    torch.set_num_threads(1)
    return (Scene(seed, (size, size), frames, motion=motion).render() * 255).round().byte().numpy()


def render_clips(count: int, size: int, frames: int, workers: int, motion: str = "fast") -> torch.Tensor:
    """[count, T, H, W, 3] uint8 training clips of a motion regime, rendered in parallel (before CUDA starts: the
    pool forks)."""
    jobs = [(TRAIN_SEED_BASE + index, size, frames, motion) for index in range(count)]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return torch.from_numpy(np.stack(pool.map(render, jobs, chunksize=16)))


def differentiable_rope(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Wan's RoPE in plain torch ops (comfy_kitchen's fused op, when installed, has no backward)."""
    pairs = x.to(freqs.dtype).reshape(*x.shape[:-1], -1, 1, 2)
    return (freqs[..., 0] * pairs[..., 0] + freqs[..., 1] * pairs[..., 1]).reshape(*x.shape).type_as(x)


def new_vae(device: str):
    from comfy.ldm.wan.vae import WanVAE
    from difftrack_devkit.models import randomize_

    vae = WanVAE(dim=VAE_DIM, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                 temperal_downsample=[False, True, True], dropout=0.0)
    randomize_(vae)
    with torch.no_grad():
        for name, param in vae.named_parameters():
            if name.endswith("gamma"):  # RMS norm gains start at one
                param.fill_(1.0)
    return vae.to(device)


def new_dit(device: str, config: dict = DIT_CONFIG):
    import comfy.ldm.wan.model
    import comfy.ops
    from difftrack_devkit.models import randomize_

    comfy.ldm.wan.model.apply_rope1 = differentiable_rope
    dit = comfy.ldm.wan.model.WanModel(model_type="t2v", patch_size=(1, 2, 2), in_dim=16, out_dim=16, freq_dim=256,
                                       window_size=(-1, -1), qk_norm=True, cross_attn_norm=True, eps=1e-6,
                                       **config, operations=comfy.ops.disable_weight_init)
    randomize_(dit)
    with torch.no_grad():  # start as a zero predictor, as DiTs do
        dit.head.head.weight.zero_()
        dit.head.head.bias.zero_()
    return dit.to(device)


def to_pixels(frames: torch.Tensor, device: str) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> one-frame videos [N, 3, 1, H, W] in [-1, 1] (ComfyUI's VAE input scaling)."""
    return frames.to(device).permute(0, 3, 1, 2)[:, :, None].float() / 127.5 - 1


def lr_at(step: int, progress: float, peak: float, warmup: int = 200) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to a tenth of the peak as progress goes 0 -> 1."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def train_vae(clips: torch.Tensor, steps: int, batch: int, device: str, log: list) -> torch.nn.Module:
    vae = new_vae(device)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    frames = clips.flatten(0, 1)
    generator = torch.Generator().manual_seed(0)
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, step / steps, 1e-3)
        x = to_pixels(frames[torch.randint(len(frames), (batch,), generator=generator)], device)
        with torch.autocast("cuda", torch.bfloat16, enabled=device == "cuda"):
            latent = vae.encode(x)
            reconstruction = vae.decode(latent).float()
        loss = F.l1_loss(reconstruction, x) + F.mse_loss(reconstruction, x) + 1e-4 * latent.float().pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        if step % 100 == 0 or step == steps - 1:
            log.append({"phase": "vae", "step": step, "loss": round(loss.item(), 5)})
            print(json.dumps(log[-1]), flush=True)
    return vae.eval()


@torch.no_grad()
def encode(vae, frames: torch.Tensor, device: str, batch: int = 256) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> latents [N, 16, h, w] (the encoder's mean, as ComfyUI's VAE returns it)."""
    out = []
    for start in range(0, len(frames), batch):
        with torch.autocast("cuda", torch.bfloat16, enabled=device == "cuda"):
            out.append(vae.encode(to_pixels(frames[start:start + batch], device))[:, :, 0].float())
    return torch.cat(out)


@torch.no_grad()
def normalise_latents(vae, sample: torch.Tensor) -> None:
    """Rescale the VAE's 1x1 latent convolutions so that Wan 2.1's process_in maps its latents to N(0, 1) per channel.

    encoder: mu' = M + S (mu - m) / s; decoder: conv2'(mu') = conv2(mu), exactly (both convolutions are affine).
    m, s: the latents' own per-channel mean and std on `sample` [N, 16, h, w]; M, S: Wan 2.1's latents_mean/std."""
    import comfy.latent_formats

    wan = comfy.latent_formats.Wan21()
    M, S = wan.latents_mean.flatten().to(sample), wan.latents_std.flatten().to(sample)
    m, s = sample.mean(dim=(0, 2, 3)), sample.std(dim=(0, 2, 3))
    gain = S / s
    mean_weight, mean_bias = vae.conv1.weight[:16], vae.conv1.bias[:16]
    mean_weight.mul_(gain.view(-1, 1, 1, 1, 1).to(mean_weight))
    mean_bias.copy_(M + gain * (mean_bias.float() - m))
    decode_weight = vae.conv2.weight  # [16, 16, 1, 1, 1]
    vae.conv2.bias.add_((decode_weight[..., 0, 0, 0].float() @ (m - M / gain)).to(vae.conv2.bias))
    decode_weight.mul_((1 / gain).view(1, -1, 1, 1, 1).to(decode_weight))


def sample_sigmas(count: int, generator: torch.Generator, shifted_fraction: float = 0.5, shift: float = 8.0) -> torch.Tensor:
    """Noise levels in (0, 1): `shifted_fraction` of them shifted as Wan's sampler schedule spends its steps
    (shift * u / (1 + (shift - 1) * u), most of them near 1, where a clip's layout and motion are decided), the rest
    uniform. The shipped model's first parts drew half of each."""
    u = torch.rand(count, generator=generator)
    shifted = shift * u / (1 + (shift - 1) * u)
    return torch.where(torch.arange(count) < round(count * shifted_fraction), shifted, u)


def velocity_loss(predicted: torch.Tensor, target: torch.Tensor, temporal_weight: float) -> torch.Tensor:
    """Flow matching's MSE on velocities [B, C, T, h, w], plus temporal_weight times the MSE of their frame-to-frame
    differences. A prediction that damps motion errs by the clip's temporal variation, a small share of the plain
    MSE (consecutive latents are nearly equal) but all of the difference term: this weights what the samples lose."""
    error = predicted - target
    loss = error.pow(2).mean()
    if temporal_weight:
        loss = loss + temporal_weight * error.diff(dim=2).pow(2).mean()
    return loss


def train_dit(dit: torch.nn.Module, latents: torch.Tensor, max_steps: int, minutes: float, batch: int, device: str,
              compile_model: bool, ema_decay: float, shifted_fraction: float, peak_lr: float, log: list,
              temporal_weight: float = 0.0, crop: int = 0, time_reversal: bool = True) -> int:
    """Trains `dit` in place on latents [N, 16, T, h, w] (normalised clean latents on `device`). Stops at max_steps or
    after `minutes` (compilation included); the learning rate decays over whichever comes first. Leaves in `dit` the
    exponential moving average of its weights with `ema_decay` (0: its final weights); returns the number of steps.
    shifted_fraction: of the noise levels (sample_sigmas); peak_lr: AdamW's learning rate after warm-up;
    temporal_weight: see velocity_loss; crop: train on random crop x crop windows of the latents (all frames) instead
    of whole clips: a window of 8 x 8 tokens costs a sixteenth of a whole clip's attention, so a part on crops sees
    several times more clips, with the same motion per frame, in the same time; time_reversal: play half the clips
    backwards (exact for per-frame latents; off for clips whose motion has a direction to keep)."""
    parameters = list(dit.parameters())
    average = [p.detach().clone() for p in parameters]
    optimizer = torch.optim.AdamW(parameters, lr=peak_lr, weight_decay=0.01, betas=(0.9, 0.99))
    forward = torch.compile(dit) if compile_model else dit
    context = torch.zeros(batch, 1, 4096, device=device)
    generator = torch.Generator().manual_seed(0)
    started, step, losses = time.time(), 0, []
    while step < max_steps and time.time() - started < minutes * 60:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, max(step / max_steps, (time.time() - started) / (minutes * 60)), peak_lr)
        clean = latents[torch.randint(len(latents), (batch,), generator=generator).to(device)].float()
        if crop:
            top, left = (torch.randint(size - crop + 1, (1,), generator=generator).item() for size in clean.shape[-2:])
            clean = clean[..., top:top + crop, left:left + crop]
        # per-frame latents: time reversal is exact; drawn either way, so the option leaves the other draws as they are
        reverse = (torch.rand(batch, generator=generator) < 0.5 * time_reversal).to(device)
        clean = torch.where(reverse.view(-1, 1, 1, 1, 1), clean.flip(2), clean)
        sigma = sample_sigmas(batch, generator, shifted_fraction).to(device)
        noise = torch.randn_like(clean)
        noisy = clean + sigma.view(-1, 1, 1, 1, 1) * (noise - clean)
        with torch.autocast("cuda", torch.bfloat16, enabled=device == "cuda"):
            velocity = forward(noisy, sigma * 1000, context)
        loss = velocity_loss(velocity.float(), noise - clean, temporal_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        with torch.no_grad():  # the average starts short so that early weights fade fast
            torch._foreach_lerp_(average, parameters, 1 - min(ema_decay, (1 + step) / (10 + step)))
        losses.append(loss.detach())
        if step % 200 == 0:
            log.append({"phase": "dit", "step": step, "loss": round(torch.stack(losses).mean().item(), 5),
                        "seconds": round(time.time() - started, 1)})
            losses = []
            print(json.dumps(log[-1]), flush=True)
        step += 1
    log.append({"phase": "dit", "step": step, "loss": round(torch.stack(losses).mean().item(), 5) if losses else None,
                "seconds": round(time.time() - started, 1)})
    print(json.dumps(log[-1]), flush=True)
    with torch.no_grad():
        torch._foreach_copy_(parameters, average)
    return step


def save(module: torch.nn.Module, path: Path) -> None:
    import safetensors.torch

    safetensors.torch.save_file({k: v.detach().to(torch.bfloat16).contiguous().cpu() for k, v in module.state_dict().items()},
                                str(path))


def load(module: torch.nn.Module, path: Path) -> None:
    import safetensors.torch

    module.load_state_dict({k: v.float() for k, v in safetensors.torch.load_file(str(path)).items()})


def command_flag(name: str, value) -> str:
    """One argument as the command line gives it (a yes/no option as --name or --no-name)."""
    name = name.replace("_", "-")
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no-{name}"
    return f"--{name} {value}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=TRAINED)
    parser.add_argument("--clips", type=int, default=3000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--frames", type=int, default=13)
    parser.add_argument("--vae-steps", type=int, default=600)
    parser.add_argument("--vae-batch", type=int, default=32)
    parser.add_argument("--dit-steps", type=int, default=100_000, help="stop the DiT after this many steps")
    parser.add_argument("--dit-minutes", type=float, default=6.0, help="stop the DiT once this much time passed")
    parser.add_argument("--dit-batch", type=int, default=32)
    parser.add_argument("--ema-decay", type=float, default=0.999,
                        help="save this exponential moving average of the DiT's weights (0: its final weights)")
    parser.add_argument("--shifted-fraction", type=float, default=0.5,
                        help="of the DiT's noise levels, the fraction drawn as the shift-8 sampler spends its steps "
                             "(near 1, where motion is decided); the rest uniform")
    parser.add_argument("--dit-dim", type=int, default=DIT_CONFIG["dim"],
                        help="the DiT's width (a multiple of 128; heads of 128 channels); both files must stay <= 32 MB")
    parser.add_argument("--dit-ffn", type=int, default=DIT_CONFIG["ffn_dim"], help="the DiT's feed-forward width")
    parser.add_argument("--dit-layers", type=int, default=DIT_CONFIG["num_layers"], help="the DiT's blocks")
    parser.add_argument("--temporal-weight", type=float, default=0.0,
                        help="weight of the frame-to-frame differences' MSE in the DiT's loss (0: plain flow matching)")
    parser.add_argument("--motion", default="fast",
                        help="motion regime of the training clips (ditcorr.synthetic); one-way: the camera pans one way")
    parser.add_argument("--time-reversal", action=argparse.BooleanOptionalAction, default=None,
                        help="play half the clips backwards as augmentation (default: unless the regime pans one way)")
    parser.add_argument("--crop", type=int, default=0,
                        help="train on random crops of this many latent pixels a side (even; 0: whole clips)")
    parser.add_argument("--lr", type=float, default=5e-4, help="the DiT's peak learning rate")
    parser.add_argument("--compile", action="store_true", help="torch.compile the DiT")
    parser.add_argument("--resume", type=Path, help="a folder this script wrote: keep its VAE, train its DiT further")
    parser.add_argument("--workers", type=int, default=multiprocessing.cpu_count())
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    require_host(cpu=args.device == "cpu")
    if args.crop % 2 or args.crop > args.size // 8:
        raise ValueError(f"--crop {args.crop}: give an even number of latent pixels up to {args.size // 8} (the latent's "
                         "side; the DiT's patches are 2 x 2), or 0 for whole clips.")
    from difftrack_pack.ditcorr.synthetic import MOTIONS

    if args.motion not in MOTIONS:
        raise ValueError(f"--motion {args.motion}: use one of {', '.join(MOTIONS)}.")
    if args.time_reversal is None:
        args.time_reversal = MOTIONS[args.motion].heading is None
    torch.manual_seed(0)
    log, seconds, marks = [], {}, [time.time()]

    def lap(phase: str) -> None:
        marks.append(time.time())
        seconds[phase] = round(marks[-1] - marks[-2], 1)

    clips = render_clips(args.clips, args.size, args.frames, args.workers, args.motion)
    lap("render")
    print(json.dumps({"rendered": list(clips.shape), "seconds": seconds["render"]}), flush=True)

    frames = clips.flatten(0, 1)
    previous = None
    if args.resume:
        vae = new_vae(args.device)
        load(vae, args.resume / TRAINED_VAE)
        previous = json.loads((args.resume / "training.json").read_text())
    else:
        vae = train_vae(clips, args.vae_steps, args.vae_batch, args.device, log)
        lap("vae")
        normalise_latents(vae, encode(vae, frames[torch.randperm(len(frames))[:2048]], args.device))
    import comfy.latent_formats

    latent_format = comfy.latent_formats.Wan21()
    latents = encode(vae, frames, args.device)  # [N*T, 16, h, w]
    latents = latents.view(args.clips, args.frames, *latents.shape[1:]).transpose(1, 2)  # [N, 16, T, h, w]
    latents = latent_format.process_in(latents.cpu()).to(args.device, torch.bfloat16)
    del clips, frames
    print(json.dumps({"latents": list(latents.shape), "mean": round(latents.float().mean().item(), 4),
                      "std": round(latents.float().std().item(), 4)}), flush=True)
    lap("encode")

    config = dit_config(args.dit_dim, args.dit_ffn, args.dit_layers)
    if previous and previous["dit_config"] != config:
        raise ValueError(f"The run to resume trained a DiT of {previous['dit_config']}: give its --dit-dim, --dit-ffn "
                         "and --dit-layers, or start a new run without --resume.")
    dit = new_dit(args.device, config)  # made here, after the VAE's random draws, as in the shipped run
    if args.resume:
        load(dit, args.resume / TRAINED_DIT)
    steps = train_dit(dit, latents, args.dit_steps, args.dit_minutes, args.dit_batch, args.device, args.compile,
                      args.ema_decay, args.shifted_fraction, args.lr, log, args.temporal_weight, args.crop,
                      args.time_reversal)
    lap("dit")
    args.out.mkdir(parents=True, exist_ok=True)
    save(vae, args.out / TRAINED_VAE)
    save(dit, args.out / TRAINED_DIT)
    record = {
        "command": "python bench/train_tiny.py " + " ".join(command_flag(k, v) for k, v in vars(args).items()
                                                             if k not in ("out", "compile", "resume"))
                   + (" --compile" if args.compile else "") + (" --resume <the previous run>" if args.resume else ""),
        "device": bench.device_name(args.device), "torch": torch.__version__,
        "train_seed_base": TRAIN_SEED_BASE, "vae_dim": VAE_DIM, "dit_config": config, "dit_steps_done": steps,
        "seconds": seconds,
        "final_vae_loss": previous["final_vae_loss"] if previous else next(e["loss"] for e in reversed(log) if e["phase"] == "vae"),
        "final_dit_loss": next(e["loss"] for e in reversed(log) if e["phase"] == "dit" and e["loss"] is not None),
        "log": log,
        "resumed_from": previous,  # the run (with its own record) whose VAE and DiT this one started from
    }
    (args.out / "training.json").write_text(json.dumps(record, indent=1))
    print(json.dumps({k: v for k, v in record.items() if k != "log"}), flush=True)


if __name__ == "__main__":
    main()
