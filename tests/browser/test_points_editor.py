"""The real frontend: every shipped workflow loads; the points editor edits points; a tracking run shows previews.

Screenshots go to test-artifacts/ (or $DIFFTRACK_ARTIFACTS).
"""
from __future__ import annotations

import json

import pytest
from difftrack_devkit.testbed import CLIP, CLIP_SIZE, TINY_VAE, TINY_WAN
from difftrack_devkit.host import REPO

WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
TRACKING = REPO / "workflows" / "difftrack_track_points_wan21.json"
FRAME = (832, 480)  # the shipped workflows' frame size, which the editor assumes before it has seen a frame
NODE = "window.app.graph.nodes.find(n => n.type === 'DiffTrackTrackPoints')"


def load(page, path) -> None:
    page.evaluate("async (workflow) => { await window.app.loadGraphData(workflow); }", json.loads(path.read_text()))
    page.wait_for_timeout(500)


def points(page) -> list[dict]:
    return json.loads(page.evaluate(f"() => {NODE}.widgets.find(w => w.name === 'points').value"))


def editor_on_screen(page, points_text: str):
    """Load the tracking workflow with `points_text`, the editor at scale 1 in view; (x, y) of a frame fraction."""
    load(page, TRACKING)
    page.evaluate(f"(text) => {{ const node = {NODE}; node.widgets.find(w => w.name === 'points').value = text;"
                  " node.difftrackEditor.draw(); window.app.canvas.ds.scale = 1; window.app.canvas.centerOnNode(node);"
                  " window.app.canvas.setDirty(true, true); }", points_text)
    page.wait_for_timeout(300)
    box = page.locator(".difftrack-points-editor canvas").first.bounding_box()
    assert box and box["width"] > 50, "the editor is not on screen"
    return lambda fx, fy: (box["x"] + fx * box["width"], box["y"] + fy * box["height"])


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_loads_without_missing_nodes(page, renderer, path, artifacts):
    load(page, path)
    unknown = page.evaluate("""() => window.app.graph.nodes
        .filter(n => !['MarkdownNote', 'Note'].includes(n.type) && n.constructor.comfyClass !== n.type)
        .map(n => n.type)""")
    assert unknown == []
    assert page.get_by_text("Missing Node Types").count() == 0
    page.screenshot(path=artifacts / f"{renderer}_workflow_{path.stem}.png")


def test_points_editor_adds_moves_and_deletes_points(page, renderer, artifacts):
    at = editor_on_screen(page, "[]")
    clicks = [(0.25, 0.3), (0.5, 0.5), (0.75, 0.7)]
    for fx, fy in clicks:
        page.mouse.click(*at(fx, fy))
    stored = points(page)
    assert len(stored) == 3
    for point, (fx, fy) in zip(stored, clicks):
        assert abs(point["x"] - fx * FRAME[0]) <= 12 and abs(point["y"] - fy * FRAME[1]) <= 12 and point["t"] == 0
    page.screenshot(path=artifacts / f"{renderer}_editor_three_points.png")

    page.mouse.move(*at(0.5, 0.5))  # drag the middle point
    page.mouse.down()
    page.mouse.move(*at(0.6, 0.4), steps=5)
    page.mouse.up()
    assert abs(points(page)[1]["x"] - 0.6 * FRAME[0]) <= 12 and abs(points(page)[1]["y"] - 0.4 * FRAME[1]) <= 12
    page.mouse.click(*at(0.6, 0.4), button="right")  # and delete it
    assert len(points(page)) == 2


def test_points_editor_leaves_malformed_text_alone_and_says_so(page, renderer, artifacts):
    malformed = '[{"x": 100, "y": 80}, {"x": 3'  # half-typed
    at = editor_on_screen(page, malformed)
    page.mouse.click(*at(0.5, 0.5))
    page.mouse.click(*at(0.5, 0.5), button="right")
    assert page.evaluate(f"() => {NODE}.widgets.find(w => w.name === 'points').value") == malformed
    assert "Not a JSON list of points" in page.evaluate(f"() => {NODE}.difftrackEditor.canvas.title")
    page.screenshot(path=artifacts / f"{renderer}_editor_malformed_points.png")


