"""Per-frame encoding: batches and the 2D single-frame path against one `vae.encode` per frame; the cache."""
from __future__ import annotations

import gc

import comfy.model_management
import comfy.sd
import comfy.utils
import pytest
import torch
from comfy.ldm.wan import vae as wan21_vae
from comfy.ldm.wan import vae2_2 as wan22_vae

from difftrack_devkit.calls import CallCounter
from difftrack_devkit.models import randomize_, random_wan_vae
from difftrack_devkit.nodes import run_node
from difftrack_devkit.testbed import TRAINED, TRAINED_VAE
from difftrack_pack.nodes.encoding import (SINGLE_FRAME_2D, EncodingCache, encode_each_frame, encode_with_progress,
                                           single_frame_convolutions)
from difftrack_pack.nodes.track_nodes import TrackPoints

FRAMES = 7


def one_call_per_frame(vae, images: torch.Tensor) -> torch.Tensor:
    """Obviously correct: every frame through ComfyUI's own encode as a one-frame video."""
    return torch.cat([vae.encode(images[index:index + 1]) for index in range(images.shape[0])], dim=2)


def frames(size=(32, 48), count=FRAMES, seed=0) -> torch.Tensor:
    return torch.rand(count, *size, 3, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module", params=["tiny trained", "random, Wan 2.1 width 96"])
def vae(request):
    if request.param == "tiny trained":
        return comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(TRAINED / TRAINED_VAE)))
    return random_wan_vae(dim=96)  # the real Wan 2.1 VAE's architecture and width, random weights


@pytest.mark.parametrize("max_batch", [1, 3, 8])
def test_batched_per_frame_encoding_equals_one_encode_per_frame(vae, max_batch):
    images = frames()
    expected = one_call_per_frame(vae, images)
    got = encode_each_frame(vae, images, max_batch=max_batch)
    assert got.shape == expected.shape == (1, 16, FRAMES, 4, 6)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_odd_frame_sizes_are_cropped_as_comfyui_crops_them(vae):
    images = frames(size=(37, 50))
    torch.testing.assert_close(encode_each_frame(vae, images, max_batch=4), one_call_per_frame(vae, images),
                               rtol=1e-4, atol=1e-5)


def wan_vae(family: str) -> torch.nn.Module:
    if family == "wan2.1":
        model = wan21_vae.WanVAE(dim=8, z_dim=16, temperal_downsample=[False, True, True])
    else:  # the TI2V-5B VAE: patchified input, average-pooling shortcuts, 48 latent channels
        model = wan22_vae.WanVAE(dim=16, dec_dim=16, z_dim=48, temperal_downsample=[False, True, True])
    randomize_(model, seed=3)
    return model.eval()


@pytest.mark.parametrize("family", ["wan2.1", "wan2.2"])
@torch.no_grad()
def test_single_frame_2d_convolutions_equal_the_causal_3d_ones(family):
    model = wan_vae(family)
    assert f"{type(model).__module__}.{type(model).__qualname__}" in SINGLE_FRAME_2D
    clips = torch.rand(3, 3, 1, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1  # three one-frame clips
    expected = model.encode(clips)
    with single_frame_convolutions(model) as changed:
        got = model.encode(clips)
    assert changed >= 20  # every 3-tap and 1-tap causal convolution of the encoder (and the decoder, unused)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert not any("_conv_forward" in module.__dict__ for module in model.modules())  # restored
    assert torch.equal(model.encode(clips), expected)


@torch.no_grad()
def test_the_2d_path_refuses_longer_clips_and_restores_the_vae_on_errors():
    model = wan_vae("wan2.1")
    paddings = {name: module._padding for name, module in model.named_modules() if hasattr(module, "_padding")}
    with pytest.raises(RuntimeError, match="only runs one-frame clips"):
        with single_frame_convolutions(model):
            model.encode(torch.rand(1, 3, 5, 32, 32))  # frames 1-4 meet real frames, not padding: never silently
    assert {name: module._padding for name, module in model.named_modules() if hasattr(module, "_padding")} == paddings
    assert not any("_conv_forward" in module.__dict__ for module in model.modules())


def encoder_calls(vae) -> CallCounter:
    """Counts the VAE encoder's forwards (one per batch of frames) as counts["encoder"]."""
    return CallCounter({"encoder": vae.first_stage_model.encoder})


def test_progress_per_batch_and_interrupt():
    vae, images = random_wan_vae(), frames(count=FRAMES)
    updates = []
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: updates.append((value, total)))
    try:
        encode_with_progress(vae, images, "per_frame", cache=None)
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
    assert updates[-1] == (FRAMES, FRAMES) and len(updates) >= 1
    comfy.model_management.interrupt_current_processing(True)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            encode_with_progress(vae, images, "per_frame", cache=None)
    finally:
        comfy.model_management.interrupt_current_processing(False)


