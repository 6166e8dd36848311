"""E2E tier: one real ComfyUI server for the session."""
import pytest
from comfy_server import start_server


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("comfy_base"))
    yield server
    server.stop()
