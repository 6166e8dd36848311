"""How `.ci/run` gets a ComfyUI host: the user's own, else a writable copy of ../shared/host/ComfyUI, else a clear error."""
import stat
import subprocess
import sys

import pytest

from difftrack_devkit import host


def fake_comfyui(folder):
    (folder / "comfy").mkdir(parents=True)
    (folder / "comfy" / "model_management.py").write_text("")
    (folder / "main.py").write_text("")
    return folder


@pytest.fixture
def bare_machine(tmp_path, monkeypatch):
    """No COMFYUI_PATH, no ~/ComfyUI, no CI copy yet; the shared source where the test puts it."""
    monkeypatch.delenv("COMFYUI_PATH", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(host, "CI_COPY", tmp_path / "checkout" / ".host" / "ComfyUI")
    monkeypatch.setattr(host, "SHARED_HOST", tmp_path / "shared" / "host" / "ComfyUI")
    return tmp_path


def test_the_shared_source_is_copied_writable_when_no_host_is_found(bare_machine):
    shared = fake_comfyui(host.SHARED_HOST)
    for path in [*shared.rglob("*"), shared]:  # CI lays shared/ out without write bits
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    assert host.find_comfyui() is None
    copy = host.ensure_ci_host()
    assert copy == host.CI_COPY and (copy / "main.py").is_file()
    assert all(path.stat().st_mode & stat.S_IWUSR for path in [copy, *copy.rglob("*")])
    assert host.find_comfyui() == copy.resolve()  # later runs (and the tests) find the copy


def test_a_users_own_host_wins_over_the_copy(bare_machine, monkeypatch):
    fake_comfyui(host.SHARED_HOST)
    own = fake_comfyui(bare_machine / "my_comfyui")
    monkeypatch.setenv("COMFYUI_PATH", str(own))
    assert host.ensure_ci_host() == own.resolve() and not host.CI_COPY.exists()


def test_without_any_host_ci_fails_saying_why(bare_machine):
    with pytest.raises(SystemExit, match=r"no ComfyUI host: set COMFYUI_PATH .* is not there either, so host, e2e and "
                                         r"browser tests cannot run\."):
        host.ensure_ci_host()


def test_pytest_under_ci_refuses_to_run_without_a_host(tmp_path):
    """The same rule inside pytest: CI=true with no host is a usage error, not a green core-only run."""
    env = {"CI": "true", "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    code = ("import sys, pytest; from difftrack_devkit import host; "
            f"host.CI_COPY = host.Path({str(tmp_path / 'none')!r}); "
            f"sys.exit(pytest.main([{str(host.REPO / 'tests' / 'core' / 'test_selection.py')!r}, '-q']))")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                            cwd=host.REPO)
    assert result.returncode != 0
    assert "CI=true but no ComfyUI host" in result.stdout + result.stderr
