"""The fused kernels against the torch ops they replace, run in Triton's interpreter on the CPU.

Triton reads TRITON_INTERPRET when a kernel is defined, so the comparison runs in a child process that sets it.
(bfloat16 is not compared here: the interpreter mis-reads it; bench/track.py compares the two paths' tracks on a
GPU, where the features are bfloat16.)
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from difftrack_pack.ditcorr.cost import head_mean_probabilities
from difftrack_pack.ditcorr.fused import available

COMPARE = """
import json, torch
from difftrack_pack.ditcorr.cost import head_mean_probabilities
from difftrack_pack.ditcorr.fused import head_mean_softmax
generator = torch.Generator().manual_seed(0)
errors = []
# (groups, heads, rows, keys, head size, scale, dtype, keys stored transposed, tile): rows and keys not multiples
# of the tile, one head, a head count that is not a power of two, strided keys.
for g, h, n, m, d, scale, dtype, transposed, tile in [
        (2, 3, 70, 90, 32, 0.3, torch.float32, False, 32), (1, 1, 16, 16, 16, 1.0, torch.float32, False, 16),
        (3, 12, 50, 65, 64, 0.125, torch.float32, True, 32), (2, 5, 33, 47, 16, 2.0, torch.float16, True, 16)]:
    query = (torch.randn(g, h, n, d, generator=generator) * 2).to(dtype)
    keys = (torch.randn(g, h, m, d, generator=generator) * 2).to(dtype)
    if transposed:  # [G, H, d, M] in memory, read as [G, H, M, d]
        keys = keys.transpose(2, 3).contiguous().transpose(2, 3)
    fused = head_mean_softmax(query, keys, scale, tile, tile)
    reference = head_mean_probabilities(query.float(), keys.float(), scale, fused_kernel=False)
    errors.append([(fused - reference).abs().max().item(), reference.abs().max().item(),
                   (fused.sum(-1) - 1).abs().max().item()])
print(json.dumps(errors))
"""


ALIGN = """
import json, torch
from difftrack_pack.ditcorr import refine
from difftrack_pack.ditcorr.synthetic import smooth_texture
generator = torch.Generator().manual_seed(0)
texture = smooth_texture(generator, 160, 10, channels=1)[0]
# A template frame and four targets: the texture moved by whole pixels (the sub-pixel part is the alignment's).
frames = torch.stack([texture[dy:dy + 96, dx:dx + 112] for dy, dx in ((8, 8), (9, 6), (5, 11), (12, 9), (8, 8))])
pyramid = refine.grey_pyramid(frames, 3)
points = 16 + torch.rand(1, 30, 2, generator=generator) * torch.tensor([80.0, 64.0])
start = points + (torch.rand(4, 30, 2, generator=generator) - 0.5) * 10
results = {}
for fused in (False, True):
    refine.available = lambda device, fused=fused: fused  # the kernel on CPU tensors: Triton's interpreter runs it
    for shared in (True, False):  # one template frame for all targets, or one per target
        template_frames = torch.tensor([0]) if shared else torch.tensor([0, 1, 2, 3])
        template_at = points if shared else points.expand(4, -1, -1)
        found = refine.align(pyramid, template_frames, template_at, pyramid, torch.tensor([1, 2, 3, 4]), start)
        results[(fused, shared)] = found
print(json.dumps([[(results[(True, s)].position - results[(False, s)].position).abs().max().item(),
                   # Squared: the residual is a square root, steep where the patches match almost exactly.
                   (results[(True, s)].residual ** 2 - results[(False, s)].residual ** 2).abs().max().item(),
                   (results[(False, s)].residual < 0.25).float().mean().item()] for s in (True, False)]))
"""

TEMPLATE = """
import json, torch
from difftrack_pack.ditcorr import fused, refine
generator = torch.Generator().manual_seed(1)
images = torch.rand(3, 1, 40, 56, generator=generator)
# Points inside, on the edge and beyond it (border padding), at fractional pixels; two radii and similarities.
at = torch.rand(3, 20, 2, generator=generator) * torch.tensor([70.0, 54.0]) - torch.tensor([7.0, 7.0])
errors = []
for radius, similarity in ((5, 0.1), (2, 0.3)):
    weights, terms = fused.template_level(images, at, radius, similarity)
    expected_weights, expected_terms = refine.template_terms(images, at, radius, similarity)
    errors.append([(weights - expected_weights).abs().max().item(), (terms - expected_terms).abs().max().item(),
                   expected_terms.abs().max().item()])
print(json.dumps(errors))
"""

PEAKS = """
import json, torch
from difftrack_pack.ditcorr import track
generator = torch.Generator().manual_seed(2)
errors = []
# Grids that are not powers of two, peaks anywhere (the border's corners included), windows 2 and 1.
for n, h, w, window in ((37, 15, 26, 2), (9, 4, 3, 1), (5, 30, 52, 2)):
    cost = torch.rand(n, h, w, generator=generator) ** 4
    cost[0, 0, 0] = cost[1, h - 1, w - 1] = cost[2, 0, w - 1] = 2.0
    results = []
    for fused in (False, True):
        track.available = lambda device, fused=fused: fused  # the kernel on CPU tensors: Triton's interpreter runs it
        results.append(track.read_out(cost, "refined", window))
    (position, peak), (fused_position, fused_peak) = results
    errors.append([(position - fused_position).abs().max().item(), (peak - fused_peak).abs().max().item()])
print(json.dumps(errors))
"""


def interpreted(script: str) -> list:
    """Run `script` with Triton's interpreter on; its last line of output, read as JSON."""
    pytest.importorskip("triton", reason="Triton ships with the CUDA builds of torch that CI installs")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "TRITON_INTERPRET": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_attention_kernels_equal_the_torch_ops_on_random_inputs():
    errors = interpreted(COMPARE)
    assert len(errors) == 4
    for difference, largest, row_sum_error in errors:
        assert difference <= 1e-5 * max(1.0, largest) and row_sum_error <= 1e-5  # float32 rounding: a few ulp of 1


def test_off_cuda_the_torch_ops_run():
    query, keys = torch.randn(2, 3, 5, 16), torch.randn(2, 3, 7, 16)
    assert not available(query.device, 16)
    expected = torch.softmax(query @ keys.transpose(2, 3) * 0.5, dim=-1).mean(1)
    torch.testing.assert_close(head_mean_probabilities(query, keys, 0.5), expected)
    assert not available(torch.device("cuda"), 24)  # not a power of two: the torch ops, whatever the device


def test_refined_peak_kernel_equals_the_torch_ops():
    for position_error, peak_error in interpreted(PEAKS):
        assert position_error <= 1e-5 and peak_error == 0


def test_template_kernel_equals_the_torch_ops():
    """The template's weights and sums from the kernel against refine.template_terms, points beyond the edges too."""
    for weight_error, term_error, largest in interpreted(TEMPLATE):
        assert weight_error <= 1e-5 and term_error <= 1e-5 * max(1.0, largest)  # float32 rounding


def test_lucas_kanade_kernel_equals_the_torch_ops():
    """align with each pyramid level's template and updates in the kernels against the torch ops, for a template shared by every
    target and for one template per target."""
    for position_error, residual_error, aligned in interpreted(ALIGN):
        assert position_error <= 1e-3 and residual_error <= 1e-4  # float32 rounding of the same steps
        assert aligned > 0.5  # most patches found their place: the comparison is not between two failures
