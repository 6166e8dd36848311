"""What every benchmark in bench/ starts with: its command line, the host, a random-weight model, timing."""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch

from .host import require_host


def parser(doc: str, sizes: dict | None = None) -> argparse.ArgumentParser:
    """The benchmark's command line: its docstring as help, --device, and --size when it has model sizes."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if sizes is not None:
        parser.add_argument("--size", choices=list(sizes), default="tiny")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    return parser


def device_name(device: str) -> str:
    """What a benchmark's JSON names the device: the GPU's name on "cuda", else "cpu"."""
    return torch.cuda.get_device_name() if device == "cuda" else "cpu"


def timed(run: Callable[[], object], device: str) -> tuple[float, object]:
    """(seconds `run` takes, the device's queue drained before and after; what it returned)."""
    if device == "cuda":
        torch.cuda.synchronize()
    begin = time.perf_counter()
    result = run()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - begin, result


def start(args: argparse.Namespace) -> None:
    """ComfyUI and this pack importable, on the device the command line chose."""
    require_host(cpu=args.device == "cpu")


@dataclass
class RandomModelRun:
    """A benchmark on one random-weight model of the sizes table (the generator is also used for its inputs)."""

    size: dict  # the chosen row of the benchmark's SIZES: config, dtype, ...
    device: str
    generator: torch.Generator
    model: object  # ModelPatcher
    adapter: object
    middle_block: int
    conditioning: list  # a random text CONDITIONING shaped for the model

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"

    @property
    def device_name(self) -> str:
        return device_name(self.device)

    def timed(self, run: Callable[[], object]) -> tuple[float, object]:
        """(seconds `run` takes on this run's device, its queue drained before and after; what it returned)."""
        return timed(run, self.device)

    def profile(self, run: Callable[[], object], title: str, rows: int = 25) -> None:
        """Run `run` once under torch's profiler and print its busiest operations to stderr, under `title`."""
        activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if self.cuda else [])
        with torch.profiler.profile(activities=activities) as profile:
            self.timed(run)
        for key in (["cuda_time_total"] if self.cuda else []) + ["self_cpu_time_total"]:  # what the device, the host does
            table = profile.key_averages().table(sort_by=key, row_limit=rows)
            print(f"--- {title}, by {key} ---", table, sep="\n", file=sys.stderr)


def random_model_run(args: argparse.Namespace, sizes: dict) -> RandomModelRun:
    """start(), then the model of `sizes[args.size]` with random weights on args.device."""
    from .models import text_conditioning, random_model

    start(args)
    from difftrack_pack.nodes.vocabulary import model_and_adapter

    size = sizes[args.size]
    generator = torch.Generator().manual_seed(0)
    model = random_model(size["config"], dtype=size["dtype"], device=args.device)
    diffusion_model, adapter = model_and_adapter(model)
    return RandomModelRun(size, args.device, generator, model, adapter, adapter.block_count(diffusion_model) // 2,
                          text_conditioning(model, generator))


def image_sheet(rows: dict[str, list[torch.Tensor]], column_titles: list[str], path: str, tile: int = 160,
                label_width: int = 230) -> None:
    """A PNG grid: one row per entry (its name on the left), its images [H, W, 3] in [0, 1] across under the
    column titles, each resized to tile x tile."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=15)
    sheet = Image.new("RGB", (label_width + tile * len(column_titles), 24 + tile * len(rows)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for column, title in enumerate(column_titles):
        draw.text((label_width + column * tile + tile / 2, 4), title, fill=(0, 0, 0), font=font, anchor="ma")
    for row, (name, images) in enumerate(rows.items()):
        draw.text((8, 24 + row * tile + tile / 2), name, fill=(0, 0, 0), font=font, anchor="lm")
        for column, image in enumerate(images):
            tile_image = Image.fromarray((image.clamp(0, 1) * 255).byte().numpy()).resize((tile, tile), Image.LANCZOS)
            sheet.paste(tile_image, (label_width + column * tile, 24 + row * tile))
    sheet.save(path, optimize=True)


def recording_hidden_states(model, adapter, blocks: list[int], grid: tuple[int, int, int]) -> tuple[object, dict]:
    """A clone of `model` whose listed blocks also record their input hidden states (the video tokens of sample 0,
    [T, h, w, C] float32 on the CPU, by block, overwritten by each forward), and the dict they land in: the
    baselines that match on hidden states instead of q/k read them."""
    import math

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
    return recording, hidden
