"""Test tiers: core (always), host (real ComfyUI classes), e2e (a real ComfyUI server).

ComfyUI is found at $COMFYUI_PATH, else as the parent of custom_nodes/ holding
this pack, else at $HOME/ComfyUI. Without it, host and e2e tests are not
collected and one line says so.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # test helpers: locate, hostlib
from locate import COMFYUI, REPO  # noqa: E402

sys.path.insert(0, str(REPO))  # the host-free core package `ditcorr` (never `nodes`: ComfyUI owns that name)

collect_ignore = [] if COMFYUI else ["host", "e2e"]
NO_HOST_LINE = ("!!! HOST AND E2E TESTS SKIPPED: no ComfyUI found (set COMFYUI_PATH, install the pack under "
                "<ComfyUI>/custom_nodes, or put ComfyUI at ~/ComfyUI). Only core tests ran. !!!")


def pytest_report_header(config):
    return f"ComfyUI host: {COMFYUI}" if COMFYUI else NO_HOST_LINE


def pytest_terminal_summary(terminalreporter):
    if COMFYUI is None:
        terminalreporter.write_line(NO_HOST_LINE, red=True, bold=True)
