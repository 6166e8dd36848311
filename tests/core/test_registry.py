"""Registry readiness: pyproject metadata, LICENSE, icon, and comfy-cli's own validation (offline)."""
import shutil
import subprocess
import tomllib

from difftrack_devkit.host import REPO


def test_pyproject_carries_the_registry_fields():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    meta, comfy = project["project"], project["tool"]["comfy"]
    for key in ("name", "version", "description", "license", "dependencies"):
        assert key in meta, key
    assert meta["name"] == "comfyui-difftrack" and meta["license"] == {"file": "LICENSE"}
    assert comfy["PublisherId"] and comfy["DisplayName"] and comfy["Icon"].endswith("docs/icon.png")
    assert (REPO / "docs" / "icon.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "GNU GENERAL PUBLIC LICENSE" in (REPO / "LICENSE").read_text()[:200]


def test_comfy_node_validate_passes():
    comfy = shutil.which("comfy")
    assert comfy, "comfy-cli is part of the test extra: pip install comfy-cli"
    result = subprocess.run([comfy, "--skip-prompt", "--no-enable-telemetry", "node", "validate"], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "checks passed" in result.stdout + result.stderr, result.stdout + result.stderr
