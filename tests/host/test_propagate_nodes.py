"""Propagate Mask on a tiny real Wan and VAE, on oracle features with a known answer, and its bad-input messages."""
from __future__ import annotations

import json

import comfy.sd
import comfy.utils
import nodes as comfy_nodes
import pytest
import torch

from difftrack_devkit.models import random_model, random_wan_vae
from difftrack_devkit.nodes import run_node
from difftrack_devkit.oracle_scene import Scene
from difftrack_devkit.testbed import TRAINED, TRAINED_DIT, TRAINED_VAE
from difftrack_pack.ditcorr import CaptureKey, DitFeatures
from difftrack_pack.ditcorr.propagate import MAX_OBJECTS
from difftrack_pack.ditcorr.synthetic import Scene as SyntheticScene
from difftrack_pack.nodes.capture_nodes import ExtractVideoFeatures
from difftrack_pack.nodes.propagate_nodes import PropagateMask

FRAMES, SIZE = 9, 64


@pytest.fixture(scope="module")
def video():
    return random_model("wan"), random_wan_vae(), torch.rand(FRAMES, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(0))


def square_mask(frames: int = 1, size: int = SIZE) -> torch.Tensor:
    mask = torch.zeros(frames, size, size)
    mask[:, 16:40, 20:44] = 1
    return mask


def propagate(**inputs):
    return run_node(PropagateMask, **{"frames_per_chunk": 5, "mask": square_mask(), **inputs}).args


def oracle_truth(scene: Scene) -> torch.Tensor:
    """[T, H, W] layer of every pixel centre of the oracle scene (0 background, 1 and 2 its sprites)."""
    height, width = scene.frame_size
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    return torch.stack([scene.surface(xs.flatten(), ys.flatten(), float(t))[0].reshape(height, width)
                        for t in range(scene.frames)])


def test_oracle_masks_propagate_to_the_true_masks_with_prompts_inside_them():
    """Features built from the ground truth of a synthetic scene (a panning background, two moving sprites): the
    sprites' frame-4 masks, given as a label image, come back at pixels (from 4-px tokens) at IoU >= 0.9 on average and >= 0.8 on every frame, and every frame's
    positive point lies inside its object (the true and the propagated mask), every negative one on the propagated
    background, every box around the propagated mask."""
    scene = Scene()
    positions = tuple(float(t) for t in range(scene.frames))
    features = DitFeatures(scene.frame_size, scene.frames, [(4.0, *[p for p in positions if p != 4.0])], "oracle",
                           {CaptureKey(0, 0, "cond", 0, 0): scene.descriptors([4.0, *[p for p in positions if p != 4.0]])})
    truth = oracle_truth(scene)
    label_image = (truth[4:5].float() / 255)  # values 1/255 and 2/255: two objects
    masks, object_masks, preview, prompts = run_node(
        PropagateMask, mask=label_image, mask_objects="values", annotated_frame=4, features=features,
        images=scene.render()).args
    assert masks.shape == truth.shape and object_masks.shape == (2 * scene.frames, *scene.frame_size)
    assert preview.shape == (scene.frames, *scene.frame_size, 3)
    prompts = json.loads(prompts)
    for layer in (1, 2):
        ours = object_masks[(layer - 1) * scene.frames:layer * scene.frames] > 0.5
        theirs = truth == layer
        iou = (ours & theirs).flatten(1).sum(1) / (ours | theirs).flatten(1).sum(1)
        assert iou.mean() >= 0.9 and iou.min() >= 0.8, iou
        for t in range(scene.frames):
            entry = prompts[t]["objects"][layer - 1]
            (positive,), (negative,) = entry["positive"], entry["negative"]
            assert theirs[t, positive["y"], positive["x"]] and ours[t, positive["y"], positive["x"]]
            assert masks[t, negative["y"], negative["x"]] == 0
            x0, y0, x1, y1 = entry["box"]
            assert ours[t, y0:y1 + 1, x0:x1 + 1].sum() == ours[t].sum()
    assert torch.equal(masks[4], (truth[4] > 0).float())  # the annotated frame: the given masks


