"""Track points through a bundled synthetic clip with the shipped tracking workflow, on the tiny trained models.

    python tools/demo.py [--out demo_output] [--gpu]

Starts ComfyUI headless (found at $COMFYUI_PATH, as the parent of the
custom_nodes/ holding this pack, or at ~/ComfyUI) with this pack installed,
turns workflows/difftrack_track_points_wan21.json into a prompt, points it at
assets/tiny_wan/ (a Wan 2.1-format DiT and VAE trained on such clips, see
bench/train_tiny.py) and assets/demo/clip.mp4, and runs it through /prompt.
Writes the video with drawn tracks and the tracks (JSON, npz, CSV) to --out,
and prints one JSON line with TAP-Vid scores against the clip's exact tracks.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from difftrack_devkit.host import REPO, find_comfyui
from difftrack_devkit.server import ui_to_api
from difftrack_devkit.testbed import DEMO_CLIP, DEMO_FRAMES, DEMO_SEED, DEMO_SIZE, DEMO_TRUTH, start_server, tiny_prompt

WORKFLOW = REPO / "workflows" / "difftrack_track_points_wan21.json"
POINTS, FPS = 24, 6  # the clip's seed (DEMO_SEED) is one neither training nor quality.py draws


def write_clip() -> None:
    """Render the bundled clip and its exact tracks (run once; the files are committed)."""
    import av

    from difftrack_pack.ditcorr.synthetic import make_clip

    clip = make_clip(DEMO_SEED, (DEMO_SIZE, DEMO_SIZE), DEMO_FRAMES, points=POINTS)
    DEMO_CLIP.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(DEMO_CLIP), "w") as container:
        stream = container.add_stream("libx264", rate=FPS, options={"crf": "12"})
        stream.width = stream.height = DEMO_SIZE
        stream.pix_fmt = "yuv444p"
        for frame in (clip.frames * 255).round().byte().numpy():
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    np.savez_compressed(DEMO_TRUTH, tracks=clip.tracks.numpy(), occluded=(~clip.visible).numpy(),
                        query_frames=clip.query_frames.numpy())


def demo_prompt(object_info: dict, points: list[dict]) -> dict:
    """The shipped tracking workflow as a prompt, on the trained tiny models and the bundled clip."""
    prompt = tiny_prompt(ui_to_api(json.loads(WORKFLOW.read_text()), object_info), DEMO_SIZE, DEMO_FRAMES, trained=True)
    changes = {"CreateVideo": {"fps": float(FPS)}, "DiffTrackTrackPoints": {"points": json.dumps(points),
                                                                           "frames_per_chunk": 13}}
    for node in prompt.values():
        node["inputs"].update(changes.get(node["class_type"], {}))
    return prompt


def score(npz_path: Path) -> dict:
    """TAP-Vid scores (percent, query-first) of the written npz against the clip's exact tracks."""
    import torch

    from difftrack_pack.ditcorr.metrics import tapvid_metrics

    found, truth = np.load(npz_path), np.load(DEMO_TRUTH)
    metrics = tapvid_metrics(torch.from_numpy(found["tracks"]), ~torch.from_numpy(found["occluded"]),
                             torch.from_numpy(truth["tracks"]), ~torch.from_numpy(truth["occluded"]),
                             torch.from_numpy(truth["query_frames"]), "first")
    return {name: round(100 * float(value), 2) for name, value in metrics.items() if name in ("delta_avg", "aj", "oa")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo_output"))
    parser.add_argument("--gpu", action="store_true", help="let ComfyUI use the GPU (default: CPU)")
    parser.add_argument("--write-clip", action="store_true", help="re-render assets/demo/ (maintainers)")
    args = parser.parse_args()
    if args.write_clip:
        write_clip()
        return
    if find_comfyui() is None:
        raise SystemExit("ComfyUI not found: set COMFYUI_PATH to a ComfyUI (>= 0.8.0) checkout.")
    started = time.time()
    base = Path(tempfile.mkdtemp(prefix="difftrack_demo_"))
    first_frame = np.load(DEMO_TRUTH)["tracks"][:, 0]
    points = [{"x": round(float(x), 2), "y": round(float(y), 2)} for x, y in first_frame]
    server = start_server(base, trained=True, i2v=False, cpu=not args.gpu)
    try:
        entry = server.run(demo_prompt(server.get("/object_info"), points))
    finally:
        server.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    written = {}
    for suffix in (".mp4", ".json", ".npz", ".csv"):
        for path in server.output_files(entry, suffix):
            written[suffix] = str(shutil.copy(path, args.out / path.name))
    shutil.rmtree(base, ignore_errors=True)
    print(json.dumps({"video": written[".mp4"], "tracks": written[".json"], "points": len(points), "frames": DEMO_FRAMES,
                      "scores_vs_exact_tracks": score(Path(written[".npz"])), "seconds": round(time.time() - started, 1)}))


if __name__ == "__main__":
    main()
