"""Streaming features to the compute device: the same tracks and maps as reading them in place, with at most the
window's chunks copied at once (on a CPU-only machine the window is made to copy, so the streaming path runs)."""
import torch

from difftrack_pack.ditcorr import QK, DeviceWindow, FeatureChunk, plan_chunks, point_cost_over_video
from difftrack_pack.ditcorr.track import TrackSettings, track_points


def chunked_features(frames=17, per_chunk=5, blocks=2, seed=0) -> list[list[FeatureChunk]]:
    """Random q/k for `blocks` fused selections of a strided chunk layout (several chunks per frame pair)."""
    generator = torch.Generator().manual_seed(seed)
    layout = plan_chunks(frames, per_chunk)
    return [[FeatureChunk(tuple(map(float, chunk)), QK(torch.randn(2, len(chunk), 6, 7, 16, generator=generator),
                                                        torch.randn(2, len(chunk), 6, 7, 16, generator=generator), 0.1))
             for chunk in layout] for _ in range(blocks)]


def test_tracks_through_a_copying_window_equal_tracks_in_place():
    selections = chunked_features()
    generator = torch.Generator().manual_seed(1)
    queries = torch.cat([torch.rand(30, 2, generator=generator) * torch.tensor([111.0, 95.0]), torch.zeros(30, 1)], 1)
    in_place = track_points(selections, queries, (96, 112), 17, TrackSettings(point_batch=8))
    window = DeviceWindow("cpu", capacity=1, always_copy=True)
    streamed = track_points(selections, queries, (96, 112), 17, TrackSettings(point_batch=8), device_window=window)
    for name in ("path", "visible", "confidence"):
        assert torch.equal(getattr(streamed, name), getattr(in_place, name)), name
    chunks = sum(len(chunks) for chunks in selections)
    assert window.copies >= chunks  # every chunk went through the window, some more than once (4 point batches)
    assert window.most_resident <= 2 * len(selections)  # one call's chunks and the next call's, never the video


def test_attention_maps_through_a_copying_window_equal_maps_in_place():
    (chunks, _) = chunked_features(blocks=2)
    points = torch.tensor([[0.1, -0.3], [-0.8, 0.6]])
    positions, in_place = point_cost_over_video(chunks, 0.0, points)
    window = DeviceWindow("cpu", capacity=1, always_copy=True)
    streamed_positions, streamed = point_cost_over_video(chunks, 0.0, points, device_window=window)
    assert streamed_positions == positions and torch.equal(streamed, in_place)
    assert window.copies == len(chunks) and window.most_resident == 1


def test_a_window_without_a_device_copies_nothing():
    (chunks, _) = chunked_features(blocks=2)
    window = DeviceWindow()
    assert window.get(chunks[0].qk) is chunks[0].qk and window.copies == 0


def test_frames_copied_as_bytes_come_back_within_half_a_level():
    """What a byte copy gives the GPU, formed here on the CPU: every value within half a level of 255 of the frame's,
    8-bit values exactly, out-of-range values clamped to [0, 1]."""
    from difftrack_pack.ditcorr.streaming import FrameCopier

    generator = torch.Generator().manual_seed(0)
    frames = torch.rand(3, 8, 9, 3, generator=generator)
    frames[0, 0, 0] = torch.tensor([-0.2, 1.3, 0.5])
    moved = FrameCopier(frames, "cpu", as_bytes=True)._moved(0, 3)
    assert moved.dtype == torch.float32 and moved.shape == frames.shape
    assert (moved - frames.clamp(0, 1)).abs().max() <= 0.5 / 255 + 1e-7
    levels = torch.randint(0, 256, (2, 4, 4, 3), generator=generator).float() / 255
    torch.testing.assert_close(FrameCopier(levels, "cpu", as_bytes=True)._moved(0, 2), levels, rtol=0, atol=0)


def test_grey_frames_are_the_channel_mean_wherever_they_are_taken():
    """A grey copier gives [n, H, W] channel means: on the path a copy to the GPU takes (formed here on the CPU) and
    on the path that copies nothing."""
    from difftrack_pack.ditcorr.streaming import FrameCopier

    frames = torch.rand(4, 8, 9, 3, generator=torch.Generator().manual_seed(1))
    copier = FrameCopier(frames, "cpu", grey=True)
    for grey in (copier._moved(1, 3), copier.take(1, 3)):
        assert grey.shape == (2, 8, 9)
        torch.testing.assert_close(grey, frames[1:3].mean(dim=-1), rtol=0, atol=1e-6)  # to float32 rounding
