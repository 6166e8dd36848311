import pytest
import torch

from difftrack_pack.ditcorr.draw import draw_tracks, point_colours


def test_markers_trails_and_hollow_rings():
    frames = torch.full((3, 40, 60, 3), 0.5)
    path = torch.tensor([[[10.0, 10.0], [40.0, 30.0]], [[14.0, 10.0], [40.0, 30.0]], [[18.0, 10.0], [40.0, 30.0]]])
    visible = torch.tensor([[True, False], [True, False], [True, False]])  # point 1 hidden throughout: no trail
    out = draw_tracks(frames, path, visible, trail=3, radius=3.0)
    assert out.shape == frames.shape and out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1
    colours = point_colours(path[0], (40, 60))
    torch.testing.assert_close(out[2, 10, 18], colours[0], atol=0.02, rtol=0)  # filled marker centre: the point's colour
    torch.testing.assert_close(out[2, 30, 40], frames[2, 30, 40], atol=1e-6, rtol=0)  # occluded: hollow, centre untouched
    assert (out[2, 30, 37] - 0.5).abs().sum() > 0.3  # ...but its ring is drawn
    assert (out[2, 10, 13] - 0.5).abs().sum() > 0.1  # the trail behind the moving point
    assert torch.equal(out[0, 38, 2], frames[0, 38, 2])  # far from everything: untouched


def test_distinct_colours_and_frame_count_check():
    colours = point_colours(torch.tensor([[0.0, 0.0], [30.0, 0.0], [59.0, 39.0]]), (40, 60))
    assert torch.cdist(colours, colours).triu(1)[0, 1:].min() > 0.3
    with pytest.raises(ValueError, match="The video has 2 frames but the tracks have 3"):
        draw_tracks(torch.zeros(2, 8, 8, 3), torch.zeros(3, 1, 2), torch.ones(3, 1, dtype=torch.bool))


def test_ids_are_drawn():
    frames = torch.zeros(1, 30, 40, 3)
    path, visible = torch.tensor([[[10.0, 20.0]]]), torch.ones(1, 1, dtype=torch.bool)
    plain = draw_tracks(frames, path, visible, radius=3.0)
    numbered = draw_tracks(frames, path, visible, radius=3.0, show_ids=True)
    assert (numbered - plain).abs().sum() > 1.0


def test_point_masks_mark_visible_points_only():
    from difftrack_pack.ditcorr.draw import point_masks
    path = torch.tensor([[[10.0, 10.0], [30.0, 20.0]], [[12.0, 10.0], [30.0, 20.0]]])
    visible = torch.tensor([[True, True], [True, False]])
    masks = point_masks(path, visible, (32, 48), radius=3.0)
    assert masks.shape == (2, 32, 48) and masks.max() <= 1
    assert masks[0, 10, 10] == 1 and masks[0, 20, 30] == 1 and masks[1, 10, 12] == 1
    assert masks[1, 20, 30] == 0 and masks[0, 0, 0] == 0  # occluded point and empty background stay 0
