"""Attention Motion Flow against full attention maps, the memory-light path against the naive one (values and
gradients), a synthetic translation, the loss's options and the flow colours."""
from __future__ import annotations

import math

import pytest
import torch

from difftrack_pack.ditcorr.amf import (FlowLoss, all_pairs, colour_wheel, flow_colours, flow_loss, hard_amf,
                                        soft_amf, token_positions)


def brute_force(q, k, temperature, pairs):
    """From the whole video's attention logits per head ([H, T*M, T*M]), averaged over heads: per pair the
    softmax over the target frame's block of columns, its expectation and its argmax, token by token."""
    heads, frames, height, width, dim = q.shape
    tokens = height * width
    logits = torch.einsum("htd,hsd->hts", q.reshape(heads, -1, dim).double(), k.reshape(heads, -1, dim).double())
    mean = logits.mean(0) / math.sqrt(dim)
    positions = token_positions(height, width).double()
    soft, hard = [], []
    for i, j in pairs:
        block = mean[i * tokens:(i + 1) * tokens, j * tokens:(j + 1) * tokens] * temperature
        rows_soft, rows_hard = [], []
        for p in range(tokens):
            weights = torch.softmax(block[p], dim=0)
            rows_soft.append(weights @ positions - positions[p])
            rows_hard.append(positions[weights.argmax()] - positions[p])
        soft.append(torch.stack(rows_soft))
        hard.append(torch.stack(rows_hard))
    return torch.stack(soft), torch.stack(hard)


@pytest.mark.parametrize("temperature, window", [(2.0, None), (5.0, 1)])
def test_amf_equals_the_brute_force_from_full_attention_maps(temperature, window):
    generator = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 3, 4, 3, 5, 8, generator=generator).unbind(0)
    pairs = all_pairs(4, window)
    soft_ref, hard_ref = brute_force(q, k, temperature, pairs)
    torch.testing.assert_close(soft_amf(q, k, temperature, pairs, pair_batch=5).double(), soft_ref, rtol=1e-5, atol=1e-5)
    displacement, confidence = hard_amf(q, k, temperature, pairs, pair_batch=5)
    torch.testing.assert_close(displacement.double(), hard_ref)
    assert ((confidence > 0) & (confidence <= 1)).all()


def test_the_memory_light_soft_amf_equals_the_naive_one_and_its_gradients():
    generator = torch.Generator().manual_seed(1)
    q0, k0 = torch.randn(2, 2, 5, 4, 4, 16, generator=generator).unbind(0)
    target = torch.randn(20, 16, 2, generator=generator)
    results = []
    for recompute, batch in ((False, 1000), (True, 3)):
        q, k = q0.clone().requires_grad_(), k0.clone().requires_grad_()
        flow = soft_amf(q, k, 2.0, pair_batch=batch, recompute=recompute)
        ((flow - target) ** 2).sum().backward()
        results.append((flow.detach(), q.grad, k.grad))
    for naive, light in zip(*results):
        torch.testing.assert_close(light, naive)
    assert results[0][1].abs().sum() > 0 and torch.isfinite(results[0][1]).all()


def test_hard_amf_of_a_translation_is_the_translation():
    """Each frame shows the same random content shifted by (2, 1) tokens a frame: every source token's match in
    another frame is displaced by the frame difference times (2, 1) (tokens whose content stays in view)."""
    generator = torch.Generator().manual_seed(2)
    height, width, frames, shift = 8, 12, 3, torch.tensor([2, 1])
    content = torch.randn(height + 2 * frames, width + 4 * frames, 32, generator=generator)
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    video = torch.stack([content[ys - t * shift[1] + 2 * frames, xs - t * shift[0] + 4 * frames] for t in range(frames)])
    q = k = video[None] * 3  # one head; sharp
    pairs = all_pairs(frames)
    displacement, _ = hard_amf(q, k, 2.0, pairs)
    positions = token_positions(height, width)
    for index, (i, j) in enumerate(pairs):
        expected = (j - i) * shift.float()
        lands = positions + expected
        inside = (lands[:, 0] >= 0) & (lands[:, 0] < width) & (lands[:, 1] >= 0) & (lands[:, 1] < height)
        assert inside.sum() > 20
        torch.testing.assert_close(displacement[index][inside], expected.expand(int(inside.sum()), 2))


def test_flow_loss_counts_what_its_options_say():
    reference = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [3.0, 4.0]]])  # still, moving, long
    confidence = torch.tensor([[0.9, 0.9, 0.2]])
    current = torch.zeros(1, 3, 2)
    assert flow_loss(current, reference, confidence).item() == pytest.approx((1 + 25) / 2)
    assert flow_loss(current, reference, confidence, FlowLoss(moving_only=False)).item() == pytest.approx(26 / 3)
    assert flow_loss(current, reference, confidence, FlowLoss(min_confidence=0.5)).item() == pytest.approx(1.0)
    assert flow_loss(current, reference, confidence, FlowLoss(max_displacement=2.0)).item() == pytest.approx(1.0)
    huber = flow_loss(current, reference, confidence, FlowLoss(huber=1.0)).item()
    assert huber == pytest.approx((0.5 + (2.5 + 3.5)) / 2)  # per coordinate: 0.5 x^2 inside δ, δ(|x| - δ/2) beyond
    assert flow_loss(current, reference * 0, confidence).item() == 0.0


def test_flow_colours_show_direction_as_hue_and_length_as_saturation():
    flow = torch.tensor([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.5, 0.0]])
    colours = flow_colours(flow)
    assert torch.allclose(colours[0], torch.ones(3))  # still: white
    assert colours[1, 0] > 0.9 and colours[1, 1:].max() < 0.3  # right: red
    assert colours[2, 0] < 0.3 and colours[2, 1:].min() > 0.9  # left: cyan
    assert torch.allclose(colours[3], (colours[1] + 1) / 2)  # half the length: half the saturation
    wheel = colour_wheel(33)
    assert wheel.shape == (33, 33, 3) and torch.allclose(wheel[0, 0], torch.ones(3))
    assert torch.allclose(wheel[16, 32], colours[1], atol=0.02)