def test_propagation_from_the_model_matches_propagation_from_its_extracted_features(video):
    """The node's own extraction (one forward per run of frames) and Extract Features' output give the same masks
    when both see the whole video in one forward; with runs of 5 frames every output still has every frame, the
    annotated frame its given mask."""
    model, vae, images = video
    whole = propagate(model=model, vae=vae, images=images, annotated_frame=3, frames_per_chunk=0)
    (features,) = run_node(ExtractVideoFeatures, model=model, vae=vae, images=images, blocks="auto", sigma=0.1,
                           frames_per_chunk=0, reference_frame=3).args
    extracted = propagate(features=features, images=images, annotated_frame=3, blocks="auto")
    assert torch.equal(whole[0], extracted[0]) and whole[3] == extracted[3]
    masks, object_masks, preview, prompts = propagate(model=model, vae=vae, images=images, annotated_frame=3)
    assert masks.shape == (FRAMES, SIZE, SIZE) and object_masks.shape == (FRAMES, SIZE, SIZE)
    assert torch.equal(masks[3], square_mask()[0]) and len(json.loads(prompts)) == FRAMES
    assert model.model_options.get("transformer_options", {}).get("patches_replace") in (None, {})  # not left patched


def test_upscale_propagates_as_features_of_frames_enlarged_by_core_with_the_radius_scaled():
    """upscale 2 equals what a user wires by hand: core's Upscale Image By (bicubic, 2x) into Extract Features, and
    Propagate Mask on the original frames with twice the radius. On the trained tiny DiT and a synthetic clip (a
    seed nothing else draws), so that masks do propagate: they come at the frames' size, on every frame, and differ
    from those of the unenlarged frames. With features connected, upscale is refused with what to do instead."""
    model = comfy.sd.load_diffusion_model(str(TRAINED / TRAINED_DIT))
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(TRAINED / TRAINED_VAE)))
    scene = SyntheticScene(515_151, (128, 128), 7)
    images, truth = scene.render(), scene.labels()
    sprite = max((label for label in truth[0].unique().tolist() if label > 0), key=lambda label: (truth[0] == label).sum())
    inputs = {"images": images, "mask": (truth[0:1] == sprite).float(), "blocks": "6", "sigma": 0.5, "frames_per_chunk": 0}
    ours = propagate(model=model, vae=vae, upscale=2, radius=4, **inputs)
    (big,) = comfy_nodes.ImageScaleBy().upscale(images, "bicubic", 2.0)
    (features,) = run_node(ExtractVideoFeatures, model=model, vae=vae, images=big, blocks="6", sigma=0.5,
                           frames_per_chunk=0, reference_frame=0).args
    by_hand = propagate(features=features, radius=8, **{**inputs, "blocks": "auto"})
    assert ours[0].shape == (7, 128, 128) and torch.equal(ours[0], by_hand[0]) and ours[3] == by_hand[3]
    assert ours[0].flatten(1).sum(1).min() > 0
    assert not torch.equal(ours[0], propagate(model=model, vae=vae, radius=4, **inputs)[0])
    with pytest.raises(ValueError, match="enlarge the images for Extract Features"):
        propagate(features=features, upscale=2, **{**inputs, "blocks": "auto"})


@pytest.mark.parametrize("inputs, message", [
    (dict(mask=square_mask(size=32)), "draw the mask on a frame of this video"),
    (dict(mask=torch.zeros(1, SIZE, SIZE)), "The mask is empty"),
    (dict(annotated_frame=FRAMES), "set it to the frame the mask was drawn on"),
    (dict(mask=(torch.arange(SIZE * SIZE).reshape(1, SIZE, SIZE) % (MAX_OBJECTS + 8) + 1).float() / 255,
          mask_objects="values"), f"at most {MAX_OBJECTS} propagate at once"),
    (dict(model=None), "Connect either features"),
])
def test_bad_input_is_refused_with_a_message_that_says_what_to_change(video, inputs, message):
    model, vae, images = video
    with pytest.raises(ValueError, match=message):
        propagate(**{"model": model, "vae": vae, "images": images, **inputs})


def test_features_without_the_annotated_frame_in_every_forward_are_refused(video):
    model, vae, images = video
    (features,) = run_node(ExtractVideoFeatures, model=model, vae=vae, images=images, blocks="auto", sigma=0.1,
                           frames_per_chunk=4, reference_frame=0).args
    with pytest.raises(ValueError, match="with that frame as reference_frame"):
        propagate(features=features, images=images, annotated_frame=5, blocks="auto")
