"""Correspondence analysis: each quantity against a brute-force computation from full attention maps, the
normalisation and harmonic mean against hand-worked values, the label-free score on oracle and shuffled
descriptors, and the analysis picture."""
import math

import pytest
import torch

from difftrack_devkit.brute_force import full_attention, full_cost_volume
from difftrack_devkit.oracle_scene import Scene
from difftrack_pack.ditcorr import QK, FeatureChunk
from difftrack_pack.ditcorr.analysis import (Analysis, Cell, FrameColours, analysis_frames, attention_statistics, best_cell,
                                             harmonic_mean, normalise, rank_cells, relative, score_cell)
from difftrack_pack.ditcorr.chart import render_analysis
from difftrack_pack.ditcorr.metrics import THRESHOLDS
from difftrack_pack.ditcorr.points import grid_points
from difftrack_pack.ditcorr.track import TrackSettings

TOKEN = 4  # pixels per token in the random cases


def random_qk(generator, heads=2, frames=4, h=3, w=5, d=8) -> QK:
    return QK(torch.randn(heads, frames, h, w, d, generator=generator),
              torch.randn(heads, frames, h, w, d, generator=generator), 0.1)


def token_queries(generator, count, h, w) -> tuple[torch.Tensor, torch.Tensor]:
    """Query points at token centres of frame 0 (pixels) and their token indices."""
    tokens = torch.randperm(h * w, generator=generator)[:count]
    rows, cols = tokens // w, tokens % w
    pixels = torch.stack([(cols + 0.5) * TOKEN, (rows + 0.5) * TOKEN, torch.zeros(count)], dim=1)
    return pixels.float(), tokens


@pytest.mark.parametrize("seed", range(3))
def test_confidence_and_attention_score_equal_full_attention_maps(seed):
    generator = torch.Generator().manual_seed(seed)
    heads, h, w, d = 2, 3, 5, 8
    chunks = [FeatureChunk((0.0, 1.0, 2.0, 3.0), random_qk(generator, heads, 4, h, w, d)),
              FeatureChunk((0.0, 2.0, 4.0, 5.0), random_qk(generator, heads, 4, h, w, d))]
    queries, tokens = token_queries(generator, 6, h, w)
    positions = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    visible = torch.rand(len(positions), 6, generator=generator) > 0.3
    tau = [None, 1.7, 0.6][seed]
    got = attention_statistics(chunks, queries, (h * TOKEN, w * TOKEN), visible, tau,
                               budget_bytes=4 * heads * 4 * h * w * 2)  # two points per batch

    peak_sum, peak_count, mass = torch.zeros(len(positions), 6, dtype=torch.float64), torch.zeros(len(positions), 1), 0
    for frames, qk in chunks:
        rows = full_attention(qk, math.sqrt(d) if tau is None else tau)[tokens].view(6, len(frames), h * w)
        for index, position in enumerate(frames[1:], start=1):
            peak_sum[positions.index(position)] += rows[:, index].max(-1).values
            peak_count[positions.index(position)] += 1
        mass = mass + rows[:, 1:].sum((1, 2)) / len(chunks)
    counted = visible & (peak_count > 0)
    expected_confidence = (peak_sum / peak_count.clamp(min=1))[counted].mean()
    torch.testing.assert_close(torch.tensor(got), torch.stack([expected_confidence, mass.mean()]).float(), rtol=1e-5,
                               atol=1e-7)


