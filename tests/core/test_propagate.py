"""Attention label propagation against a brute-force loop over full affinities, and on the oracle scene."""
from __future__ import annotations

import math

import pytest
import torch
from difftrack_devkit.oracle_scene import Scene

from difftrack_pack.ditcorr.propagate import PropagationSettings, propagate_labels


def brute_force(q, k, first, settings, head_weights):
    """The protocol written out token by token: full per-head softmax rows over the allowed context tokens."""
    heads, frames, height, width, dim = q.shape
    temperature = settings.temperature_for(dim)
    labels = [first.reshape(first.shape[0], -1).double()]
    positions = [(r, c) for r in range(height) for c in range(width)]
    for target in range(1, frames):
        context = [0, *range(max(1, target - settings.context), target)]
        new = torch.zeros_like(labels[0])
        for i, (row, col) in enumerate(positions):
            allowed = [(f, j) for f in range(len(context)) for j, (r, c) in enumerate(positions)
                       if settings.radius is None or (abs(r - row) <= settings.radius and abs(c - col) <= settings.radius)]
            combined = torch.zeros(len(allowed), dtype=torch.float64)
            for h in range(heads):
                logits = torch.stack([q[h, target, row, col].double() @ k[h, context[f], positions[j][0], positions[j][1]].double()
                                      for f, j in allowed]) / temperature
                combined += head_weights[h].double() * torch.softmax(logits, dim=0)
            order = torch.argsort(combined, descending=True)
            keep = order[:settings.top_k] if 0 < settings.top_k < len(allowed) else order
            total = combined[keep].sum()
            for index in keep.tolist():
                f, j = allowed[index]
                new[:, i] += combined[index] / total * labels[context[f]][:, j]
        labels.append(new)
    return torch.stack(labels).reshape(frames, -1, height, width)


@pytest.mark.parametrize("grid, radius, top_k, context, tile, row_batch", [
    ((4, 4), 1, 4, 1, 8, 5),  # one tile, larger than the frame
    ((4, 4), 2, 0, 2, 8, 5),  # every window token kept
    ((4, 4), None, 6, 3, 8, 5),  # no window: bands of one row
    ((7, 9), 1, 5, 2, 3, 9),  # tiles padded past both edges, one per computation
    ((7, 9), 2, 0, 3, 4, 64),  # several tiles per computation, windows cut by the edges
    ((7, 9), 0, 3, 1, 2, 4),  # a window of one token: only the same position in each context frame
])
def test_propagation_equals_the_brute_force_protocol(grid, radius, top_k, context, tile, row_batch):
    generator = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 2, 5, *grid, 8, generator=generator).unbind(0)
    first = torch.softmax(torch.randn(3, *grid, generator=generator) * 3, dim=0)
    settings = PropagationSettings(radius=radius, top_k=top_k, context=context, tile=tile, row_batch=row_batch)
    head_weights = torch.tensor([0.7, 0.3])
    got = propagate_labels(q, k, first, settings, head_weights)
    torch.testing.assert_close(got.double(), brute_force(q, k, first, settings, head_weights), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.sum(dim=1), torch.ones(5, *grid), rtol=0, atol=1e-5)  # still a distribution


def test_oracle_masks_follow_their_objects():
    """Descriptors built from the ground truth (a panning background, two moving sprites, 4-px tokens): the first
    frame's object masks propagate to each later frame's true masks."""
    scene = Scene()
    times = [float(t) for t in range(scene.frames)]
    qk = scene.descriptors(times)
    height, width = qk.q.shape[2:4]
    ys, xs = torch.meshgrid(torch.arange(height) * 4 + 2.0, torch.arange(width) * 4 + 2.0, indexing="ij")
    truth = torch.stack([scene.surface(xs.flatten(), ys.flatten(), t)[0].reshape(height, width) for t in times])
    first = torch.nn.functional.one_hot(truth[0], 3).permute(2, 0, 1).float()
    labels = propagate_labels(qk.q, qk.k, first, PropagationSettings(radius=6, top_k=16))
    predicted = labels.argmax(dim=1)
    for layer in (1, 2):  # the sprites
        for t in range(1, scene.frames):
            ours, theirs = predicted[t] == layer, truth[t] == layer
            iou = (ours & theirs).sum() / (ours | theirs).sum()
            assert iou >= 0.95, f"sprite {layer} on frame {t}: IoU {iou:.3f}"


def test_labels_must_be_on_the_token_grid():
    q = torch.zeros(1, 2, 3, 3, 4)
    with pytest.raises(ValueError, match="give them at the features' token grid"):
        propagate_labels(q, q, torch.ones(2, 4, 4))


