"""Cost of Cross-Attention Guidance against plain CFG, on Wan 2.1 with random weights.

    python bench/cag.py --size tiny|1.3b --device cpu|cuda

Prints one JSON line. Each timing is one guided step at sigma 0.5 through
ComfyUI's CFGGuider (cfg 6, cond and uncond batched): plain CFG, CAG with a
naive third pass (the whole perturbed forward), and CAG with prefix reuse
(the perturbed pass starts at the first chosen block), and the published
variant with prefix reuse (full-softmax mass of the own frame: a logsumexp
over all keys per chosen block). Blocks: the default
three from the middle third (15, 17, 19 of Wan 1.3B's 30). Medians of
interleaved repeats; max_abs_diff_vs_naive compares the two CAG predictions.
"""
from __future__ import annotations

import json
import statistics

import torch

from difftrack_devkit import bench

SIZES = {
    "tiny": dict(config="wan", latent=(16, 5, 16, 16), dtype=torch.float32),
    "1.3b": dict(config="wan_1.3b", latent=(16, 21, 60, 104), dtype=torch.bfloat16),  # 480x832, 81 frames
}


def main() -> None:
    parser = bench.parser(__doc__, SIZES)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    run = bench.random_model_run(args, SIZES)

    import comfy.samplers

    from difftrack_pack.nodes.cag import CrossAttentionGuidance
    from difftrack_pack.nodes.vocabulary import model_blocks
    from difftrack_pack.nodes.extract import single_forward

    size, model, adapter, positive, generator = run.size, run.model, run.adapter, run.conditioning, run.generator
    negative = [[torch.randn(positive[0][0].shape, generator=generator), positive[0][1]]]
    diffusion_model = model.get_model_object("diffusion_model")
    blocks = model_blocks("auto", "guide", model)
    latent = torch.randn(1, *size["latent"], generator=generator)
    guided = {reuse: CrossAttentionGuidance(adapter, diffusion_model, blocks, 1.0, "renormalised", 0.0, 1e9, reuse).patch(model)
              for reuse in (False, True)}
    published = CrossAttentionGuidance(adapter, diffusion_model, blocks, 1.0, "published", 0.0, 1e9, True).patch(model)

    def step(patcher):
        guider = comfy.samplers.CFGGuider(patcher)
        guider.set_conds(positive, negative)
        guider.set_cfg(6.0)
        return guider.sample(torch.zeros_like(latent), latent, comfy.samplers.KSAMPLER(single_forward),
                             torch.tensor([0.5, 0.0]), seed=0, disable_pbar=True)

    runs = {"cfg": lambda: step(model), "naive": lambda: step(guided[False]), "cag": lambda: step(guided[True]),
            "published": lambda: step(published)}
    outputs = {name: run.timed(timed_run)[1] for name, timed_run in runs.items()}  # warm-up; compared below
    times = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, timed_run in runs.items():
            times[name].append(run.timed(timed_run)[0])
    cfg_s, naive_s, cag_s, published_s = (statistics.median(times[name]) for name in runs)
    print(json.dumps({
        "model": f"wan2.1-{args.size}", "device": run.device_name, "blocks": blocks,
        "tokens": size["latent"][1] * (size["latent"][2] // 2) * (size["latent"][3] // 2),
        "cfg_step_s": round(cfg_s, 4), "naive_cag_step_s": round(naive_s, 4), "cag_step_s": round(cag_s, 4),
        "ratio_vs_cfg": round(cag_s / cfg_s, 4), "naive_ratio_vs_cfg": round(naive_s / cfg_s, 4),
        "published_step_s": round(published_s, 4), "published_ratio_vs_cfg": round(published_s / cfg_s, 4),
        "max_abs_diff_vs_naive": float((outputs["cag"].float() - outputs["naive"].float()).abs().max()),
        "all_s": {name: [round(t, 4) for t in values] for name, values in times.items()},
    }))


if __name__ == "__main__":
    with torch.inference_mode():  # as ComfyUI's executor runs every node
        main()
