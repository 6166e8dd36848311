"""Test tiers: core (always), host (real ComfyUI classes), e2e (a real ComfyUI server).

ComfyUI is found at $COMFYUI_PATH, else as the parent of custom_nodes/ holding
this pack, else at $HOME/ComfyUI. Without it, host and e2e tests are not
collected and one line says so.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # test helpers: locate, hostlib
from locate import COMFYUI, REPO  # noqa: E402

sys.path.insert(0, str(REPO))  # the host-free core package `ditcorr` (never `nodes`: ComfyUI owns that name)

collect_ignore = [] if COMFYUI else ["host", "e2e", "browser"]
NO_HOST_LINE = ("!!! HOST, E2E AND BROWSER TESTS SKIPPED: no ComfyUI found (set COMFYUI_PATH, install the pack under "
                "<ComfyUI>/custom_nodes, or put ComfyUI at ~/ComfyUI). Only core tests ran. !!!")


def pytest_report_header(config):
    return f"ComfyUI host: {COMFYUI}" if COMFYUI else NO_HOST_LINE


def pytest_terminal_summary(terminalreporter):
    if COMFYUI is None:
        terminalreporter.write_line(NO_HOST_LINE, red=True, bold=True)


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory):
    """One real ComfyUI server for the session (e2e and browser tiers)."""
    from comfy_server import start_server

    server = start_server(tmp_path_factory.mktemp("comfy_base"))
    yield server
    server.stop()