def test_a_drag_ends_when_released_outside_the_editor(page, renderer):
    at = editor_on_screen(page, json.dumps([{"x": FRAME[0] // 2, "y": FRAME[1] // 2, "t": 0}]))
    page.mouse.move(*at(0.5, 0.5))
    page.mouse.down()
    page.mouse.move(*at(0.5, 1.6), steps=6)  # out of the canvas, below it
    page.mouse.up()
    released = points(page)[0]
    assert released["y"] == FRAME[1] - 1  # held at the frame's edge, never outside the frame
    page.mouse.move(*at(0.2, 0.2), steps=6)  # hovering back without a button must not move the point
    assert points(page)[0] == released
    assert page.evaluate(f"() => {NODE}.difftrackEditor.dragging") == -1


def test_points_editor_shows_a_picked_frame_before_any_run(page, renderer, artifacts, tmp_path):
    from PIL import Image

    load(page, TRACKING)
    still = tmp_path / "still.png"
    Image.new("RGB", (320, 180), (200, 120, 40)).save(still)
    page.locator(".difftrack-points-editor input[type=file]").first.set_input_files(str(still))
    page.wait_for_function(f"() => {NODE}.difftrackEditor.frame?.naturalWidth === 320", timeout=10_000)
    page.screenshot(path=artifacts / f"{renderer}_editor_picked_frame.png")


def on_tiny_models(page, seed: int) -> None:
    """The loaded workflow moved onto the tiny test models and the clip, in the page (as a user would edit it):
    loaders, video, frame size, Track Points' chunking, seed and points scaled to the clip."""
    sx, sy = CLIP_SIZE / FRAME[0], CLIP_SIZE / FRAME[1]
    page.evaluate("""([tinyWan, tinyVae, clip, size, sx, sy, seed]) => {
        const set = (type, name, value) => window.app.graph.nodes.filter(n => n.type === type)
            .forEach(n => { n.widgets.find(w => w.name === name).value = value; });
        set('UNETLoader', 'unet_name', tinyWan);
        set('VAELoader', 'vae_name', tinyVae);
        set('LoadVideo', 'file', clip);
        set('ImageScale', 'width', size);
        set('ImageScale', 'height', size);
        set('DiffTrackTrackPoints', 'frames_per_chunk', 5);
        set('DiffTrackTrackPoints', 'seed', seed);
        set('DiffTrackCorrespondenceAnalysis', 'seed', seed);
        const widget = window.app.graph.nodes.find(n => n.type === 'DiffTrackTrackPoints').widgets.find(w => w.name === 'points');
        widget.value = JSON.stringify(JSON.parse(widget.value).map(p => ({...p, x: p.x * sx, y: p.y * sy})));
    }""", [TINY_WAN, TINY_VAE, CLIP, CLIP_SIZE, sx, sy, seed])


def output_image(page, node_type: str, timeout: int = 120_000) -> str:
    """The file name of the first image a node of `node_type` shows after the queued run."""
    return page.wait_for_function("""(type) => {
        const node = window.app.graph.nodes.find(n => n.type === type);
        const output = window.app.nodeOutputs?.[String(node.id)] ?? window.app.nodeOutputs?.[node.id];
        return output?.images?.[0]?.filename ?? node.imgs?.[0]?.src ?? null;
    }""", arg=node_type, timeout=timeout).json_value()


def show_node(page, node_type: str) -> None:
    page.evaluate("(type) => { const node = window.app.graph.nodes.find(n => n.type === type);"
                  " window.app.canvas.centerOnNode(node); window.app.canvas.setDirty(true, true); }", node_type)
    page.wait_for_timeout(500)


def test_tracking_run_shows_the_frame_and_the_animated_preview(page, renderer, artifacts):
    load(page, TRACKING)
    on_tiny_models(page, seed=["classic", "vue"].index(renderer))  # a prompt per renderer: cached runs send no previews
    page.evaluate("async () => { await window.app.queuePrompt(0); }")
    page.wait_for_function(f"() => {NODE}.difftrackEditor.frame !== null", timeout=120_000)
    assert page.evaluate(f"() => [{NODE}.difftrackEditor.frame.naturalWidth, {NODE}.difftrackEditor.frame.naturalHeight]") \
        == [CLIP_SIZE, CLIP_SIZE]
    assert ".webp" in output_image(page, "DiffTrackDrawTracks", timeout=60_000)
    show_node(page, "DiffTrackTrackPoints")
    page.screenshot(path=artifacts / f"{renderer}_tracking_run_previews.png")


def test_analysis_run_shows_its_heat_maps_and_feeds_track_points(page, renderer, artifacts):
    """The analysis workflow queued from the frontend: Correspondence Analysis previews its picture in the node (the
    screenshot is how it looks at the size ComfyUI shows it) and its block and σ reach Track Points, whose tracks
    are drawn."""
    load(page, REPO / "workflows" / "difftrack_correspondence_analysis_wan21.json")
    on_tiny_models(page, seed=2 + ["classic", "vue"].index(renderer))
    page.evaluate("async () => { await window.app.queuePrompt(0); }")
    assert "difftrack_analysis" in output_image(page, "DiffTrackCorrespondenceAnalysis", timeout=240_000)
    assert ".webp" in output_image(page, "DiffTrackDrawTracks", timeout=120_000)
    show_node(page, "DiffTrackCorrespondenceAnalysis")
    page.screenshot(path=artifacts / f"{renderer}_analysis_run_preview.png")


def test_template_browser_shows_each_workflows_thumbnail(page, renderer, artifacts):
    """Workflow -> Browse Templates -> comfyui-difftrack: every shipped workflow's card shows its own thumbnail
    (workflows/<name>.jpg, 512 px square, written by tools/build_workflows.py --thumbnails from a real run)."""
    page.evaluate("() => window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("comfyui-difftrack", exact=True).first.click()  # the category (node badges say it too)
    names = [path.stem for path in WORKFLOWS]
    page.evaluate("() => { window.difftrackCards = {}; }")
    # Cards below the dialog's fold load their image when scrolled to: each poll scrolls to one not loaded yet.
    shown = page.wait_for_function("""(names) => {
        const cards = window.difftrackCards, images = [...document.querySelectorAll('[role=dialog] img')];
        for (const image of images) {
            let card = image;
            for (let up = 0; up < 8 && card && !names.some(n => card.textContent.includes(n)); up++) card = card.parentElement;
            const name = names.find(n => card?.textContent.includes(n));
            if (name && image.complete && image.naturalWidth > 0) cards[name] = [image.naturalWidth, image.naturalHeight];
        }
        if (Object.keys(cards).length === names.length) return cards;
        const waiting = images.find(image => !image.complete || image.naturalWidth === 0) ?? images[images.length - 1];
        waiting?.scrollIntoView({block: 'center'});
        return null;
    }""", arg=names, timeout=30_000).json_value()
    assert shown == {name: [512, 512] for name in names}
    page.screenshot(path=artifacts / f"{renderer}_template_browser.png")
    page.keyboard.press("Escape")
