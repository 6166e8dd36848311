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


def test_pip_builds_the_repository_without_discovery_errors(tmp_path):
    """A developer's first `pip install .` must work: the wheel holds the pack as difftrack_pack and the dev kit."""
    import sys
    import zipfile

    result = subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation",
                             "-q", "-w", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for module in ("difftrack_pack/__init__.py", "difftrack_pack/ditcorr/track.py", "difftrack_pack/nodes/hooks.py",
                   "difftrack_pack/nodes/adapters/wan.py", "difftrack_devkit/host.py", "difftrack_bench/quality.py"):
        assert module in names, module
