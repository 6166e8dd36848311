"""The fused head-mean softmax kernel against the torch ops it replaces, run in Triton's interpreter on the CPU.

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


def test_kernel_equals_the_torch_ops_on_random_inputs():
    pytest.importorskip("triton", reason="Triton ships with the CUDA builds of torch that CI installs")
    result = subprocess.run([sys.executable, "-c", COMPARE], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "TRITON_INTERPRET": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    errors = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(errors) == 4
    for difference, largest, row_sum_error in errors:
        assert difference <= 1e-5 * max(1.0, largest) and row_sum_error <= 1e-5  # float32 rounding: a few ulp of 1


def test_off_cuda_the_torch_ops_run():
    query, keys = torch.randn(2, 3, 5, 16), torch.randn(2, 3, 7, 16)
    assert not available(query.device, 16)
    expected = torch.softmax(query @ keys.transpose(2, 3) * 0.5, dim=-1).mean(1)
    torch.testing.assert_close(head_mean_probabilities(query, keys, 0.5), expected)
    assert not available(torch.device("cuda"), 24)  # not a power of two: the torch ops, whatever the device
