"""Features from a real video: chunked clean forwards stopped after the deepest block; attention maps."""
from __future__ import annotations

import pytest
import torch
import comfy.model_management

from difftrack_devkit.calls import CallCounter
from difftrack_devkit.models import random_model, random_wan_vae
from difftrack_devkit.nodes import run_node
from difftrack_devkit.qk_references import Observer

from difftrack_pack.ditcorr import CaptureKey, plan_chunks
from difftrack_pack.nodes.capture_nodes import AttentionMap, ExtractVideoFeatures
from difftrack_pack.nodes.extract import extract_from_latent


def test_extraction_stops_after_the_deepest_block_and_reads_true_qk():
    model = random_model("wan")
    diffusion_model = model.get_model_object("diffusion_model")
    frames = 14
    latent = torch.randn(1, 16, frames, 8, 8, generator=torch.Generator().manual_seed(0))
    positions = tuple(float(i) for i in range(frames))
    calls = CallCounter({**{f"block{i}": b for i, b in enumerate(diffusion_model.blocks)}, "head": diffusion_model.head})
    observer = Observer("wan", diffusion_model, 1)
    features = extract_from_latent(model, latent, positions, (64, 64), frames, None, [0, 1], sigma=0.1, seed=0,
                                   frames_per_chunk=5)
    calls.remove()
    observer.remove()

    chunks = plan_chunks(frames, 5)
    assert features.chunk_frames == [tuple(float(f) for f in chunk) for chunk in chunks]
    assert calls.counts == {"block0": len(chunks), "block1": len(chunks), "block2": 0, "block3": 0, "head": 0}
    assert sorted(features.captures) == [CaptureKey(b, 0, "cond", 0, c) for b in (0, 1) for c in range(len(chunks))]
    for chunk, (q_ref, k_ref) in enumerate(observer.forwards):
        got = features.captures[CaptureKey(1, 0, "cond", 0, chunk)]
        assert got.sigma == pytest.approx(0.1)
        torch.testing.assert_close(got.q, q_ref[0].reshape(got.q.shape), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got.k, k_ref[0].reshape(got.k.shape), rtol=1e-5, atol=1e-5)
    assert "patches_replace" not in model.model_options.get("transformer_options", {})


def extract(model, vae, images, encoding="per_frame", blocks="auto", frames_per_chunk=13, reference_frame=0):
    return run_node(ExtractVideoFeatures, model=model, vae=vae, images=images, blocks=blocks, encoding=encoding,
                    frames_per_chunk=frames_per_chunk, reference_frame=reference_frame, storage="cpu").args[0]


@pytest.fixture(scope="module")
def video():
    generator = torch.Generator().manual_seed(0)
    return random_model("wan"), random_wan_vae(), torch.rand(9, 64, 64, 3, generator=generator)


def test_extract_node_per_frame_and_native(video):
    model, vae, images = video
    per_frame = extract(model, vae, images, frames_per_chunk=4)
    assert per_frame.frame_size == (64, 64) and per_frame.frame_count == 9
    assert per_frame.chunk_frames == [tuple(float(f) for f in chunk) for chunk in plan_chunks(9, 4)]
    assert per_frame.blocks() == [2]  # 'auto': the middle of 4 blocks
    native = extract(model, vae, images, encoding="native")
    assert native.chunk_frames == [(0.0, 2.5, 6.5)]  # 9 frames -> 3 latent frames of a 4x causal VAE
    assert next(iter(native.captures.values())).q.shape == (2, 3, 4, 4, 128)


def test_attention_map_node(video):
    model, vae, images = video
    features = extract(model, vae, images, blocks="1, 2")
    (maps,) = run_node(AttentionMap, features=features, x=20, y=40, block=2).args
    assert maps.shape == (9, 64, 64, 3) and 0 <= maps.min() and maps.max() <= 1
    (over,) = run_node(AttentionMap, features=features, x=20, y=40, query_frame=3, temperature=2.0, opacity=0.5,
                       images=images).args
    assert over.shape == (9, 64, 64, 3) and not torch.equal(over, maps)
    with pytest.raises(ValueError, match=r"Point \(64, 10\) is outside the 64x64 frame"):
        run_node(AttentionMap, features=features, x=64, y=10)
    with pytest.raises(ValueError, match="query_frame 9 is outside the video's 9 frames"):
        run_node(AttentionMap, features=features, x=1, y=1, query_frame=9)
    with pytest.raises(ValueError, match=r"No capture for block 3.*Captured \(block, step, branch, sample\): \[\(1, 0, 'cond', 0\)"):
        run_node(AttentionMap, features=features, x=1, y=1, block=3)


def test_bad_reference_frame_and_interrupt_leave_the_model_clean(video):
    model, vae, images = video
    with pytest.raises(ValueError, match="reference_frame 12 is outside the 9 latent frames"):
        extract(model, vae, images, reference_frame=12)
    comfy.model_management.interrupt_current_processing(True)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            extract(model, vae, images)
    finally:
        comfy.model_management.interrupt_current_processing(False)
    assert "patches_replace" not in model.model_options.get("transformer_options", {}) and not model.wrappers