@pytest.mark.parametrize("seed", range(3))
def test_matching_accuracy_equals_the_argmax_of_full_cost_volumes(seed):
    generator = torch.Generator().manual_seed(seed)
    heads, frames, h, w, d = 2, 5, 4, 6, 8
    qk = random_qk(generator, heads, frames, h, w, d)
    images = torch.rand(frames, h * TOKEN, w * TOKEN, 3, generator=generator)
    queries, tokens = token_queries(generator, 10, h, w)
    truth = queries[None, :, :2] + torch.randn(frames, 10, 2, generator=generator) * 3
    truth = truth.clamp(0, min(h, w) * TOKEN - 1)
    truth[0] = queries[:, :2]
    seen = torch.rand(frames, 10, generator=generator) > 0.2
    seen[0] = True
    positions = tuple(float(t) for t in range(frames))
    cell = score_cell(3, 0.2, [FeatureChunk(positions, qk)], queries, FrameColours.of(images, positions, (h, w)),
                      (truth, seen), TrackSettings(readout="argmax"))

    found = torch.zeros(frames, 10, 2)
    found[0] = queries[:, :2]
    for target in range(1, frames):
        best = full_cost_volume(qk, 0, target, math.sqrt(d))[tokens].argmax(-1)
        found[target] = torch.stack([(best % w + 0.5) * TOKEN, (best // w + 0.5) * TOKEN], -1)
    scale = torch.tensor([256 / (w * TOKEN), 256 / (h * TOKEN)])  # TAP-Vid's 256x256 raster
    distance = ((found - truth) * scale).norm(dim=-1)[1:]
    expected = {x: float((distance < x)[seen[1:]].float().mean()) for x in THRESHOLDS}
    assert cell.accuracy == pytest.approx(expected)
    assert cell.delta_avg == pytest.approx(sum(expected.values()) / len(THRESHOLDS))
    assert (cell.block, cell.sigma) == (3, 0.2) and 0 <= cell.cycle_rate <= 1 and 0 <= cell.sharpness <= 1


def test_normalise_and_harmonic_mean_by_hand():
    torch.testing.assert_close(normalise(torch.tensor([2.0, 4.0, 6.0, math.nan])),
                               torch.tensor([0.0, 0.5, 1.0, math.nan]), equal_nan=True)
    assert normalise(torch.tensor([3.0, 3.0])).tolist() == [1.0, 1.0]  # nothing to tell apart
    assert relative(torch.tensor([0.5, 0.25, 1.0])).tolist() == [0.5, 0.25, 1.0]
    assert relative(torch.tensor([0.0, 0.0])).tolist() == [1.0, 1.0]
    got = harmonic_mean(torch.tensor([1.0, 0.5, 0.0, 0.5]), torch.tensor([1.0, 0.25, 1.0, math.nan]),
                        torch.tensor([1.0, 1.0, 1.0, 1.0]))
    torch.testing.assert_close(got, torch.tensor([1.0, 3 / 7, 0.0, math.nan]), equal_nan=True)  # 3 / (2 + 4 + 1)


def test_rank_cells_by_hand():
    """Three cells; every quantity min-max normalised over them, then harmonic means."""
    cells = [Cell(0, 0.1, confidence=0.1, attention_score=0.5, cycle_rate=1.0, sharpness=0.9, appearance=0.8,
                  delta_avg=0.2),
             Cell(1, 0.1, confidence=0.3, attention_score=0.9, cycle_rate=0.8, sharpness=0.7, appearance=0.9,
                  delta_avg=0.6),
             Cell(2, 0.1, confidence=0.2, attention_score=0.7, cycle_rate=0.9, sharpness=0.5, appearance=0.85,
                  delta_avg=0.4)]
    rank_cells(cells)
    # normalised: confidence 0, 1, .5; attention 0, 1, .5; delta 0, 1, .5 -> harmonic 0, 1, .5
    assert [c.harmonic for c in cells] == pytest.approx([0.0, 1.0, 0.5])
    # cycle and sharpness as a share of the best (1, .8, .9; 1, 7/9, 5/9), appearance min-max (0, 1, .5)
    assert [c.label_free for c in cells] == pytest.approx([0.0, 3 / (1 / 0.8 + 9 / 7 + 1), 3 / (1 / 0.9 + 9 / 5 + 2)])
    assert best_cell(cells).block == 1
    cells[1].appearance = 0.8  # now the least: zeroed, and cell 2 (appearance 1) wins
    rank_cells(cells)
    assert cells[1].label_free == 0.0 and cells[2].label_free == pytest.approx(3 / (1 / 0.9 + 9 / 5 + 1))
    assert best_cell(cells).block == 2
    assert best_cell(cells, "harmonic").block == 1 and best_cell(cells, "delta_avg").block == 1


def test_the_label_free_score_ranks_oracle_descriptors_above_shuffled_ones():
    """Oracle descriptors (built from the scene's exact surface points) against the same descriptors with the tokens
    of every later frame shuffled (a bijection: exactly as cycle-consistent and sharp, matching the wrong content)
    and against noisy ones."""
    scene = Scene()
    positions = tuple(float(t) for t in range(scene.frames))
    frames = scene.render()
    oracle = scene.descriptors(list(positions))
    generator = torch.Generator().manual_seed(0)
    heads, count, h, w, d = oracle.q.shape
    order = torch.cat([torch.arange(h * w)[None], torch.stack([torch.randperm(h * w, generator=generator)
                                                               for _ in range(count - 1)])])
    shuffle = lambda x: torch.stack([x[:, t].reshape(heads, h * w, d)[:, order[t]]  # noqa: E731
                                     for t in range(count)], 1).reshape(x.shape)
    shuffled = QK(shuffle(oracle.q), shuffle(oracle.k), oracle.sigma)
    noisy = QK(oracle.q + torch.randn(oracle.q.shape, generator=generator) * 3, oracle.k.clone(), oracle.sigma)
    queries = grid_points(8, scene.frame_size)
    truth, visible = scene.truth(queries)
    colours = FrameColours.of(frames, list(positions), (h, w))
    cells = rank_cells([score_cell(index, 0.1, [FeatureChunk(positions, qk)], queries, colours, (truth, visible))
                        for index, qk in enumerate([oracle, shuffled, noisy])])
    assert cells[0].appearance > cells[1].appearance + 0.05
    assert cells[0].label_free > 0.5 and cells[1].label_free == 0.0
    assert best_cell(cells).block == 0 and best_cell(cells, "harmonic").block == 0
    assert cells[0].delta_avg > 0.9 > 0.3 > cells[1].delta_avg


def test_appearance_agreement_by_hand():
    """Two frames of flat colours: a track that stays on its colour agrees fully, one that lands on the other colour
    disagrees by exactly the colour difference."""
    frames = torch.zeros(2, 16, 32, 3)
    frames[:, :, 16:] = 0.5  # right half grey on both frames
    colours = FrameColours.of(frames, [0.0, 1.0], (4, 8))
    queries = torch.tensor([[4.0, 8.0, 0.0], [6.0, 4.0, 0.0]])  # both in the black half
    stay = torch.tensor([[[4.0, 8.0], [6.0, 4.0]], [[5.0, 9.0], [7.0, 3.0]]])
    jump = stay.clone()
    jump[1, :, 0] += 20  # into the grey half
    assert colours.agreement(stay, queries) == pytest.approx(1.0)
    assert colours.agreement(jump, queries) == pytest.approx(0.5)


def test_analysis_frames_span_the_video():
    chosen = analysis_frames(81, 13)
    assert len(chosen) == 13 and chosen[0] == 0 and chosen[-1] == 80 and chosen == sorted(set(chosen))
    assert analysis_frames(5, 13) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="at least two frames"):
        analysis_frames(1)


def test_the_picture_has_a_panel_per_quantity_and_marks_the_best_cell():
    cells = [Cell(b, s, 0.1 * b, 0.5, 0.5, 0.5, 0.5 + 0.01 * b * s) for s in (0.1, 0.4) for b in range(30)]
    analysis = Analysis(rank_cells(cells))
    one = render_analysis(analysis, ["appearance"], columns=1)
    four = render_analysis(analysis, ["confidence", "attention_score", "appearance", "label_free"])
    assert one.shape[0] == 1 and one.shape[3] == 3 and four.shape[1] == 2 * one.shape[1]
    assert four.shape[2] == 2 * one.shape[2] and 0 <= float(four.min()) and float(four.max()) <= 1
    # the best appearance cell (block 29, sigma 0.4: the last column, bottom row) has a black outline
    dark = (one[0] < 0.05).all(-1)
    assert dark.any()
    assert analysis.grid("appearance").shape == (2, 30) and best_cell(cells, "appearance").block == 29
