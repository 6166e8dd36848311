"""Correspondence Analysis and the `best` block choice on real (tiny) Wan models."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import comfy.sd
import comfy.utils
import folder_paths
import pytest
import torch

from difftrack_devkit.calls import CallCounter
from difftrack_devkit.models import random_model, random_wan_vae
from difftrack_devkit.nodes import run_node
from difftrack_devkit.testbed import TRAINED, TRAINED_DIT, TRAINED_VAE
from difftrack_pack.ditcorr.synthetic import make_clip
from difftrack_pack.nodes.analysis import sweep
from difftrack_pack.nodes.analysis_nodes import CorrespondenceAnalysis
from difftrack_pack.nodes.cag_nodes import CAGModelPatch
from difftrack_pack.nodes.capture_nodes import AttentionCapture, AttentionMap, ExtractVideoFeatures
from difftrack_pack.nodes.encoding import encode_frames
from difftrack_pack.nodes.track_nodes import TrackPoints

FRAMES, SIZE = 9, 64


@pytest.fixture(scope="module")
def video():
    return random_model("wan"), random_wan_vae(), torch.rand(FRAMES, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(0))


def reference_tracks(points=12, seed=0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    start = torch.rand(points, 2, generator=generator) * (SIZE - 1)
    path = (start[None] + torch.randn(FRAMES, points, 2, generator=generator).cumsum(0)).clamp(0, SIZE - 1)
    return {"track_path": path, "track_visibility": torch.ones(FRAMES, points, dtype=torch.bool)}


def test_the_node_analyses_every_cell_with_one_early_stopped_forward_per_sigma(video):
    model, vae, images = video
    calls = CallCounter(dict(enumerate(model.get_model_object("diffusion_model").blocks)))
    try:
        image, blocks, sigma, table = run_node(CorrespondenceAnalysis, images=images, model=model, vae=vae,
                                               sigmas="0.5, 0.1", blocks="0-2", grid_size=4).args
    finally:
        calls.remove()
    assert list(calls.counts.values()) == [2, 2, 2, 0]  # one forward per σ (9 frames: one chunk), stopped after block 2 of 4
    table = json.loads(table)
    cells = table["cells"]
    assert [(c["block"], c["sigma"]) for c in cells] == [(b, s) for s in (0.1, 0.5) for b in (0, 1, 2)]
    assert table["ranked_by"] == "label_free" and all(c["delta_avg"] is None and c["harmonic"] is None for c in cells)
    best = max(cells, key=lambda c: c["label_free"])
    assert (blocks, sigma) == (str(best["block"]), best["sigma"]) == (str(table["best"]["block"]), table["best"]["sigma"])
    assert image.shape[0] == 1 and image.shape[3] == 3 and image.shape[1] > 300
    saved = list(Path(folder_paths.get_output_directory()).glob("difftrack/analysis_*_.csv"))
    assert len(saved) == 1
    rows = list(csv.DictReader(saved[0].open()))
    assert len(rows) == 6 and {"block", "sigma", "confidence", "label_free", "delta_8"} <= set(rows[0])
    # the chosen block and σ are exactly what Track Points reads
    run_node(TrackPoints, model=model, vae=vae, images=images, points="[[20, 30]]", blocks=blocks, sigma=sigma,
             frames_per_chunk=5)


def test_with_reference_tracks_it_ranks_by_difftracks_harmonic_mean(video):
    model, vae, images = video
    _, blocks, _, table = run_node(CorrespondenceAnalysis, images=images, model=model, vae=vae, sigmas="0.2",
                                   blocks="1, 3", reference_tracks=reference_tracks()).args
    table = json.loads(table)
    assert table["ranked_by"] == "harmonic"
    assert all(0 <= c["delta_avg"] <= 1 and c["harmonic"] is not None for c in table["cells"])
    assert blocks == str(max(table["cells"], key=lambda c: c["harmonic"])["block"])


def test_features_captured_elsewhere_are_analysed_at_their_own_sigma(video):
    """Features from Extract Features (three blocks, σ 0.3) instead of a model: a cell per captured block at the
    captures' σ, the same values as the node's own extraction gives; the σ input is not used then."""
    model, vae, images = video
    features = run_node(ExtractVideoFeatures, model=model, vae=vae, images=images, blocks="0-2", sigma=0.3,
                        frames_per_chunk=0, seed=4).args[0]
    _, blocks, sigma, table = run_node(CorrespondenceAnalysis, images=images, features=features, sigmas="0.9",
                                       grid_size=4).args
    cells = json.loads(table)["cells"]
    assert [(c["block"], c["sigma"]) for c in cells] == [(0, 0.3), (1, 0.3), (2, 0.3)] and sigma == 0.3
    extracted = json.loads(run_node(CorrespondenceAnalysis, images=images, model=model, vae=vae, sigmas="0.3",
                                    blocks="0-2", grid_size=4, seed=4).args[3])["cells"]
    for name in ("confidence", "attention_score", "cycle_rate", "sharpness", "appearance", "label_free"):
        assert [c[name] for c in cells] == pytest.approx([c[name] for c in extracted], rel=1e-5, abs=1e-7), name
    with pytest.raises(ValueError, match="the features were extracted from 9"):
        run_node(CorrespondenceAnalysis, images=images[:5], features=features)


def test_capturing_every_block_in_one_forward_equals_a_forward_per_block(video):
    """The fast path (all candidates in one forward) against the obvious one (an extraction per block)."""
    model, vae, images = video
    latent, positions = encode_frames(vae, images, "per_frame")
    reference = (reference_tracks()["track_path"], reference_tracks()["track_visibility"])
    queries = torch.cat([reference[0][0], torch.zeros(len(reference[0][0]), 1)], dim=1)
    together = sweep(model, latent, positions, images, None, [0, 2], [0.3], 5, queries, reference).cells
    alone = [sweep(model, latent, positions, images, None, [block], [0.3], 5, queries, reference).cells[0]
             for block in (0, 2)]
    for joint, single in zip(together, alone):
        for name in ("block", "sigma", "confidence", "attention_score", "cycle_rate", "sharpness", "appearance",
                     "delta_avg", "accuracy"):
            assert getattr(joint, name) == pytest.approx(getattr(single, name), rel=1e-5, abs=1e-7), name


@pytest.fixture(scope="module")
def trained():
    model = comfy.sd.load_diffusion_model(str(TRAINED / TRAINED_DIT))
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(TRAINED / TRAINED_VAE)))
    return model, vae, make_clip(424_242, (256, 256), 13, points=16)  # a seed no training or benchmark draws


def test_best_picks_the_block_that_tracks_in_the_trained_tiny_model(trained):
    """A known answer: in the shipped tiny DiT only block 7 of 8 tracks (bench/quality.py: δavg 45, every other
    block at most 20); 'best' must find it with no reference tracks."""
    model, vae, clip = trained
    points = json.dumps(clip.tracks[:4, 0].tolist())
    out = run_node(TrackPoints, model=model, vae=vae, images=clip.frames, points=points, blocks="best", sigma=0.2)
    assert out.args[0]["difftrack_blocks"] == [7] and "chose block 7 of 8" in out.ui["text"][0]
    features_out = run_node(ExtractVideoFeatures, model=model, vae=vae, images=clip.frames, blocks="best", sigma=0.2)
    assert features_out.args[0].blocks() == [7] and "chose block 7" in features_out.ui.value
    from_features = run_node(TrackPoints, features=run_node(ExtractVideoFeatures, model=model, vae=vae,
                                                             images=clip.frames, blocks="5-7", sigma=0.2).args[0],
                             images=clip.frames, points=points, blocks="best")
    assert from_features.args[0]["difftrack_blocks"] == [7]
    x, y = (int(v) for v in clip.tracks[0, 0])
    maps = run_node(AttentionMap, features=run_node(ExtractVideoFeatures, model=model, vae=vae, images=clip.frames,
                                                    blocks="5-7", sigma=0.2).args[0], x=x, y=y, block=-2,
                    images=clip.frames)
    assert "chose block 7" in maps.ui.value and maps.args[0].shape == clip.frames.shape


@pytest.mark.parametrize("inputs, message", [
    (dict(sigmas="0"), r"σ 0 is outside \(0, 1\]"),
    (dict(sigmas="0.1, 1.5"), r"σ 1.5 is outside \(0, 1\]"),
    (dict(sigmas="x"), r"Cannot read σ 'x'"),
    (dict(blocks=""), r"No blocks to analyse"),
    (dict(blocks="9"), r"Block 9 is out of range: this Wan 2.1/2.2 model has 4 blocks"),
    (dict(points='[{"x": 3, "y": 4, "t": 2}]'), r"queries points on frame 0"),
])
def test_bad_settings_say_what_to_change(video, inputs, message):
    model, vae, images = video
    with pytest.raises(ValueError, match=message):
        run_node(CorrespondenceAnalysis, images=images, model=model, vae=vae, **inputs)


def test_bad_reference_tracks_say_what_to_change(video):
    model, vae, images = video
    tracks = reference_tracks()
    short = {key: value[:5] for key, value in tracks.items()}
    with pytest.raises(ValueError, match=r"reference tracks have 5 frames but the video has 9"):
        run_node(CorrespondenceAnalysis, images=images, model=model, vae=vae, reference_tracks=short)
    large = {**tracks, "track_path": tracks["track_path"] * 4}
    with pytest.raises(ValueError, match=r"lies outside the 64x64 frames: the tracks were made on frames of another size"):
        run_node(CorrespondenceAnalysis, images=images, model=model, vae=vae, reference_tracks=large)


def test_models_without_capturable_blocks_and_nodes_without_a_video_are_refused(video):
    _, vae, images = video
    with pytest.raises(ValueError, match=r"MiniTrainDIT is not a supported video DiT"):
        run_node(CorrespondenceAnalysis, images=images, model=random_model("cosmos_predict2"), vae=vae)
    with pytest.raises(ValueError, match=r"features \(captured at the candidate blocks\) or model and vae"):
        run_node(CorrespondenceAnalysis, images=images)
    for node in (CAGModelPatch, AttentionCapture):
        with pytest.raises(ValueError, match=r"'best' chooses a block by scoring it on a video; this node has none"):
            run_node(node, model=video[0], blocks="best")
