"""Browser tier: the real ComfyUI frontend in Debian's Chromium, driven by Playwright (no browser download)."""
import os
from pathlib import Path

import pytest

from difftrack_devkit.host import REPO

CHROMIUM = Path("/usr/bin/chromium")
# As the workplace's probe starts Chromium: a closed network makes background services fail loudly otherwise.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def artifacts() -> Path:
    folder = Path(os.environ.get("DIFFTRACK_ARTIFACTS", REPO / "test-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module", params=["classic", "vue"])
def renderer(request) -> str:
    """The frontend's two node renderers: the LiteGraph canvas and the Vue node components."""
    return request.param


@pytest.fixture(scope="module")
def page(comfy_server, renderer):
    if not CHROMIUM.exists():
        missing = "Debian's chromium is not installed (apt-get install chromium)"
        if os.environ.get("CI") == "true":  # CI installs it: a skipped tier there would hide a broken frontend path
            pytest.fail(f"CI=true but {missing}: the browser tier cannot run.")
        pytest.skip(f"!!! BROWSER TESTS SKIPPED: {missing} !!!")
    from playwright.sync_api import sync_playwright

    # A fresh user: skip the first-run template browser; model files are absent on purpose (the missing-nodes
    # warning, which the tests look for, stays on).
    comfy_server.post("/settings", {"Comfy.TutorialCompleted": True, "Comfy.Workflow.ShowMissingModelsWarning": False,
                                    "Comfy.VueNodes.Enabled": renderer == "vue"})
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(comfy_server.url)
        page.wait_for_function("() => window.app && window.app.graph && window.app.extensions?.length", timeout=120_000)
        yield page
        browser.close()
