import pytest
import torch

from difftrack_pack.ditcorr import QK, CaptureKey, DitFeatures, latent_frame_positions


def make(blocks=(3, 5), chunks=2):
    qk = lambda: QK(torch.randn(2, 4, 3, 5, 8), torch.randn(2, 4, 3, 5, 8), 0.1)
    features = DitFeatures((48, 80), 10, [(0.0, 1.0, 2.0, 3.0), (0.0, 4.0, 5.0, 6.0)][:chunks], "test")
    for block in blocks:
        for chunk in range(chunks):
            features.captures[CaptureKey(block, 0, "cond", 0, chunk)] = qk()
    return features


def test_select_orders_chunks_and_defaults_to_first_block():
    features = make()
    chunks = features.select()
    assert [frames for frames, _ in chunks] == features.chunk_frames
    assert chunks[0][1] is features.captures[CaptureKey(3, 0, "cond", 0, 0)]
    assert features.token_grid == (3, 5)
    assert features.nbytes == 4 * 2 * (2 * 4 * 3 * 5 * 8 * 4)


def test_select_names_what_exists():
    with pytest.raises(ValueError, match=r"Captured \(block, step, branch, sample\): \[\(3, 0, 'cond', 0\)"):
        make().select(block=4)


def test_release_drops_tensors():
    features = make()
    features.release()
    assert features.nbytes == 0
    with pytest.raises(ValueError, match="no captures"):
        features.select()


def test_latent_frame_positions_of_a_causal_vae():
    # Wan/Hunyuan: 81 frames -> 21 latents; latent 1 covers frames 1-4 (centre 2.5), the last covers 77-80.
    positions = latent_frame_positions(21, 4)
    assert positions[:3] == (0.0, 2.5, 6.5)
    assert positions[-1] == 78.5
