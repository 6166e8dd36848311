"""The query-rows-only, sliced cost against a brute-force full cost volume."""
import math

import pytest
import torch

from difftrack_pack.ditcorr import QK, point_cost, point_cost_over_video, sample_tokens
from difftrack_pack.ditcorr.cost import backward_rows, forward_rows, pair_costs, softmax_
from difftrack_devkit.brute_force import full_cost_volume


def token_centres(h, w, rows, cols):
    return torch.tensor([[2 * (c + 0.5) / w - 1, 2 * (r + 0.5) / h - 1] for r, c in zip(rows, cols)])


@pytest.mark.parametrize("shape", [(2, 3, 7, 30), (1, 12, 5, 1560), (3, 4, 2, 4096)])
def test_softmax_over_its_logits_equals_torch_softmax(shape):
    logits = torch.randn(*shape, generator=torch.Generator().manual_seed(len(shape))) * 4
    expected = torch.softmax(logits, dim=-1)
    result = softmax_(logits)
    assert result.data_ptr() == logits.data_ptr()  # no second tensor
    assert torch.equal(result, expected)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("budget_bytes", [2**28, 4 * 3 * 30 * 7])
def test_query_rows_equal_full_volume(seed, budget_bytes):
    generator = torch.Generator().manual_seed(seed)
    heads, frames, h, w, d = 3, 4, 5, 6, 16
    qk = QK(torch.randn(heads, frames, h, w, d, generator=generator), torch.randn(heads, frames, h, w, d, generator=generator), 0.1)
    rows, cols = torch.randint(0, h, (9,), generator=generator), torch.randint(0, w, (9,), generator=generator)
    source, target = 1, 3
    tau = [None, 2.5][seed % 2]
    points = token_centres(h, w, rows, cols)
    got = 0.5 * (forward_rows(qk, [source], qk, [target], points[None], tau)
                 + backward_rows(qk, [source], qk, [target], points[None], tau, budget_bytes))[0]  # 7-token slices
    full = full_cost_volume(qk, source, target, math.sqrt(d) if tau is None else tau)
    expected = full[rows * w + cols].reshape(-1, h, w)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-7)


def test_sample_tokens_is_bilinear_between_centres():
    grid = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 2, 3, 4)  # [C=1, h=2, w=3, d=4]
    halfway = torch.tensor([[2 * 1.0 / 3 - 1, 0.0]])  # between columns 0 and 1, between rows 0 and 1
    expected = grid[0, :, :2].mean(dim=(0, 1))
    torch.testing.assert_close(sample_tokens(grid, halfway)[0, 0], expected)


def test_video_cost_averages_over_chunks_holding_both_frames():
    generator = torch.Generator().manual_seed(0)
    make = lambda: QK(torch.randn(2, 3, 4, 4, 8, generator=generator), torch.randn(2, 3, 4, 4, 8, generator=generator), 0.1)
    first, second = make(), make()
    chunks = [((0.0, 1.0, 2.0), first), ((0.0, 2.0, 3.0), second)]
    point = token_centres(4, 4, [1], [2])
    positions, maps = point_cost_over_video(chunks, 0.0, point)
    assert positions == [0.0, 1.0, 2.0, 3.0]
    torch.testing.assert_close(maps[1], point_cost(first, 0, first, 1, point))
    torch.testing.assert_close(maps[2], 0.5 * (point_cost(first, 0, first, 2, point) + point_cost(second, 0, second, 1, point)))
    torch.testing.assert_close(maps[3], point_cost(second, 0, second, 2, point))
    # a query on frame 1 shares only the first chunk; frame 3 never meets it
    _, from_one = point_cost_over_video(chunks, 1.0, point)
    assert torch.count_nonzero(from_one[3]) == 0
    torch.testing.assert_close(from_one[0], point_cost(first, 1, first, 0, point))


def test_batched_pairs_equal_one_pair_at_a_time():
    generator = torch.Generator().manual_seed(3)
    qk = QK(torch.randn(2, 5, 4, 6, 8, generator=generator), torch.randn(2, 5, 4, 6, 8, generator=generator), 0.1)
    sources, targets = [0, 0, 3, 1], [1, 4, 2, 3]
    points = torch.rand(4, 7, 2, generator=generator) * 2 - 1  # each pair its own points
    batched = pair_costs(qk, sources, qk, targets, points, 1.7)
    looped = torch.stack([point_cost(qk, s, qk, t, p, 1.7) for s, t, p in zip(sources, targets, points)])
    torch.testing.assert_close(batched, looped, rtol=1e-5, atol=1e-7)
    rows = forward_rows(qk, sources, qk, targets, points)
    torch.testing.assert_close(rows[2], forward_rows(qk, [3], qk, [2], points[2:3])[0], rtol=1e-5, atol=1e-7)


def test_frames_are_views_where_they_can_be_and_equal_indexing_everywhere():
    from difftrack_pack.ditcorr.cost import _frames

    part = torch.randn(3, 7, 4, 5, 8)
    for frames in ([2, 2, 2], [1, 2, 3, 4], [0], [5, 1, 5]):
        expected = part[:, frames].reshape(3, len(frames), 20, 8).transpose(0, 1)
        got = _frames(part, frames)
        assert torch.equal(got, expected)
        assert (got.untyped_storage().data_ptr() == part.untyped_storage().data_ptr()) == (frames != [5, 1, 5])
