"""The correspondence analysis as a picture: one heat map per quantity, blocks across, σ down.

Every panel has its title, labelled axes, a colour bar with the panel's own range, and the best cell of that
quantity outlined. Text is drawn with Pillow (ComfyUI ships it; the default font is built in).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .analysis import Analysis
from .heatmap import colorize

TITLES = {
    "delta_avg": "matching accuracy (delta_avg vs reference)",
    "confidence": "confidence (attention at the match)",
    "attention_score": "attention score (mass on other frames)",
    "harmonic": "DiffTrack harmonic mean (needs reference)",
    "cycle_rate": "cycle consistency (label-free)",
    "sharpness": "peak sharpness (label-free)",
    "appearance": "appearance agreement (label-free)",
    "label_free": "label-free score (blocks 'best' uses it)",
}


def render_analysis(analysis: Analysis, quantities: list[str], font_size: int = 15, columns: int = 2) -> torch.Tensor:
    """The panels of `quantities`, `columns` side by side: an IMAGE [1, H, W, 3] in [0, 1]. Cells are wide when
    there are few blocks and at least 14 px when there are many (Wan 14B's 40 blocks: 560 px)."""
    font = ImageFont.load_default(size=font_size)
    blocks, sigmas = analysis.blocks, analysis.sigmas
    cell_w, cell = min(44, max(14, 480 // max(len(blocks), 1))), font_size + 7
    label_width = font_size * 0.6 * len(str(max(blocks))) + 4  # pixels a block number needs
    label_every = max(1, math.ceil(label_width / cell_w))
    margin, top, bar = 10 + font_size * 3, font_size * 2 + 8, 14  # left of the grid, above it, colour bar width
    grid_w, grid_h = cell_w * len(blocks), cell * len(sigmas)
    panel_w = max(margin + grid_w + 12 + bar + font_size * 4, 8 + font_size * 24)
    panel_h = top + grid_h + font_size * 3 + 10
    rows = math.ceil(len(quantities) / columns)
    image = Image.new("RGB", (panel_w * min(columns, len(quantities)), panel_h * rows), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for index, name in enumerate(quantities):
        x_offset, y0 = (index % columns) * panel_w, (index // columns) * panel_h
        left = x_offset + margin
        values = analysis.grid(name)
        finite = values[~values.isnan()]
        low, high = (float(finite.min()), float(finite.max())) if finite.numel() else (0.0, 1.0)
        scaled = (values - low) / (high - low) if high > low else torch.ones_like(values)
        colours = (colorize(scaled.nan_to_num(0.0)) * 255).round().to(torch.uint8)
        colours[values.isnan()] = torch.tensor([200, 200, 200], dtype=torch.uint8)
        tile = Image.fromarray(colours.numpy()).resize((grid_w, grid_h), Image.NEAREST)
        image.paste(tile, (left, y0 + top))
        draw.text((x_offset + 8, y0 + 4), TITLES.get(name, name), fill=(0, 0, 0), font=font)
        draw.text((x_offset + 8, y0 + top - font_size - 3), "sigma", fill=(90, 90, 90), font=font)
        for row, sigma in enumerate(sigmas):
            draw.text((left - 6, y0 + top + row * cell + cell / 2), f"{sigma:g}", fill=(0, 0, 0), font=font, anchor="rm")
        for column, block in enumerate(blocks):
            last = column == len(blocks) - 1 and column % label_every >= label_every / 2
            if column % label_every == 0 or last:
                draw.text((left + column * cell_w + cell_w / 2, y0 + top + grid_h + 3), str(block), fill=(0, 0, 0),
                          font=font, anchor="mt")
        draw.text((left + grid_w / 2, y0 + top + grid_h + font_size + 6), "block", fill=(90, 90, 90), font=font,
                  anchor="mt")
        if finite.numel():
            flat = int(torch.where(values.isnan(), torch.tensor(-math.inf), values).flatten().argmax())
            row, column = divmod(flat, len(blocks))
            draw.text((x_offset + panel_w - 10, y0 + top - font_size - 3),
                      f"best: block {blocks[column]}, sigma {sigmas[row]:g}", fill=(0, 0, 0), font=font, anchor="ra")
            box = (left + column * cell_w, y0 + top + row * cell, left + (column + 1) * cell_w - 1,
                   y0 + top + (row + 1) * cell - 1)
            draw.rectangle(box, outline=(0, 0, 0), width=3)
            draw.rectangle((box[0] + 2, box[1] + 2, box[2] - 2, box[3] - 2), outline=(255, 255, 255), width=1)
        bar_x = left + grid_w + 12
        ramp = (colorize(torch.linspace(1, 0, max(grid_h, 2))) * 255).round().to(torch.uint8)
        image.paste(Image.fromarray(np.repeat(ramp.numpy()[:, None], bar, axis=1)), (bar_x, y0 + top))
        draw.text((bar_x + bar + 3, y0 + top), f"{high:.3g}", fill=(0, 0, 0), font=font)
        draw.text((bar_x + bar + 3, y0 + top + grid_h), f"{low:.3g}", fill=(0, 0, 0), font=font, anchor="ld")
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)[None]
