"""A tracking workflow on tiny models posted to /prompt writes a video with drawn tracks and the tracks' files."""
from __future__ import annotations

import json

import av
from difftrack_devkit.testbed import CLIP_FRAMES, CLIP_SIZE, VIDEO_FRONT


def test_track_points_draw_and_save(comfy_server):
    prompt = {
        **VIDEO_FRONT,  # 1 model, 2 vae, 4 the clip's frames
        "5": {"class_type": "DiffTrackTrackPoints", "inputs": {
            "points": '[{"x": 16, "y": 32}, {"x": 48, "y": 12}, {"x": 40, "y": 50, "t": 4}]', "grid_size": 0,
            "query_frame": 0, "readout": "refined", "window": 2, "cycle_tolerance": 1.0, "min_confidence": 3.0,
            "temperature": 0.0, "blocks": "auto", "sigma": 0.1, "seed": 0, "encoding": "per_frame",
            "frames_per_chunk": 5, "storage_dtype": "model", "storage": "cpu", "model": ["1", 0], "vae": ["2", 0], "images": ["4", 0]}},
        "6": {"class_type": "DiffTrackDrawTracks", "inputs": {
            "images": ["4", 0], "tracks": ["5", 0], "trail": 8, "radius": 0.0, "line_width": 0.0, "show_ids": True,
            "opacity": 1.0}},
        "7": {"class_type": "CreateVideo", "inputs": {"images": ["6", 0], "fps": 8.0}},
        "8": {"class_type": "SaveVideo", "inputs": {"video": ["7", 0], "filename_prefix": "difftrack/e2e_tracks",
                                                     "format": "mp4", "codec": "h264"}},
        "9": {"class_type": "DiffTrackSaveTracks", "inputs": {"tracks": ["5", 0], "filename_prefix": "difftrack/e2e",
                                                              "format": "all"}},
    }
    outputs = comfy_server.run(prompt)["outputs"]
    (video,) = outputs["8"]["images"]
    with av.open(str(comfy_server.output_path(video))) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == CLIP_FRAMES and frames[0].shape == (CLIP_SIZE, CLIP_SIZE, 3)
    saved = {entry["filename"].rsplit(".", 1)[1]: comfy_server.output_path(entry) for entry in outputs["9"]["tracks"]}
    tracks = json.loads(saved["json"].read_text())
    assert len(tracks) == 3 and all(len(track) == CLIP_FRAMES for track in tracks)
    assert tracks[0][0] == {"x": 16.0, "y": 32.0} and tracks[2][4] == {"x": 40.0, "y": 50.0}
    assert saved["npz"].stat().st_size > 0 and saved["csv"].read_text().startswith("point,frame,x,y,visible")
