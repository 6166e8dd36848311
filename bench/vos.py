"""Mask propagation on synthetic clips with exact per-object masks, against three baselines; and its cost on the GPU.

    python bench/vos.py --seed S --clips N [--motion fast|slow|static-camera|mixed] [--frames F] [--device cpu|cuda]
                        [--sigmas 0.2,0.5] [--fuse 5+6,5+6+7] [--temperature T] [--one-colour] [--upscale 2]
                        [--unet <dit.safetensors> --vae <vae.safetensors>] [--picture PATH]
    python bench/vos.py --speed --size tiny|1.3b --frames 81 [--upscale 2] [--device cuda]

Quality (the default): the tiny DiT and VAE of assets/tiny_wan/ (never trained on the seeds drawn here). Each
clip (ditcorr.synthetic, 256x256, seeded from S) is encoded per frame and run through one forward per noise level
of --sigmas that captures every block (the node's path for a short clip); the sprites visible on frame 0 are
propagated from their exact frame-0 masks with the node's defaults, per sigma and block with and without fitted
head weights, and scored with DAVIS's J, F and J&F (first and last frames left out) per object, averaged over all
objects. Baselines, with the same protocol (window, top-k, context) and label upsampling: static (the frame-0
masks copied), latent_nn (affinities from the VAE latents, cosine over a temperature of 0.07 as in DINO's
propagation) and hidden_nn (the same on a block's input hidden states instead of its q/k, at the best block and
sigma). --fuse also scores sets of blocks fused (their heads together, as the node fuses the blocks it is given).
Prints one JSON line: jf, j, f of the best setting (sigma, block or fused set, fitted or not: best_sigma,
best_block, head_weights); `settings` per block and fused set {mean, fitted} at the best sigma; `by_sigma` the
best setting at each sigma; `baselines`; `best_baseline`; `margin` (points); `ceiling`: the scores of the exact masks
given at the DiT's token grid (token_grid) or at the latent's (latent_grid) on every frame and upsampled as the
propagated labels are, what perfect correspondence at that resolution would score.
--upscale F enlarges the clips F times (bicubic, as the node's upscale does) before the VAE and the DiT, for ours
and every baseline alike, the windows F times wider in tokens; labels come back at the clips' own size and are
scored there.

Speed (--speed): a random-weight Wan at 480x832 (1.3b) or 128x128 (tiny), F per-frame latent frames; the node's
model path (runs of 13 frames overlapping by the context, the middle block), timed as extraction forwards alone
and as propagation alone on the features they captured (token labels, then pixel masks from frames in CPU
memory, as the node does); `propagate_to_forward_ratio`, peak memory. --upscale F times both at frames F times
larger (F x 480 x F x 832 at 1.3b), the radius scaled as the node scales it.
"""
from __future__ import annotations

import json
import statistics

import torch

from difftrack_devkit import bench
from difftrack_devkit.testbed import TRAINED, TRAINED_DIT, TRAINED_VAE

BASELINE_TEMPERATURE = 0.07  # DINO's label propagation, on L2-normalised features
MIN_OBJECT_PIXELS = 64  # sprites with fewer pixels on frame 0 are not annotated


def unit_features(features: torch.Tensor) -> torch.Tensor:
    """[T, h, w, C] features as one 'head' of L2-normalised q = k: [1, T, h, w, C]."""
    features = features.float()
    return (features / features.norm(dim=-1, keepdim=True).clamp(min=1e-8))[None]


def scores(maps: torch.Tensor, truth: torch.Tensor, objects: list[int]) -> list[dict]:
    """DAVIS scores of each annotated object (its true label) in label maps [T, H, W] against the truth."""
    from difftrack_pack.ditcorr.vos_metrics import davis_scores

    return [davis_scores(maps == index, truth == label) for index, label in enumerate(objects, start=1)]


def mean_scores(runs: list[dict]) -> dict:
    """J, F, J&F in percent, averaged over every object of every clip."""
    return {key: round(100 * statistics.fmean(run[key] for run in runs), 2) for key in ("jf", "j", "f")}


