"""Frame-local attention against masked SDPA; the published variant against full-softmax-then-zero."""
import math

import pytest
import torch
import torch.nn.functional as F

from difftrack_pack.ditcorr.guidance import cag_combine, frame_local_attention

# layout of a joint-attention sequence: [prefix (e.g. a reference latent), video T x S, text]
PREFIX, FRAMES, FRAME_TOKENS, TEXT = 3, 4, 6, 5
VIDEO = slice(PREFIX, PREFIX + FRAMES * FRAME_TOKENS)
TEXT_SLICE = slice(VIDEO.stop, VIDEO.stop + TEXT)
LENGTH = VIDEO.stop + TEXT


def allowed(text: bool) -> torch.Tensor:
    """[L, L] bool: video queries see their own frame (+ text); other queries see everything."""
    allow = torch.ones(LENGTH, LENGTH, dtype=torch.bool)
    for f in range(FRAMES):
        rows = slice(PREFIX + f * FRAME_TOKENS, PREFIX + (f + 1) * FRAME_TOKENS)
        allow[rows] = False
        allow[rows, rows] = True
        if text:
            allow[rows, TEXT_SLICE] = True
    return allow


def inputs(seed, batch=2, heads=3, dim=8):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, LENGTH, dim, generator=generator) for _ in range(3)]


def padding_mask(batch=2):
    mask = torch.zeros(batch, 1, LENGTH)
    mask[:, :, -2:] = -1e4  # the last two text tokens are padding
    return mask


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("text", [True, False])
@pytest.mark.parametrize("with_mask", [False, True])
def test_renormalised_equals_masked_sdpa(seed, text, with_mask):
    q, k, v = inputs(seed)
    mask = padding_mask() if with_mask else None
    reference_mask = torch.where(allowed(text), 0.0, float("-inf"))[None, None]
    if mask is not None:
        reference_mask = reference_mask + mask[:, :, None, :]
    reference = F.scaled_dot_product_attention(q, k, v, attn_mask=reference_mask)
    got = frame_local_attention(q, k, v, VIDEO, FRAME_TOKENS, TEXT_SLICE if text else slice(0, 0), mask)
    torch.testing.assert_close(got, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("with_mask", [False, True])
def test_published_equals_full_softmax_then_zero(seed, with_mask):
    q, k, v = inputs(seed)
    mask = padding_mask() if with_mask else None
    logits = q @ k.transpose(2, 3) / math.sqrt(q.shape[-1])
    if mask is not None:
        logits = logits + mask[:, :, None, :]
    probabilities = torch.softmax(logits, dim=-1) * allowed(True)  # cross-frame probabilities zeroed, no renormalising
    reference = probabilities @ v
    full = torch.softmax(logits, dim=-1) @ v  # non-video queries keep full attention
    reference[:, :, :PREFIX], reference[:, :, TEXT_SLICE] = full[:, :, :PREFIX], full[:, :, TEXT_SLICE]
    got = frame_local_attention(q, k, v, VIDEO, FRAME_TOKENS, TEXT_SLICE, mask, variant="published")
    torch.testing.assert_close(got, reference, rtol=1e-5, atol=1e-5)


def test_bad_variant_and_mask():
    q, k, v = inputs(0)
    with pytest.raises(ValueError, match="Unknown CAG variant 'soft'"):
        frame_local_attention(q, k, v, VIDEO, FRAME_TOKENS, variant="soft")
    with pytest.raises(ValueError, match="key-padding masks only"):
        frame_local_attention(q, k, v, VIDEO, FRAME_TOKENS, mask=torch.zeros(2, 1, LENGTH, LENGTH))


def test_guidance_algebra():
    cond, uncond, perturbed = torch.tensor([3.0]), torch.tensor([1.0]), torch.tensor([2.5])
    assert cag_combine(cond, uncond, perturbed, cfg=6.0, scale=1.0).item() == 1 + 6 * 2 + 0.5
    assert cag_combine(cond, None, perturbed, cfg=1.0, scale=2.0).item() == 3 + 2 * 0.5
    assert torch.equal(cag_combine(cond, uncond, perturbed, 6.0, 0.0), uncond + 6.0 * (cond - uncond))


def test_sliced_logsumexp_equals_the_whole():
    from difftrack_pack.ditcorr.guidance import logsumexp_over
    generator = torch.Generator().manual_seed(5)
    q, k = torch.randn(2, 3, 50, 8, generator=generator), torch.randn(2, 3, 70, 8, generator=generator)
    mask = torch.zeros(2, 1, 1, 70)
    mask[..., -5:] = -1e4
    whole = torch.logsumexp(q @ k.transpose(2, 3) / math.sqrt(8) + mask, -1)
    sliced = logsumexp_over(q, k, mask, budget_bytes=4 * 2 * 3 * 16 * 7, key_slice=16)  # 7 queries x 16 keys a block
    torch.testing.assert_close(sliced, whole, rtol=1e-5, atol=1e-5)