def test_cache_reuses_an_encoding_of_the_same_frames_and_vae_only():
    vae, images, cache = random_wan_vae(), frames(), EncodingCache(max_entries=2)
    calls = encoder_calls(vae)
    first = encode_with_progress(vae, images, "per_frame", cache)
    encoded = calls.counts["encoder"]
    assert encoded >= 1
    again = encode_with_progress(vae, images, "per_frame", cache)
    assert calls.counts["encoder"] == encoded and again[0] is first[0] and again[1] == first[1] and cache.hits == 1
    encode_with_progress(vae, images.clone(), "per_frame", cache)  # equal frames, another tensor: encoded again
    assert calls.counts["encoder"] == 2 * encoded
    other_vae = random_wan_vae(seed=1)
    other_calls = encoder_calls(other_vae)
    encode_with_progress(other_vae, images, "per_frame", cache)  # another VAE: not this cache entry
    assert other_calls.counts["encoder"] == encoded
    encode_with_progress(vae, images, "native", cache)  # another encoding
    assert calls.counts["encoder"] > 2 * encoded
    assert len(cache) == 2  # bounded: the oldest two went
    del images
    gc.collect()
    assert len(cache) == 0  # entries go with their frames


def test_a_propagate_mask_rerun_with_the_frames_enlarged_skips_enlarging_and_encoding():
    """The cache knows an encoding by the frames as given and the enlargement: another radius re-uses the 2x
    encoding (neither enlarged nor encoded again); upscale 1 on the same frames is another encoding."""
    from difftrack_devkit.models import random_model
    from difftrack_pack.nodes.encoding import ENCODING_CACHE
    from difftrack_pack.nodes.propagate_nodes import PropagateMask

    model, vae, images = random_model("wan"), random_wan_vae(seed=3), frames(size=(32, 32), count=5)
    mask = torch.zeros(1, 32, 32)
    mask[:, 8:24, 8:24] = 1
    calls = encoder_calls(vae)
    run_node(PropagateMask, model=model, vae=vae, images=images, mask=mask, upscale=2)
    encoded, hits = calls.counts["encoder"], ENCODING_CACHE.hits
    run_node(PropagateMask, model=model, vae=vae, images=images, mask=mask, upscale=2, radius=3)
    assert encoded >= 1 and calls.counts["encoder"] == encoded and ENCODING_CACHE.hits == hits + 1
    run_node(PropagateMask, model=model, vae=vae, images=images, mask=mask, upscale=1)
    assert calls.counts["encoder"] > encoded and ENCODING_CACHE.hits == hits + 1


def test_a_track_points_rerun_with_another_point_skips_the_encoding():
    from difftrack_devkit.models import random_model
    from difftrack_pack.nodes.encoding import ENCODING_CACHE

    model, vae, images = random_model("wan"), random_wan_vae(seed=2), frames(size=(64, 64), count=9)
    calls = encoder_calls(vae)
    run_node(TrackPoints, model=model, vae=vae, images=images, points="[[20, 30]]", frames_per_chunk=5)
    encoded = calls.counts["encoder"]
    hits = ENCODING_CACHE.hits
    run_node(TrackPoints, model=model, vae=vae, images=images, points="[[40, 10, 4]]", blocks="1",
             frames_per_chunk=5)
    assert encoded >= 1 and calls.counts["encoder"] == encoded and ENCODING_CACHE.hits == hits + 1
