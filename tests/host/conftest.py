"""Host tier: real ComfyUI model classes at tiny sizes, on CPU (or GPU where present)."""
import pytest
import torch

from difftrack_devkit.host import find_comfyui, load_host

load_host(find_comfyui())


@pytest.fixture(autouse=True)
def like_comfyui_executor():
    """ComfyUI runs every node under torch.inference_mode(); so do the host tests."""
    with torch.inference_mode():
        yield


@pytest.fixture(autouse=True)
def scratch_folders(tmp_path, monkeypatch):
    """Files nodes save (outputs, previews) go to the test's own folder, never into the ComfyUI checkout."""
    import folder_paths

    monkeypatch.setattr(folder_paths, "output_directory", str(tmp_path / "output"))
    monkeypatch.setattr(folder_paths, "temp_directory", str(tmp_path / "temp"))
