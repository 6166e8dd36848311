"""Bad input gets a clear error; other nodes' patches are kept and chained."""
from __future__ import annotations

import pytest
import torch
from comfy_extras.nodes_easycache import EasyCacheNode

from difftrack_devkit.models import random_model, sample
from difftrack_devkit.nodes import run_node

from difftrack_pack.nodes.capture_nodes import AttentionCapture, CapturedFeatures


def capture(model, blocks="1", steps="all", sigma_low=0.0, sigma_high=1000.0, branches="cond"):
    return run_node(AttentionCapture, model=model, blocks=blocks, steps=steps, sigma_low=sigma_low, sigma_high=sigma_high,
                    branches=branches, storage_dtype="float32", storage="cpu").args


def collect(handle, latent):
    return run_node(CapturedFeatures, capture=handle, latent={"samples": latent}).args[0]


def test_unsupported_family_names_the_supported_ones():
    with pytest.raises(ValueError, match=r"MiniTrainDIT is not a supported video DiT \(Cosmos-Predict2 .*no patches_replace"
                                         r".*\)\. Supported: HunyuanVideo 1/1.5, Kandinsky 5, LTXV, Mochi, Wan 2.1/2.2\."):
        capture(random_model("cosmos_predict2"))


@pytest.mark.parametrize("blocks, message", [
    ("7", r"Block 7 is out of range: this Wan 2.1/2.2 model has 4 blocks, 0-3\."),
    ("1, x", r"Cannot read block 'x'"),
    ("", r"Choose at least one block \(this Wan 2.1/2.2 model has 4 blocks, 0-3\)"),
])
def test_bad_blocks(blocks, message):
    with pytest.raises(ValueError, match=message):
        capture(random_model("wan"), blocks=blocks)


def test_bad_sigma_range():
    with pytest.raises(ValueError, match=r"sigma_low \(0.9\) is above sigma_high \(0.1\): swap them"):
        capture(random_model("wan"), sigma_low=0.9, sigma_high=0.1)


def test_capture_that_saw_no_forward_says_so():
    model = random_model("wan")
    _, handle = capture(model)
    with pytest.raises(RuntimeError, match="saw no forward.*connect Attention Capture's MODEL to the sampler"):
        collect(handle, sample(model, "wan"))  # sampled the unpatched model by mistake


def test_steps_outside_the_schedule_say_so():
    patched, handle = capture(random_model("wan"), steps="40")
    with pytest.raises(RuntimeError, match="saw no forward.*steps or σ range fall inside"):
        collect(handle, sample(patched, "wan", steps=2))


def test_steps_partly_outside_the_schedule_say_which():
    patched, handle = capture(random_model("wan"), steps="1, 7")
    with pytest.raises(RuntimeError, match=r"Steps \[7\] never ran inside the σ range: the sampler's schedule is shorter"):
        collect(handle, sample(patched, "wan", steps=2))


def test_step_cache_skipping_forwards_is_named():
    patched, handle = capture(random_model("wan"))
    cached = run_node(EasyCacheNode, model=patched, reuse_threshold=3.0).args[0]  # ComfyUI core's step cache
    with pytest.raises(RuntimeError, match=r"never reached block 1 at step \d+(, block 1 at step \d+)*: a step cache \(EasyCache"):
        collect(handle, sample(cached, "wan", steps=8, cfg=1.0))


def test_cond_only_run_has_no_uncond_rows():
    patched, handle = capture(random_model("wan"), branches="uncond")
    with pytest.raises(RuntimeError, match=r"no rows of the requested branches \['uncond'\].*cfg = 1"):
        collect(handle, sample(patched, "wan", cfg=1.0))


def test_existing_override_and_block_replacement_are_chained():
    model = random_model("wan")
    seen = {"override": 0, "replace": 0}

    def counting_override(func, *args, **kwargs):
        seen["override"] += 1
        return func(*args, **kwargs)

    def counting_replace(args, extra):
        seen["replace"] += 1
        return extra["original_block"](args)

    other = model.clone()
    other.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = counting_override
    other.set_model_patch_replace(counting_replace, "dit", "double_block", 1)
    plain = sample(other, "wan", seed=4)
    counted = dict(seen)
    seen.update(override=0, replace=0)

    patched, handle = capture(other)
    assert torch.equal(sample(patched, "wan", seed=4), plain)
    assert seen == counted and counted["replace"] == 2 and counted["override"] == 2 * 4 * 2  # steps x blocks x attn calls
    assert len(collect(handle, plain).captures) == 2 * 2  # steps x samples, cond only
