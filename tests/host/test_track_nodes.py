"""Tracking nodes on a tiny real Wan and VAE; TRACKS accepted by ComfyUI core's WanMove nodes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import folder_paths
from PIL import Image
from comfy_extras.nodes_wanmove import WanMoveTracksFromCoords, WanMoveVisualizeTracks

from difftrack_devkit.models import random_model, random_wan_vae
from difftrack_devkit.nodes import run_node
from difftrack_devkit.oracle_scene import Scene
from difftrack_pack.ditcorr import CaptureKey, DitFeatures
from difftrack_pack.nodes.capture_nodes import ExtractVideoFeatures
from difftrack_pack.nodes.track_nodes import DrawTracks, SaveTracks, TrackPoints

FRAMES, SIZE = 9, 64


@pytest.fixture(scope="module")
def video():
    return random_model("wan"), random_wan_vae(), torch.rand(FRAMES, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(0))


def track(points="[[20, 30], [40, 10, 4]]", **inputs):
    return run_node(TrackPoints, points=points, frames_per_chunk=5, **inputs).args


def test_track_points_node_returns_the_exact_tracks_of_oracle_features():
    """A known answer through the node: features whose q/k are built from the ground truth of a synthetic scene
    (panning background, two sprites) and the scene's frames give tracks within half a pixel of the truth where the
    descriptors are unambiguous (two tokens from any edge), on every frame, for queries on frames 0 and 4 in one
    call, with the default read-out (refined+pixel)."""
    scene = Scene()
    positions = tuple(float(t) for t in range(scene.frames))
    features = DitFeatures(scene.frame_size, scene.frames, [positions], "oracle",
                           {CaptureKey(0, 0, "cond", 0, 0): scene.descriptors(list(positions))})
    queries = torch.cat([scene.queries(400, 0), scene.queries(400, 4, seed=2)])
    truth, visible = scene.truth(queries)
    clear = torch.stack([scene.margin(truth[t, :, 0], truth[t, :, 1], float(t)) > 8 for t in range(scene.frames)])
    clean = clear & visible & clear[queries[:, 2].long(), torch.arange(len(queries))]  # and clear where queried
    points = json.dumps([{"x": x, "y": y, "t": int(t)} for x, y, t in queries.tolist()])
    tracks, visibility, coordinates = track(points, features=features, images=scene.render())
    assert clean.sum() > 150 and clean[:, queries[:, 2] == 4].sum() > 50
    assert (tracks["track_path"] - truth).norm(dim=-1)[clean].max() <= 0.5
    assert tracks["track_visibility"][clean].float().mean() > 0.95
    assert json.loads(coordinates)[0][8] == {"x": round(float(tracks["track_path"][8, 0, 0]), 2),
                                             "y": round(float(tracks["track_path"][8, 0, 1]), 2)}


def test_track_points_from_model_feeds_core_wanmove(video):
    model, vae, images = video
    tracks, visibility, coordinates = track(model=model, vae=vae, images=images)
    path, visible = tracks["track_path"], tracks["track_visibility"]
    assert path.shape == (FRAMES, 2, 2) and visible.shape == (FRAMES, 2) and visible.dtype == torch.bool
    assert path[0, 0].tolist() == [20.0, 30.0] and path[4, 1].tolist() == [40.0, 10.0]  # each query on its own frame
    assert visible[0, 0] and visible[4, 1]
    assert visibility.shape == (FRAMES, SIZE, SIZE) and visibility[0, 30, 20] == 1.0
    assert json.loads(coordinates)[1][4] == {"x": 40.0, "y": 10.0}
    (drawn,) = run_node(WanMoveVisualizeTracks, images=images, tracks=tracks).args  # ComfyUI core
    assert drawn.shape == images.shape
    from_coords = run_node(WanMoveTracksFromCoords, track_coords=coordinates).args[0]  # our JSON read by core
    torch.testing.assert_close(from_coords["track_path"].float(), path, atol=0.01, rtol=0)


def test_track_points_from_features_grid_and_mask(video):
    model, vae, images = video
    (features,) = run_node(ExtractVideoFeatures, model=model, vae=vae, images=images, blocks="1, 2", frames_per_chunk=0,
                           storage="cpu").args
    mask = torch.zeros(FRAMES, SIZE, SIZE)
    mask[:, :, : SIZE // 2] = 1
    tracks, _, _ = track(grid_size=4, features=features, mask=mask, images=images)
    assert tracks["track_path"].shape == (FRAMES, 8, 2) and (tracks["track_path"][0, :, 0] < SIZE // 2).all()
    argmax, _, _ = track(readout="argmax", features=features)  # the DiT read-outs need no images
    assert argmax["track_path"].shape == (FRAMES, 2, 2)
    with pytest.raises(ValueError, match=r"refined\+pixel read-out aligns points on the video's pixels.*connect the images"):
        track(features=features)


@pytest.mark.parametrize("points, message", [
    ("[[70, 10]]", r"Point 0 \(70, 10\) is outside the 64x64 frame"),
    ("[[10, 10, 12]]", "Point 0 is on frame 12, outside the video's 9 frames"),
    ("[{x: 1}]", "Cannot read the points: not JSON"),
    ("[]", "No points given"),
])
def test_bad_points(video, points, message):
    model, vae, images = video
    with pytest.raises(ValueError, match=message):
        track(points, model=model, vae=vae, images=images)


def test_missing_inputs_and_frame_mismatch(video):
    model, vae, images = video
    with pytest.raises(ValueError, match="Connect either features"):
        track(model=model, images=images)
    (features,) = run_node(ExtractVideoFeatures, model=model, vae=vae, images=images, frames_per_chunk=0).args
    with pytest.raises(ValueError, match="The images have 5 frames but the features were extracted from 9"):
        track(features=features, images=images[:5])


def test_previews_for_the_editor_and_the_animation(video):
    model, vae, images = video
    result = run_node(TrackPoints, points='[[20, 30, 4]]', query_frame=4, frames_per_chunk=5, model=model, vae=vae,
                      images=images)
    (frame,) = result.ui["difftrack_frame"]  # the query frame, shown by the points editor
    assert frame["type"] == "temp" and Path(folder_paths.get_temp_directory(), frame["subfolder"], frame["filename"]).is_file()
    drawn = run_node(DrawTracks, images=images, tracks=result.args[0], trail=8)
    shown = drawn.ui.as_dict()
    assert shown["animated"] == (True,) and shown["images"][0]["filename"].endswith(".webp")
    webp = Image.open(Path(folder_paths.get_temp_directory(), shown["images"][0]["subfolder"], shown["images"][0]["filename"]))
    assert webp.n_frames == FRAMES


def test_draw_and_save(video):
    model, vae, images = video
    tracks, _, _ = track(model=model, vae=vae, images=images)
    (drawn,) = run_node(DrawTracks, images=images, tracks=tracks, trail=8, show_ids=True).args
    assert drawn.shape == images.shape and not torch.equal(drawn, images)
    result = run_node(SaveTracks, tracks=tracks, filename_prefix="difftrack/test")
    output = Path(folder_paths.get_output_directory())
    files = {entry["filename"].rsplit(".", 1)[1]: output / entry["subfolder"] / entry["filename"] for entry in result.ui["tracks"]}
    assert sorted(files) == ["csv", "json", "npz"]
    npz = np.load(files["npz"])
    assert npz["tracks"].shape == (2, FRAMES, 2) and npz["occluded"].shape == (2, FRAMES)
    assert len(json.loads(files["json"].read_text())) == 2
    assert files["csv"].read_text().count("\n") == 1 + 2 * FRAMES


def test_storage_and_streaming_change_no_track_and_no_map(video, monkeypatch):
    """Features kept on the GPU, in CPU memory or by `auto` give the same tracks and attention maps, also when the
    nodes stream them to a compute device a chunk at a time (on a CPU-only machine the window is made to copy)."""
    from difftrack_pack.ditcorr import DeviceWindow
    from difftrack_pack.nodes import capture_nodes, track_nodes
    from difftrack_pack.nodes.capture_nodes import AttentionMap

    model, vae, images = video
    windows = []

    def copying_window():
        windows.append(DeviceWindow("cpu", capacity=1, always_copy=True))
        return windows[-1]

    def run_all(storage):
        (features,) = run_node(ExtractVideoFeatures, model=model, vae=vae, images=images, blocks="1, 2",
                               frames_per_chunk=4, storage=storage).args
        tracks, _, _ = track("[[20, 30], [40, 10], [5, 60]]", features=features, images=images)  # frame 0: in every chunk
        extracted, _, _ = track(model=model, vae=vae, images=images, storage=storage)
        (maps,) = run_node(AttentionMap, features=features, x=20, y=40, query_frame=0).args
        return tracks, extracted, maps, features.storage

    reference = run_all("gpu")
    assert reference[3].startswith("captured q/k: 0.00 GiB on the GPU")  # a CPU-only host keeps them in CPU memory
    monkeypatch.setattr(track_nodes, "compute_window", copying_window)
    monkeypatch.setattr(capture_nodes, "compute_window", copying_window)
    for storage in ("gpu", "cpu", "auto"):
        tracks, extracted, maps, _ = run_all(storage)
        for got, expected in ((tracks, reference[0]), (extracted, reference[1])):
            assert torch.equal(got["track_path"], expected["track_path"])
            assert torch.equal(got["track_visibility"], expected["track_visibility"])
        assert torch.equal(maps, reference[2])
    assert windows and all(window.copies > 0 for window in windows)
