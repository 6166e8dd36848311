"""A ComfyUI server run headless on 127.0.0.1 with this pack installed, and shipped workflows turned into prompts.

Used by the demo (tools/demo.py), tools/build_workflows.py and the e2e tests
(through testbed.py). Standard library only: it drives a ComfyUI checkout as a
separate process.
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
UI_ONLY = {"MarkdownNote", "Note"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def install_pack(base: Path) -> None:
    """Lay out a ComfyUI base directory with this repository linked in as a custom node."""
    (base / "custom_nodes").mkdir(parents=True, exist_ok=True)
    (base / "custom_nodes" / "comfyui-difftrack").symlink_to(REPO, target_is_directory=True)


class ComfyServer:
    """`python main.py` of the ComfyUI at `comfyui`, serving the base directory `base` (models/, input/, output/)."""

    def __init__(self, comfyui: Path, base: Path, cpu: bool = True):
        self.comfyui, self.base, self.cpu = comfyui, base, cpu
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base / "server.log"
        self.process = None

    def start(self, timeout: float = 180.0) -> None:
        command = [sys.executable, str(self.comfyui / "main.py"), "--listen", "127.0.0.1", "--port", str(self.port),
                   "--base-directory", str(self.base), "--use-pytorch-cross-attention", "--disable-auto-launch"]
        self.process = subprocess.Popen(command + (["--cpu"] if self.cpu else []), cwd=self.comfyui,
                                        stdout=self.log_path.open("w"), stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited during start-up:\n{self.log()}")
            try:
                self.get("/system_stats")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
        raise RuntimeError(f"ComfyUI did not answer within {timeout:.0f} s:\n{self.log()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.loads(response.read())

    def post(self, path: str, payload) -> bytes:
        request = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read()

    def run(self, prompt: dict, timeout: float = 300.0) -> dict:
        """Queue an API-format prompt; return its history entry once done. Fails with the server's words."""
        try:
            prompt_id = json.loads(self.post("/prompt", {"prompt": prompt, "client_id": str(uuid.uuid4())}))["prompt_id"]
        except urllib.error.HTTPError as error:
            raise AssertionError(f"/prompt refused the workflow: {error.read().decode()}") from None
        deadline = time.time() + timeout
        while time.time() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history:
                entry = history[prompt_id]
                status = entry.get("status", {})
                if status.get("status_str") != "success":
                    raise AssertionError(f"workflow failed: {json.dumps(status.get('messages'), indent=1)[-4000:]}")
                return entry
            time.sleep(0.3)
        raise AssertionError(f"workflow did not finish within {timeout:.0f} s:\n{self.log()}")

    def output_path(self, item: dict) -> Path:
        """Where a file a history entry lists ({"filename", "subfolder", "type"}) lies: the output folder, or the temp
        folder for node previews."""
        return self.base / item.get("type", "output") / item.get("subfolder", "") / item["filename"]

    def output_files(self, entry: dict, suffix: str) -> list[Path]:
        """Paths of the files ending in `suffix` that a finished prompt's history entry lists."""
        return [self.output_path(item) for node in entry["outputs"].values() for items in node.values()
                if isinstance(items, list)
                for item in items if isinstance(item, dict) and str(item.get("filename", "")).endswith(suffix)]


def input_specs(info: dict) -> list[tuple[str, list]]:
    """(name, spec) of every input of a node's /object_info entry, in the frontend's order."""
    return [(name, spec) for section in ("required", "optional") for name, spec in info["input"].get(section, {}).items()]


def is_widget(spec: list) -> bool:
    kind, options = spec[0], spec[1] if len(spec) > 1 else {}
    return (isinstance(kind, list) or kind in WIDGET_TYPES) and not options.get("forceInput", False)


def widget_inputs(info: dict):
    """(name, type, options) of a node's widget inputs, in the order the frontend stores their values."""
    for name, spec in input_specs(info):
        if is_widget(spec):
            yield name, spec[0], spec[1] if len(spec) > 1 else {}


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """A shipped (UI-format) workflow as the prompt /prompt takes: {id: {class_type, inputs}}.

    Handles what the shipped workflows use: widgets (with control-after-generate
    values skipped) and links; notes are dropped. No subgraphs, reroutes or primitives."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in UI_ONLY:
            continue
        values, inputs = list(node.get("widgets_values", [])), {}
        for name, _, options in widget_inputs(object_info[node["type"]]):
            inputs[name] = values.pop(0)
            if options.get("control_after_generate"):
                values.pop(0)
        for slot in node.get("inputs", []):
            if slot.get("link") is not None:
                _, source, source_slot, *_ = links[slot["link"]]
                inputs[slot["name"]] = [str(source), source_slot]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt
