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


def test_two_experts_steps_are_numbered_in_the_order_they_ran():
    from difftrack_pack.ditcorr.features import steps_in_sampling_order

    def captured(steps_and_sigmas, block=1):
        return {CaptureKey(block, step, "cond", 0, 0): QK(torch.full((1,), float(step)), torch.zeros(1), sigma)
                for step, sigma in steps_and_sigmas}

    high = captured([(0, 1.0), (1, 0.8)])  # the high-noise expert's own steps 0, 1
    low = {**captured([(0, 0.5), (1, 0.2)]), **captured([(0, 0.5)], block=2)}  # the low-noise one's, from 0 again
    merged = steps_in_sampling_order([high, low])
    assert sorted((key.block, key.step, qk.sigma) for key, qk in merged.items()) == [
        (1, 0, 1.0), (1, 1, 0.8), (1, 2, 0.5), (1, 3, 0.2), (2, 2, 0.5)]
    assert merged[CaptureKey(1, 3, "cond", 0, 0)] is low[CaptureKey(1, 1, "cond", 0, 0)]  # the same tensors, renamed
    tied = steps_in_sampling_order([captured([(0, 0.5)]), captured([(0, 0.5)])])
    assert sorted(key.step for key in tied) == [0, 1]  # equal σ: in the order the captures are given
