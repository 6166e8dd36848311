"""Motion Flow from Video on a tiny real Wan and VAE: the flow is hard AMF of the q/k Extract Features reads."""
from __future__ import annotations

import pytest
import torch

from difftrack_devkit.models import random_model, random_wan_vae
from difftrack_devkit.nodes import run_node
from difftrack_pack.ditcorr.amf import all_pairs, hard_amf
from difftrack_pack.nodes.capture_nodes import ExtractVideoFeatures
from difftrack_pack.nodes.motion_nodes import MotionFlowFromVideo

FRAMES, SIZE = 9, 64


@pytest.fixture(scope="module")
def video():
    return random_model("wan"), random_wan_vae(), torch.rand(FRAMES, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(0))


def test_motion_flow_is_the_hard_amf_of_the_extracted_features(video):
    """The node's flow equals hard_amf of the q/k Extract Features captures with the same settings (one clean
    forward of the natively encoded clip); the picture has a frame per latent frame."""
    model, vae, images = video
    flow, picture = run_node(MotionFlowFromVideo, model=model, vae=vae, images=images, blocks="1",
                             temperature=3.0).args
    (features,) = run_node(ExtractVideoFeatures, model=model, vae=vae, images=images, blocks="1", sigma=0.001,
                           encoding="native", frames_per_chunk=0).args
    assert flow.latent_frames == 3 and flow.pairs == all_pairs(3) and flow.temperature == 3.0
    assert list(flow.displacement) == [1] and flow.displacement[1].shape == (6, flow.grid[0] * flow.grid[1], 2)
    assert picture.shape == (3, SIZE, SIZE, 3) and 0 <= picture.min() and picture.max() <= 1
    clean, _ = run_node(MotionFlowFromVideo, model=model, vae=vae, images=images, blocks="1", temperature=3.0,
                        sigma=0.001).args
    qk = features.select(1)[0].qk
    expected, confidence = hard_amf(qk.q, qk.k, 3.0)
    torch.testing.assert_close(clean.displacement[1], expected)
    torch.testing.assert_close(clean.confidence[1], confidence)


def test_a_frame_window_keeps_only_near_pairs(video):
    model, vae, images = video
    flow, _ = run_node(MotionFlowFromVideo, model=model, vae=vae, images=images, frame_window=1,
                       encoding="per_frame").args
    assert flow.pairs == all_pairs(FRAMES, 1) and len(flow.pairs) == 2 * (FRAMES - 1)
    assert flow.from_frame(next(iter(flow.displacement)), 0)[2:].abs().sum() == 0  # frames the pairs leave out


def test_a_picture_frame_outside_the_latent_is_refused(video):
    model, vae, images = video
    with pytest.raises(ValueError, match="outside the reference's 3 latent frames"):
        run_node(MotionFlowFromVideo, model=model, vae=vae, images=images, picture_frame=3)
