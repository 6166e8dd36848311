"""The shipped workflows: listed by the server, consistent with /object_info, and runnable through /prompt.

Each workflow is converted UI -> API by comfy-cli's maintained converter, fed by
the server's /object_info; real model files are swapped for the tiny test
models, the text encoder for Zero Conditioning, and sizes shrunk
(difftrack_devkit.testbed.tiny_prompt); then it runs.
"""
from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import av
import pytest
from comfy_cli.workflow_to_api import convert_ui_to_api
from difftrack_devkit.testbed import CLIP_FRAMES, tiny_prompt
from difftrack_devkit.server import UI_ONLY, ui_to_api, widget_inputs
from difftrack_devkit.host import REPO

WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
FILE_COMBOS = {"UNETLoader": "unet_name", "VAELoader": "vae_name", "CLIPLoader": "clip_name", "LoadVideo": "file",
               "CLIPVisionLoader": "clip_name", "LoraLoaderModelOnly": "lora_name"}


@pytest.fixture(scope="module")
def object_info(comfy_server):
    return comfy_server.get("/object_info")


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def test_workflows_are_shipped_and_listed_by_the_server(comfy_server):
    assert len(WORKFLOWS) == 9
    listed = comfy_server.get("/workflow_templates")
    assert sorted(listed["comfyui-difftrack"]) == sorted(path.stem for path in WORKFLOWS)
    for path in WORKFLOWS:  # the thumbnail the template browser asks for: same name, .jpg
        url = f"{comfy_server.url}/api/workflow_templates/comfyui-difftrack/{path.stem}.jpg"
        with urllib.request.urlopen(url, timeout=30) as response:
            served = response.read()
        assert served == path.with_suffix(".jpg").read_bytes() and served[:3] == b"\xff\xd8\xff"  # a JPEG


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_matches_object_info(path, object_info):
    workflow = load(path)
    nodes = {node["id"]: node for node in workflow["nodes"]}
    for node in nodes.values():
        if node["type"] in UI_ONLY:
            continue
        assert node["type"] in object_info, f"{path.name}: unknown node type {node['type']}"
        info = object_info[node["type"]]
        values = list(node["widgets_values"])
        for name, kind, options in widget_inputs(info):
            value = values.pop(0)
            if options.get("control_after_generate"):
                assert values.pop(0) in ("fixed", "increment", "decrement", "randomize")
            choices = kind if isinstance(kind, list) else options.get("options")
            if FILE_COMBOS.get(node["type"]) == name:  # a file the user downloads or uploads
                listed = [model["name"] for model in node["properties"].get("models", [])]
                assert isinstance(value, str) and value and (node["type"] == "LoadVideo" or value in listed)
            elif choices is not None:
                assert value in choices, f"{path.name}: {node['type']}.{name} = {value!r} not in {choices}"
            elif kind in ("INT", "FLOAT"):
                assert options.get("min", value) <= value <= options.get("max", value), f"{node['type']}.{name} = {value}"
            elif kind == "BOOLEAN":
                assert isinstance(value, bool)
            else:
                assert isinstance(value, str)
        assert not values, f"{path.name}: {node['type']} has {len(values)} extra widget values"
    for link_id, source, slot, target, target_slot, kind in workflow["links"]:
        out_type = object_info[nodes[source]["type"]]["output"][slot]
        in_name = nodes[target]["inputs"][target_slot]["name"]
        in_spec = next(spec for section in ("required", "optional")
                       for name, spec in object_info[nodes[target]["type"]]["input"].get(section, {}).items() if name == in_name)
        assert kind == out_type == in_spec[0], f"{path.name}: link {link_id} {out_type} -> {in_name} ({in_spec[0]})"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_own_converter_matches_comfy_cli(path, object_info):
    """The demo's converter (tools/headless.py) gives the prompt comfy-cli's maintained converter gives."""
    reference = convert_ui_to_api(load(path), object_info)
    assert ui_to_api(load(path), object_info) == {key: {"class_type": node["class_type"], "inputs": node["inputs"]}
                                                  for key, node in reference.items()}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_runs(path, comfy_server, object_info):
    prompt = tiny_prompt(convert_ui_to_api(load(path), object_info))
    outputs = comfy_server.run(prompt)["outputs"]
    videos = [entry for node in outputs.values() for entry in node.get("images", []) if entry["filename"].endswith(".mp4")]
    expected = sum(node["class_type"] == "SaveVideo" for node in prompt.values())
    assert len(videos) == expected >= 1
    latent_frames = 1 + (CLIP_FRAMES - 1) // 4  # Motion Flow's picture has a frame per latent frame (Wan's VAE)
    for entry in videos:
        with av.open(str(comfy_server.output_path(entry))) as container:
            count = sum(1 for _ in container.decode(video=0))
        assert count == (latent_frames if entry["filename"].startswith("motion_flow") else CLIP_FRAMES), entry
    for node in outputs.values():
        for entry in node.get("tracks", []):
            if entry["filename"].endswith(".json"):
                tracks = json.loads(comfy_server.output_path(entry).read_text())
                assert tracks and all(len(track) == CLIP_FRAMES for track in tracks)