def evaluate(unet: str, vae: str, seed: int, clips: int, size: int = 256, frames: int = 13,
             sigmas: tuple[float, ...] = (0.2,), motion: str = "fast", picture: str = "",
             temperature: float | None = None, fused: tuple[str, ...] = (), one_colour: bool = False,
             upscale: int = 1) -> dict:
    import dataclasses

    import comfy.sd
    import comfy.utils

    from difftrack_pack.ditcorr.propagate import (PropagationSettings, fused_qk, label_image, label_maps,
                                                   masks_to_labels, propagate_video)
    from difftrack_pack.ditcorr.synthetic import Scene
    from difftrack_pack.nodes.adapters import adapter_for
    from difftrack_pack.nodes.encoding import enlarged, encode_frames
    from difftrack_pack.nodes.extract import extract_from_latent

    model = comfy.sd.load_diffusion_model(unet)
    autoencoder = comfy.sd.VAE(sd=comfy.utils.load_torch_file(vae))
    diffusion_model = model.get_model_object("diffusion_model")
    adapter = adapter_for(diffusion_model)
    blocks = list(range(adapter.block_count(diffusion_model)))
    fitted = PropagationSettings(temperature=temperature, radius=upscale * PropagationSettings.radius)
    mean = dataclasses.replace(fitted, fit_steps=0)
    baseline = dataclasses.replace(mean, temperature=BASELINE_TEMPERATURE)

    def propagate(q, k, masks, clip_frames, settings):
        labels, _ = propagate_video([(tuple(map(float, range(frames))), q, k)], 0.0, masks, settings)
        return label_maps(labels, clip_frames, 0, label_image(masks))

    choices = [*blocks, *fused]  # single blocks, then sets of blocks fused ("5+6": their heads together)
    ours = [(sigma, choice, fit) for sigma in sigmas for choice in choices for fit in ("mean", "fitted")]
    hidden_keys = [("hidden_nn", sigma, block) for sigma in sigmas for block in blocks]
    ceilings = ("token_grid", "latent_grid")
    results = {key: [] for key in [*ours, *hidden_keys, "static", "latent_nn", *ceilings]}
    shown = None
    for index in range(clips):
        scene = Scene(seed * 100_003 + index, (size, size), frames, motion=motion, one_colour=one_colour)
        clip_frames, truth = scene.render(), scene.labels()
        objects = [label for label in truth[0].unique().tolist() if label > 0
                   and (truth[0] == label).sum() >= MIN_OBJECT_PIXELS]
        if not objects:
            continue
        object_masks = torch.stack([truth == label for label in objects], dim=1).float()  # [T, N, H, W]
        masks = object_masks[0]
        latent, positions = encode_frames(autoencoder, enlarged(clip_frames, upscale), "per_frame")
        grid = adapter.token_grid(diffusion_model, latent.shape)
        recording, hidden = bench.recording_hidden_states(model, adapter, blocks, grid)  # overwritten per forward
        maps_by = {}
        for sigma in sigmas:
            features = extract_from_latent(recording, latent, positions, (upscale * size,) * 2, frames, None, blocks,
                                           sigma, seed=index, frames_per_chunk=0)
            for choice in choices:
                parts = [choice] if isinstance(choice, int) else [int(block) for block in choice.split("+")]
                q, k = fused_qk([(qk.q, qk.k) for qk in (features.select(block)[0].qk for block in parts)])
                for fit, settings in (("mean", mean), ("fitted", fitted)):
                    maps_by[(sigma, choice, fit)] = propagate(q, k, masks, clip_frames, settings)
            for block in blocks:
                unit = unit_features(hidden[block])
                maps_by[("hidden_nn", sigma, block)] = propagate(unit, unit, masks, clip_frames, baseline)
            features.release()
        unit = unit_features(latent[0].permute(1, 2, 3, 0))
        latent_settings = dataclasses.replace(baseline, radius=2 * baseline.radius)  # latents: twice the grid
        maps_by["latent_nn"] = propagate(unit, unit, masks, clip_frames, latent_settings)
        maps_by["static"] = label_image(masks)[None].expand(frames, -1, -1)
        for name, cells in zip(ceilings, (grid[1:], tuple(latent.shape[-2:]))):  # exact labels at that grid
            exact = {float(t): masks_to_labels(object_masks[t], cells) for t in range(frames)}
            maps_by[name] = label_maps(exact, clip_frames, 0, label_image(masks))
        for key, maps in maps_by.items():
            results[key] += scores(maps, truth, objects)
        if shown is None:
            shown = (clip_frames, truth, objects, maps_by)

    scored = {key: mean_scores(runs) for key, runs in results.items()}
    best_key = max(ours, key=lambda key: scored[key]["jf"])
    hidden_key = max(hidden_keys, key=lambda key: scored[key]["jf"])
    baselines = {"static": scored["static"], "latent_nn": scored["latent_nn"],
                 "hidden_nn": {**scored[hidden_key], "sigma": hidden_key[1], "block": hidden_key[2]}}
    best_baseline = max(baselines, key=lambda name: baselines[name]["jf"])
    best_sigma, best_block, best_fit = best_key

    def best_at(sigma: float) -> dict:
        _, block, fit = max((key for key in ours if key[0] == sigma), key=lambda key: scored[key]["jf"])
        return {**scored[(sigma, block, fit)], "block": block, "head_weights": fit}

    if picture and shown is not None:
        draw_picture(shown, best_key, hidden_key, picture)
    return {**scored[best_key], "best_sigma": best_sigma, "best_block": best_block, "head_weights": best_fit,
            "settings": {choice: {fit: scored[(best_sigma, choice, fit)] for fit in ("mean", "fitted")}
                         for choice in choices},
            "by_sigma": {sigma: best_at(sigma) for sigma in sigmas},
            "baselines": baselines, "best_baseline": best_baseline,
            "margin": round(scored[best_key]["jf"] - baselines[best_baseline]["jf"], 2),
            "ceiling": {name: scored[name] for name in ceilings},
            "objects": len(results["static"]), "clips": clips, "seed": seed, "motion": motion, "frame_size": size,
            "frames": frames, "sigmas": list(sigmas), "temperature": temperature or "default", "one_colour": one_colour,
            "upscale": upscale}


def draw_picture(shown, ours, hidden_key, path: str) -> None:
    """The first clip: the exact masks, ours at the best setting, and the baselines, on four frames."""
    from difftrack_pack.ditcorr.draw import overlay_labels

    frames, truth, objects, maps_by = shown
    relabelled = torch.zeros_like(truth)  # the truth in the annotated objects' numbering, others background
    for index, label in enumerate(objects, start=1):
        relabelled[truth == label] = index
    times = sorted({0, len(frames) // 3, 2 * len(frames) // 3, len(frames) - 1})
    rows = {"exact masks": relabelled, f"ours (sigma {ours[0]}, block {ours[1]}, {ours[2]})": maps_by[ours],
            f"hidden_nn (sigma {hidden_key[1]}, block {hidden_key[2]})": maps_by[hidden_key],
            "latent_nn": maps_by["latent_nn"], "static": maps_by["static"]}
    drawn = {name: list(overlay_labels(frames[times], maps[times])) for name, maps in rows.items()}
    bench.image_sheet(drawn, [f"frame {t}" for t in times], path, tile=200, label_width=270)


def speed(args) -> dict:
    from difftrack_bench.track import SIZES as TRACK_SIZES, tracking_inputs

    run = bench.random_model_run(args, TRACK_SIZES)  # the host first: what follows imports ComfyUI
    from difftrack_pack.ditcorr import DeviceWindow
    from difftrack_pack.ditcorr.chunks import plan_windows
    from difftrack_pack.ditcorr.propagate import PropagationSettings, label_image, label_maps, propagate_video
    from difftrack_pack.nodes.extract import extract_from_latent
    from difftrack_pack.nodes.propagate_nodes import on_device

    latent, frame_size, images, _ = tracking_inputs(run.size, args.frames, 1, run.generator)
    # upscale: as the node, the latents and tokens of the enlarged frames, the masks at the frames' own size
    latent = torch.nn.functional.interpolate(latent, scale_factor=(1, args.upscale, args.upscale))
    enlarged_size = (args.upscale * frame_size[0], args.upscale * frame_size[1])
    settings = PropagationSettings(radius=args.upscale * PropagationSettings.radius)
    chunks = plan_windows(args.frames, 13, 0, settings.context)
    height, width = frame_size
    masks = torch.zeros(2, height, width)
    masks[0, height // 4: height // 2, width // 4: width // 2] = 1
    masks[1, height // 2:, width // 2:] = 1
    positions = tuple(map(float, range(args.frames)))

    def extract():
        return extract_from_latent(run.model, latent, positions, enlarged_size, args.frames, run.conditioning,
                                   [run.middle_block], 0.1, chunks=chunks)

    def propagate(features):
        window = DeviceWindow(args.device)
        forwards = ((frames, *on_device(window, qk)) for frames, qk in features.select())
        return propagate_video(forwards, 0.0, masks.to(args.device), settings)[0]

    def to_pixels(labels):
        return label_maps(labels, images, 0, label_image(masks))

    features = extract()
    to_pixels(propagate(features))  # warm-up
    if args.profile:
        labels = propagate(features)
        run.profile(lambda: propagate(features), "token labels")
        run.profile(lambda: to_pixels(labels), "pixel masks")
    forward_times, propagate_times, pixel_times = [], [], []
    for _ in range(args.repeats):
        seconds, features = run.timed(extract)
        forward_times.append(seconds)
        seconds, labels = run.timed(lambda: propagate(features))
        propagate_times.append(seconds)
        pixel_times.append(run.timed(lambda: to_pixels(labels))[0])
    peak = None
    if run.cuda:
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        run.timed(lambda: to_pixels(propagate(features)))
        peak = round((torch.cuda.max_memory_allocated() - base) / 2**30, 3)
    forward_s, token_s = statistics.median(forward_times), statistics.median(propagate_times)
    pixel_s = statistics.median(pixel_times)
    return {"model": f"wan2.1-{args.size}", "device": run.device_name, "frames": args.frames, "chunks": len(chunks),
            "frame_size": list(frame_size), "upscale": args.upscale,
            "block": run.middle_block, "forward_s": round(forward_s, 4), "propagate_s": round(token_s + pixel_s, 4),
            "token_propagate_s": round(token_s, 4), "pixel_masks_s": round(pixel_s, 4),
            "propagate_to_forward_ratio": round((token_s + pixel_s) / forward_s, 4), "peak_extra_mem_gib": peak,
            "all_s": {"forward": [round(t, 4) for t in forward_times], "token_propagate": [round(t, 4) for t in propagate_times],
                      "pixel_masks": [round(t, 4) for t in pixel_times]}}


def main() -> None:
    from difftrack_bench.track import SIZES as TRACK_SIZES

    parser = bench.parser(__doc__, TRACK_SIZES)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--unet", default=str(TRAINED / TRAINED_DIT), help="default: the tiny DiT trained on these clips")
    parser.add_argument("--vae", default=str(TRAINED / TRAINED_VAE), help="default: the tiny VAE trained on these clips")
    parser.add_argument("--frames", type=int, default=None, help="frames per clip (quality: 13; speed: 81)")
    parser.add_argument("--sigmas", default="0.2,0.5", help="noise levels of the forwards, each scored (the best "
                        "setting is the best block, head weighting and sigma)")
    parser.add_argument("--motion", default="fast", help="motion regime of the clips: fast, slow, static-camera, mixed")
    parser.add_argument("--picture", default="", help="also draw the first clip's masks as a PNG here")
    parser.add_argument("--one-colour", action="store_true", help="every sprite of a clip the same colour: only "
                        "shape, shading and motion tell them apart")
    parser.add_argument("--upscale", type=int, default=1, help="frames enlarged this many times before the VAE and "
                        "the DiT, for ours and every baseline (the node's upscale; window radii scaled to match)")
    parser.add_argument("--fuse", default="", help="sets of blocks also scored fused, their heads together "
                        "(e.g. 5+6,5+6+7)")
    parser.add_argument("--temperature", type=float, default=0.0,
                        help="softmax temperature of q.k for our propagation (0: the node's default)")
    parser.add_argument("--speed", action="store_true", help="time propagation against extraction (random weights)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="--speed: also print where propagation spends its time (stderr)")
    args = parser.parse_args()
    if args.speed:
        args.frames = args.frames or 81
        print(json.dumps(speed(args)))
        return
    bench.start(args)
    scores = evaluate(args.unet, args.vae, args.seed, args.clips, frames=args.frames or 13,
                      sigmas=tuple(float(sigma) for sigma in args.sigmas.split(",")), motion=args.motion,
                      picture=args.picture, temperature=args.temperature or None,
                      fused=tuple(choice for choice in args.fuse.split(",") if choice), one_colour=args.one_colour,
                      upscale=args.upscale)
    print(json.dumps({"model": "wan2.1-tiny" if args.unet == str(TRAINED / TRAINED_DIT) else args.unet,
                      "device": bench.device_name(args.device), **scores}))


if __name__ == "__main__":
    with torch.inference_mode():  # as ComfyUI's executor runs every node
        main()
