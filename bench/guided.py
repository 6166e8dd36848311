"""The pixel step's guided filter against kornia's guided_blur, at the size Propagate Mask filters at.

    python bench/guided.py [--device cpu|cuda] [--frames 16] [--labels 3] [--height 480 --width 832] [--repeats 5]

Soft labels of `labels` channels and colour frames, filtered as labels_to_pixels filters them (window of one
16-pixel token, eps 0.01, coefficients on every second pixel) by ditcorr.guided.guided_filter and by kornia's
guided_blur (separable box filters where kornia has them). Prints one JSON line: the medians `ours_s` and
`kornia_s`, `speedup` (kornia_s / ours_s) and `max_abs_diff` between the two results.
"""
from __future__ import annotations

import inspect
import json
import statistics

import torch

from difftrack_devkit import bench


def main() -> None:
    parser = bench.parser(__doc__)
    parser.add_argument("--frames", type=int, default=16, help="frames filtered at once (the node's batch at 3 labels)")
    parser.add_argument("--labels", type=int, default=3, help="label channels: the objects and the background")
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from kornia.filters import guided_blur

    from difftrack_pack.ditcorr.guided import guided_filter

    generator = torch.Generator().manual_seed(0)
    guidance = torch.rand(args.frames, 3, args.height, args.width, generator=generator).to(args.device)
    labels = torch.rand(args.frames, args.labels, args.height, args.width, generator=generator).softmax(1).to(args.device)
    radius, eps, subsample = 16, 1e-2, 2
    separable = {"separable": True} if "separable" in inspect.signature(guided_blur).parameters else {}
    runs = {"ours": lambda: guided_filter(guidance, labels, radius, eps, subsample),
            "kornia": lambda: guided_blur(guidance, labels, 2 * radius + 1, eps, subsample=subsample, **separable)}

    for run in runs.values():  # warm-up
        run()
    times = {name: [bench.timed(run, args.device)[0] for _ in range(args.repeats)] for name, run in runs.items()}
    median = {name: statistics.median(values) for name, values in times.items()}
    print(json.dumps({"device": bench.device_name(args.device),
                      "frames": args.frames, "labels": args.labels, "frame_size": [args.height, args.width],
                      "ours_s": round(median["ours"], 5), "kornia_s": round(median["kornia"], 5),
                      "speedup": round(median["kornia"] / median["ours"], 3),
                      "max_abs_diff": float((runs["ours"]() - runs["kornia"]()).abs().max()),
                      "all_s": {name: [round(t, 5) for t in values] for name, values in times.items()}}))


if __name__ == "__main__":
    with torch.inference_mode():
        main()
