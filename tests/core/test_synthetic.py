"""Synthetic clips: tracks agree with the rendering, occlusions happen, the files have TAP-Vid's layout."""
import io

import numpy as np
import pytest
import torch

from difftrack_pack.ditcorr.synthetic import Scene, make_clip, tapvid_npz


@pytest.mark.parametrize("seed", range(4))
def test_tracks_follow_the_surface_the_renderer_draws(seed):
    scene = Scene(seed, frame_size=(64, 64), frames=13, sprites=3)
    queries = scene.queries(200, query_frame=None)
    tracks, visible = scene.track(queries)
    start_layer = scene.layer_at(queries[:, :2], queries[:, 2])
    times = torch.arange(13).float()
    assert torch.allclose(tracks[torch.arange(200), queries[:, 2].long()], queries[:, :2], atol=1e-4)  # on its own frame
    for index, sprite in enumerate(scene.sprites, start=1):  # sprite points keep their local coordinates
        mine = start_layer == index
        if mine.any():
            start = scene._local(sprite, queries[mine, :2], queries[mine, 2])
            later = scene._local(sprite, tracks[mine], times[None].expand(int(mine.sum()), -1))
            torch.testing.assert_close(later, start[:, None].expand_as(later), atol=1e-4, rtol=0)
    shown = visible & (scene.layer_at(tracks, times[None].expand(200, -1)) == start_layer[:, None])
    assert torch.equal(shown, visible)  # visible means: the front-most surface there is the point's own


def test_rendered_colour_moves_with_visible_points():
    clip = make_clip(seed=7, frame_size=(64, 64), frames=13, points=300)
    frames = clip.frames.permute(0, 3, 1, 2)  # [T, 3, H, W]
    def colour(t, xy):
        grid = (xy / 64 * 2 - 1).view(1, 1, -1, 2)
        return torch.nn.functional.grid_sample(frames[t:t + 1], grid, align_corners=False)[0, :, 0].T
    start = colour(0, clip.tracks[:, 0])
    errors = [(colour(t, clip.tracks[:, t]) - start).abs().amax(-1)[clip.visible[:, t] & clip.visible[:, 0]] for t in range(1, 13)]
    assert torch.cat(errors).median() < 0.05  # textures are smooth: a visible point keeps its colour


def test_clips_are_seeded_and_have_occlusions_and_exits():
    first, again, other = make_clip(3), make_clip(3), make_clip(4)
    assert torch.equal(first.frames, again.frames) and torch.equal(first.tracks, again.tracks)
    assert not torch.equal(first.frames, other.frames)
    hidden = torch.stack([(~make_clip(seed).visible).float().mean() for seed in range(8)])
    assert 0.02 < hidden.mean() < 0.6


def test_tapvid_npz_layout():
    clip = make_clip(1, frame_size=(48, 64), frames=9, points=10)
    data = np.load(io.BytesIO(tapvid_npz(clip)))
    assert data["video"].shape == (9, 48, 64, 3) and data["video"].dtype == np.uint8
    assert data["tracks"].shape == (10, 9, 2) and data["occluded"].shape == (10, 9) and data["occluded"].dtype == bool
    assert (data["query_frames"] == 0).all()


def speeds(clip):
    """Per point and frame pair, how far the exact track moves: [N, T-1] pixels."""
    return (clip.tracks[:, 1:] - clip.tracks[:, :-1]).norm(dim=-1)


def test_motion_regimes_keep_their_speed_limits():
    fast = [make_clip(seed, (256, 256), 24, points=200) for seed in range(6)]
    assert all(torch.equal(a.frames, make_clip(seed, (256, 256), 24, points=200, motion="fast").frames)
               for seed, a in enumerate(fast[:2]))  # "fast" is the default, the training clips' regime
    slow = [make_clip(seed, (256, 256), 24, points=200, motion="slow") for seed in range(6)]
    static = [make_clip(seed, (256, 256), 24, points=200, motion="static-camera") for seed in range(6)]
    # Spin and growth add a little to a sprite point's speed on top of its translation (<= 2.5 px).
    assert max(speeds(clip).max() for clip in slow) <= 3.5 < max(speeds(clip).max() for clip in fast)
    for seed in range(6):  # the pan: <= 1 px a frame slow, none with a static camera
        assert Scene(seed, (256, 256), 24, motion="slow").pan.norm() <= 1.0
        assert Scene(seed, (256, 256), 24, motion="static-camera").pan.norm() == 0
    still = torch.cat([(speeds(clip) == 0).flatten() for clip in static]).float().mean()
    assert 0.5 < still < 1  # the background and the sprites that never move or have stopped
    stopping = [s for seed in range(6) for s in Scene(seed, (256, 256), 24, motion="static-camera").sprites
                if 0 < s.stop < 23 and s.velocity.norm() > 0]
    assert stopping  # some sprites move, then stand still
    with pytest.raises(ValueError, match="Unknown motion regime 'crawl'"):
        Scene(0, motion="crawl")


def heading(pan: torch.Tensor) -> torch.Tensor:
    """The direction of a pan (x, y) in degrees, x to the right, y down."""
    return torch.atan2(pan[1], pan[0]).rad2deg()