def test_guided_upsampling_puts_oracle_label_edges_on_the_image_edges():
    """Token labels of the oracle scene (4-px tokens) brought to pixels: with the frames as guidance the masks
    cover the exact pixel masks better than plain bilinear upsampling (J 0.90 -> 0.94 here), with their
    boundaries still within DAVIS's tolerance."""
    from difftrack_pack.ditcorr.propagate import labels_to_pixels
    from difftrack_pack.ditcorr.vos_metrics import davis_scores

    scene = Scene()
    height, width = scene.frame_size
    times = [float(t) for t in range(scene.frames)]
    tokens = (height // 4, width // 4)
    ty, tx = torch.meshgrid(torch.arange(tokens[0]) * 4 + 2.0, torch.arange(tokens[1]) * 4 + 2.0, indexing="ij")
    py, px = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    token_truth = torch.stack([scene.surface(tx.flatten(), ty.flatten(), t)[0].reshape(tokens) for t in times])
    pixel_truth = torch.stack([scene.surface(px.flatten(), py.flatten(), t)[0].reshape(height, width) for t in times])
    labels = torch.nn.functional.one_hot(token_truth, 3).permute(0, 3, 1, 2).float()
    frames = scene.render()
    guided = labels_to_pixels(labels, frames).argmax(dim=1)
    plain = torch.nn.functional.interpolate(labels, size=(height, width), mode="bilinear").argmax(dim=1)
    assert torch.allclose(labels_to_pixels(labels, frames).sum(dim=1), torch.ones(scene.frames, height, width))
    for layer in (1, 2):
        with_guide = davis_scores(guided == layer, pixel_truth == layer)
        without = davis_scores(plain == layer, pixel_truth == layer)
        assert with_guide["j"] > without["j"] + 0.02 and with_guide["f"] >= 0.95


def chunked(q, k, chunks):
    """The features one forward per chunk would give if a frame's q/k did not depend on the other frames of its
    forward: [(source positions, q, k)] sliced from whole-video q/k [H, T, h, w, d]."""
    return [(tuple(float(f) for f in chunk), q[:, chunk], k[:, chunk]) for chunk in chunks]


@pytest.mark.parametrize("annotated, frames_per_chunk", [(0, 5), (6, 4), (11, 6)])
def test_overlapping_windows_propagate_as_one_forward_does(annotated, frames_per_chunk):
    """Forwards over runs of frames that overlap by the context give exactly the labels of one forward over the
    whole video, forward and backward in time from the annotated frame (backward = the reversed video)."""
    from difftrack_pack.ditcorr.chunks import plan_windows
    from difftrack_pack.ditcorr.propagate import propagate_chunk

    generator = torch.Generator().manual_seed(1)
    q, k = torch.randn(2, 2, 12, 4, 5, 8, generator=generator).unbind(0)
    first = torch.softmax(torch.randn(3, 4, 5, generator=generator) * 3, dim=0)
    settings = PropagationSettings(radius=2, top_k=6, context=2, tile=3, row_batch=7)
    labels = {float(annotated): first}
    for frames, chunk_q, chunk_k in chunked(q, k, plan_windows(12, frames_per_chunk, annotated, overlap=2)):
        propagate_chunk(frames, chunk_q, chunk_k, float(annotated), labels, settings)
    assert sorted(labels) == [float(t) for t in range(12)]
    later = propagate_labels(q[:, annotated:], k[:, annotated:], first, settings)
    earlier = propagate_labels(q[:, :annotated + 1].flip(1), k[:, :annotated + 1].flip(1), first, settings).flip(0)
    for t in range(12):
        expected = later[t - annotated] if t >= annotated else earlier[t]
        torch.testing.assert_close(labels[float(t)], expected)


def test_a_forward_without_the_annotated_frame_is_refused():
    from difftrack_pack.ditcorr.propagate import propagate_chunk

    q = torch.zeros(1, 2, 3, 3, 4)
    with pytest.raises(ValueError, match="with that frame as reference_frame"):
        propagate_chunk((1.0, 2.0), q, q, 0.0, {0.0: torch.ones(2, 3, 3) / 2})


def test_fitted_head_weights_prefer_the_head_that_sees_the_content():
    """Two heads: one attends to a token's own position whatever it shows, the other matches object identity.
    Fitted on the annotated frame alone, the weights move to the content head, and the propagated masks of a
    moving object improve over the heads' mean."""
    from difftrack_pack.ditcorr.propagate import fit_head_weights, masks_to_labels

    generator = torch.Generator().manual_seed(2)
    frames, height, width, dim = 6, 10, 10, 16
    identity = torch.randn(2, dim, generator=generator) * 2  # background, object
    place = torch.randn(height, width, dim, generator=generator) * 2
    truth = torch.zeros(frames, height, width, dtype=torch.long)
    for t in range(frames):  # a 4x4 square moving one token a frame
        truth[t, 3:7, 1 + t:5 + t] = 1
    content = identity[truth] + 0.3 * torch.randn(frames, height, width, dim, generator=generator)
    positional = place.expand(frames, -1, -1, -1)
    q = k = torch.stack([positional, content])  # [H=2, T, h, w, d]
    first = masks_to_labels(truth[:1].float(), (height, width))
    settings = PropagationSettings(radius=3, top_k=8, context=1, temperature=1.0)
    weights = fit_head_weights(q[:, 0], k[:, 0], first, settings)
    assert weights.sum().item() == pytest.approx(1.0) and weights[1] > 0.8

    def iou(head_weights):
        predicted = propagate_labels(q, k, first, settings, head_weights).argmax(dim=1)[1:] == 1
        return ((predicted & (truth[1:] == 1)).sum() / (predicted | (truth[1:] == 1)).sum()).item()
    assert iou(weights) > iou(None) + 0.1 and iou(weights) > 0.9


def test_fitted_head_weights_equal_the_fit_written_out():
    """The fit against its plain form on random features: full per-head softmax rows over each token's window less
    its own neighbourhood, the 4·top_k candidates by the heads' mean, and per Adam step each token's candidate
    weights mixed by the head weights, renormalised and applied to the candidates' labels."""
    from difftrack_pack.ditcorr.propagate import fit_head_weights

    generator = torch.Generator().manual_seed(5)
    heads, height, width, dim = 3, 6, 7, 8
    q, k = torch.randn(2, heads, height, width, dim, generator=generator).unbind(0)
    labels = torch.softmax(torch.randn(3, height, width, generator=generator) * 3, dim=0)
    settings = PropagationSettings(radius=2, top_k=3, temperature=1.5, fit_steps=12, fit_rate=0.2)
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    apart = torch.maximum((rows[:, None] - rows[None]).abs(), (cols[:, None] - cols[None]).abs())  # [M, M]
    allowed = (apart <= settings.radius) & (apart > 1)
    logits = torch.einsum("hmd,hnd->hmn", q.reshape(heads, -1, dim), k.reshape(heads, -1, dim)) / settings.temperature
    per_head = torch.softmax(logits.masked_fill(~allowed, -math.inf), dim=-1)  # [H, M, M]
    candidates = per_head.mean(0).topk(4 * settings.top_k, dim=1).indices  # [M, C]
    values = per_head.gather(2, candidates.expand(heads, -1, -1))
    target = labels.reshape(3, -1)
    weight_logits = torch.zeros(heads, requires_grad=True)
    optimiser = torch.optim.Adam([weight_logits], lr=settings.fit_rate)
    with torch.enable_grad():
        for _ in range(settings.fit_steps):
            mixed = torch.einsum("h,hmc->mc", torch.softmax(weight_logits, 0), values)
            mixed = mixed / mixed.sum(1, keepdim=True)
            predicted = (target[:, candidates] * mixed).sum(2).clamp(1e-6, 1.0)
            dice = 1 - (2 * (predicted * target).sum(1) + 1) / (predicted.sum(1) + target.sum(1) + 1)
            loss = dice.mean() - (target * predicted.log()).sum(0).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    expected = torch.softmax(weight_logits.detach(), 0)
    torch.testing.assert_close(fit_head_weights(q, k, labels, settings), expected, rtol=1e-5, atol=1e-6)


def test_masks_become_token_label_shares_with_the_background_first():
    from difftrack_pack.ditcorr.propagate import masks_to_labels

    masks = torch.zeros(2, 4, 4)
    masks[0, :2, :2] = 1  # object 1: the top-left token
    masks[1, :2, 1:4] = 1  # object 2 overlaps it and wins there
    labels = masks_to_labels(masks, (2, 2))
    expected = torch.tensor([[[0.0, 0.0], [1.0, 1.0]], [[0.5, 0.0], [0.0, 0.0]], [[0.5, 1.0], [0.0, 0.0]]])
    torch.testing.assert_close(labels, expected)


def test_labels_between_token_frames_are_linear_in_time():
    from difftrack_pack.ditcorr.propagate import labels_at

    labels = {0.0: torch.zeros(2, 1, 1), 2.5: torch.ones(2, 1, 1)}
    assert labels_at(labels, 0).sum() == 0 and labels_at(labels, 5).sum() == 2  # ends: the nearest
    torch.testing.assert_close(labels_at(labels, 1), torch.full((2, 1, 1), 0.4))


def test_label_maps_in_batches_equal_one_frame_at_a_time(monkeypatch):
    """Pixel maps computed a few frames at a time (batches that do not divide the video) equal the frame-by-frame
    protocol: each source frame's labels interpolated in time, upsampled with that frame alone as guidance, argmax;
    the annotated frame its given label image."""
    from difftrack_pack.ditcorr import propagate
    from difftrack_pack.ditcorr.propagate import label_maps, labels_at, labels_to_pixels

    generator = torch.Generator().manual_seed(3)
    frames = torch.rand(7, 32, 40, 3, generator=generator)
    labels = {p: torch.softmax(torch.randn(3, 4, 5, generator=generator) * 3, dim=0) for p in (0.0, 2.5, 4.0, 6.0)}
    annotated = torch.randint(0, 3, (32, 40), generator=generator)
    monkeypatch.setattr(propagate, "PIXEL_BATCH_LABELS", 9)  # 3 frames of 3 channels per batch
    seen = []
    got = label_maps(labels, frames, 2, annotated, lambda: seen.append(1))
    expected = torch.stack([annotated if t == 2 else labels_to_pixels(labels_at(labels, t)[None], frames[t:t + 1])[0].argmax(0)
                            for t in range(7)])
    assert got.dtype == torch.long and len(seen) == 7
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
