"""Long videos (issue 19's last row) on CPU: Track Points through 240 tiny frames, the progress bars that move, an
interrupt that stops within one chunk, and the model left as it was. (The GPU side, memory flat in the number of
frames at Wan 1.3B sizes, is bench/track.py --frames 481: see the README's Benchmarks.)"""
from __future__ import annotations

import comfy.model_management
import comfy.utils
import pytest
import torch

from difftrack_devkit.models import random_model, random_wan_vae
from difftrack_devkit.nodes import run_node
from difftrack_pack.nodes.track_nodes import TrackPoints

FRAMES, SIZE, CHUNK = 240, 32, 13


@pytest.fixture(scope="module")
def long_video():
    generator = torch.Generator().manual_seed(0)
    return random_model("wan"), random_wan_vae(), torch.rand(FRAMES, SIZE, SIZE, 3, generator=generator)


def track(model, vae, images):
    return run_node(TrackPoints, model=model, vae=vae, images=images, points="[[10, 12], [20, 25]]",
                    frames_per_chunk=CHUNK).args[0]


def test_a_long_video_is_tracked_with_bars_that_reach_their_ends(long_video):
    model, vae, images = long_video
    bars = []  # one list of (value, total) per progress bar, in the order they were made
    def hook(value, total, preview, node_id=None):
        if not bars or bars[-1][-1][1] != total or value < bars[-1][-1][0]:
            bars.append([])
        bars[-1].append((value, total))
    comfy.utils.set_progress_bar_global_hook(hook)
    try:
        tracks = track(model, vae, images)
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
    assert tracks["track_path"].shape == (FRAMES, 2, 2)
    assert torch.isfinite(tracks["track_path"]).all()
    totals = [bar[-1][1] for bar in bars]
    # The encoding's bar counts frames, the extraction's chunks, the tracking's the frames other than the query's.
    assert FRAMES in totals and FRAMES - 1 in totals and any(total < FRAMES - 1 for total in totals)
    for bar in bars:
        values = [value for value, _ in bar]
        assert values == sorted(values) and values[-1] == bar[-1][1]  # each moves forward to its end
    tracking = next(bar for bar in bars if bar[-1][1] == FRAMES - 1)
    assert len(tracking) >= FRAMES // CHUNK  # it moves along the way, not only at the end


@pytest.mark.parametrize("stage", ["extraction", "tracking"])
def test_an_interrupt_stops_within_one_chunk_and_leaves_the_model_as_it_was(long_video, stage):
    model, vae, images = long_video
    options_before = repr(model.model_options)
    seen = []
    def hook(value, total, preview, node_id=None):
        seen.append((value, total))
        # Extraction's bar counts chunks, tracking's the other frames (encoding's all frames); interrupt after the
        # stage's first update.
        in_stage = total < FRAMES - 1 if stage == "extraction" else total == FRAMES - 1
        if in_stage and value >= 1 and not comfy.model_management.processing_interrupted():
            seen.append("interrupted")
            comfy.model_management.interrupt_current_processing(True)
    comfy.utils.set_progress_bar_global_hook(hook)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            track(model, vae, images)
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
        comfy.model_management.interrupt_current_processing(False)
    assert "interrupted" in seen
    after = seen[seen.index("interrupted") + 1:]
    assert len(after) <= 1  # at most the update already under way: the loop stops at its next step
    assert repr(model.model_options) == options_before  # no hook, no patch left behind