def test_one_way_regime_pans_one_way_at_the_fast_speeds():
    fast, one_way = ([Scene(seed, (256, 256), 13, motion=motion) for seed in range(24)] for motion in ("fast", "one-way"))
    headings = torch.stack([heading(scene.pan) for scene in one_way])
    assert headings.min() >= 10 - 1e-4 and headings.max() <= 50 + 1e-4 and headings.max() - headings.min() > 20
    torch.testing.assert_close(torch.stack([s.pan.norm() for s in one_way]), torch.stack([s.pan.norm() for s in fast]))
    clip = make_clip(5, (64, 64), 13, points=200, motion="one-way")  # exact tracks, as in every regime
    scene = Scene(5, (64, 64), 13, motion="one-way")
    background = scene.layer_at(clip.tracks[:, 0], torch.zeros(200)) == 0
    moved = clip.tracks[background, 1] - clip.tracks[background, 0]
    torch.testing.assert_close(moved, -scene.pan.expand_as(moved))
    # mostly one way: three in four clips head that way (at the fast speeds), the rest any way
    headings = torch.stack([heading(Scene(seed, (256, 256), 13, motion="mostly-one-way").pan) for seed in range(200)])
    one_way_share = ((headings >= 10 - 1e-4) & (headings <= 50 + 1e-4)).float().mean()
    assert 0.7 < one_way_share < 0.9 and (headings < 0).any()
    # one way with slow sprites: the same pans, sprites at most 6 px a frame
    for seed in range(6):
        slow_sprites, one_way = Scene(seed, (256, 256), 13, motion="one-way-slow"), Scene(seed, (256, 256), 13, motion="one-way")
        assert torch.equal(slow_sprites.pan, one_way.pan)
        assert all(sprite.velocity.norm() <= 6.0 for sprite in slow_sprites.sprites)
    # mostly one way with slow sprites: a clip that heads one way has slow sprites, any other is a "fast" clip
    headed = []
    for seed in range(40):
        mixed, fast = Scene(seed, (256, 256), 13, motion="mostly-one-way-slow"), Scene(seed, (256, 256), 13, motion="fast")
        headed.append(not torch.equal(mixed.pan, fast.pan))  # a headed clip's pan is turned, a "fast" one's is not
        if headed[-1]:
            assert 10 - 1e-4 <= heading(mixed.pan) <= 50 + 1e-4
            assert all(sprite.velocity.norm() <= 6.0 for sprite in mixed.sprites)
        else:
            assert all(torch.equal(a.velocity, b.velocity) for a, b in zip(mixed.sprites, fast.sprites))
    assert 0.6 < sum(headed) / len(headed) < 0.9


def test_mixed_regime_draws_pan_and_sprites_from_every_regime():
    pans = torch.stack([Scene(seed, (256, 256), 24, motion="mixed").pan.norm() for seed in range(24)])
    assert (pans == 0).any() and (pans > 1.5).any() and ((pans > 0) & (pans <= 1.0)).any()


@pytest.mark.parametrize("motion", ["fast", "static-camera"])
def test_labels_are_the_objects_the_renderer_drew(motion):
    scene = Scene(3, (64, 64), 9, motion=motion)
    labels = scene.labels()
    assert labels.shape == (9, 64, 64) and labels.dtype == torch.long
    assert set(labels.unique().tolist()) <= set(range(len(scene.sprites) + 1)) and (labels > 0).any()
    # A visible point of a sprite lies on that sprite's label wherever it goes.
    queries = scene.queries(300, 0)
    tracks, visible = scene.track(queries)
    layer = scene.layer_at(queries[:, :2], queries[:, 2])
    pixel = tracks.floor().long().clamp(0, 63)
    on = labels[torch.arange(9)[None].expand(300, -1), pixel[..., 1], pixel[..., 0]]
    agree = (on == layer[:, None])[visible]
    assert agree.float().mean() > 0.97  # all but points within a pixel of an edge


def sprite_hues(scene: Scene) -> list[torch.Tensor]:
    """Each sprite's colour up to brightness [3]: a texel is its colour times its own shading (the outline aside,
    away from the centre), so dividing by the mean over channels leaves the colour's proportions alone."""
    inner = [sprite.texture[:, 24:40, 24:40] for sprite in scene.sprites]
    return [(texture / texture.mean(0, keepdim=True)).mean((1, 2)) for texture in inner]


def test_one_colour_scenes_differ_only_in_the_sprites_colours():
    for seed in range(4):
        plain, one = Scene(seed, (64, 64), 5), Scene(seed, (64, 64), 5, one_colour=True)
        assert torch.equal(plain.labels(), one.labels()) and torch.equal(plain.pan, one.pan)
        hues = sprite_hues(one)
        for hue in hues[1:]:
            torch.testing.assert_close(hue, hues[0], atol=1e-4, rtol=1e-4)
        plain_hues = sprite_hues(plain)
        assert any((hue - plain_hues[0]).abs().max() > 0.05 for hue in plain_hues[1:])
