"""The README's run command: the shipped tracking workflow, headless, on the tiny trained models and the bundled clip."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import av
from difftrack_devkit.host import REPO, find_comfyui


def test_demo_tracks_the_bundled_clip_on_cpu_in_under_two_minutes(tmp_path):
    started = time.time()
    result = subprocess.run([sys.executable, "tools/demo.py", "--out", str(tmp_path / "out")], cwd=REPO, text=True,
                            capture_output=True, env={**os.environ, "COMFYUI_PATH": str(find_comfyui())}, timeout=300)
    seconds = time.time() - started
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert seconds < 120, f"the demo took {seconds:.0f} s"
    with av.open(summary["video"]) as container:
        assert sum(1 for _ in container.decode(video=0)) == summary["frames"] == 13
    tracks = json.loads(Path(summary["tracks"]).read_text())
    assert len(tracks) == summary["points"] == 24 and all(len(track) == 13 for track in tracks)
    # The trained model really tracks: far above predicting no motion (about 20 on such clips, bench/quality.py).
    assert summary["scores_vs_exact_tracks"]["delta_avg"] > 40
