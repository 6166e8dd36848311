"""Cross-Attention Guidance on tiny real Wan and HunyuanVideo models."""
from __future__ import annotations

import math

import pytest
import torch
import comfy.model_management
import comfy.samplers

from difftrack_devkit.families import model_config
from difftrack_devkit.models import random_model, sample, text_conditioning
from difftrack_devkit.nodes import run_node

from difftrack_pack.ditcorr.guidance import cag_combine
from difftrack_pack.nodes.adapters import adapter_for
from difftrack_pack.nodes.cag import CrossAttentionGuidance, FrameLocalAttention
from difftrack_pack.nodes.cag_nodes import CAGGuider, CAGModelPatch, CAGSampler, ZeroConditioning
from difftrack_pack.nodes.extract import single_forward
from difftrack_pack.nodes.hooks import AttentionHook

ARCHS = ["wan", "hunyuan_video"]
BLOCKS = [1, 2]


class ReferenceAttention(AttentionHook):
    """Obviously correct frame-local attention: the full attention with a mask (renormalised) or the full softmax
    with cross-frame probabilities zeroed (published)."""

    def __init__(self, adapter, diffusion_model, blocks, published):
        super().__init__(adapter, diffusion_model, blocks)
        self.published = published

    def on_self_attention(self, call):
        q, k, v = call.q.float(), call.k.float(), call.v.float()
        length, frame_tokens = q.shape[2], call.forward.grid[1] * call.forward.grid[2]
        allow = torch.ones(length, length, dtype=torch.bool)
        for start in range(call.video.start, call.video.stop, frame_tokens):
            rows = slice(start, start + frame_tokens)
            allow[rows] = False
            allow[rows, rows] = True
            allow[rows, call.text] = True
        logits = q @ k.transpose(2, 3) / math.sqrt(q.shape[-1])
        mask = call.kwargs.get("mask")
        if mask is not None:
            logits = logits + mask.reshape(mask.shape[0], 1, 1, length).float()
        if self.published:
            out = (torch.softmax(logits, -1) * allow) @ v  # rows allowed everything (text, prefix) stay full attention
        else:
            out = torch.softmax(logits.masked_fill(~allow, float("-inf")), -1) @ v
        if not call.kwargs.get("skip_output_reshape", False):
            out = out.transpose(1, 2).reshape(out.shape[0], length, -1)
        return out.to(call.args[0].dtype)


def one_step(model, arch, sigma=0.6, cfg=3.0, batch=2):
    """The guided prediction at one sigma, through ComfyUI's CFGGuider (a sampler that calls the model once)."""
    channels, frames, height, width = model_config(arch).latent
    generator = torch.Generator().manual_seed(0)
    latent = torch.randn(batch, channels, frames, height, width, generator=generator)
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(text_conditioning(model, 1), text_conditioning(model, 2))
    guider.set_cfg(cfg)
    return guider.sample(torch.zeros_like(latent), latent, comfy.samplers.KSAMPLER(single_forward),
                         torch.tensor([sigma, 0.0]), seed=0, disable_pbar=True)


def hooked(model, hook_class, **options):
    diffusion_model = model.get_model_object("diffusion_model")
    patched = model.clone()
    hook_class(adapter_for(diffusion_model), diffusion_model, BLOCKS, **options).install(patched)
    return patched


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("variant", ["renormalised", "published"])
def test_frame_local_attention_in_the_model_equals_the_reference(arch, variant):
    model = random_model(arch)
    fast = one_step(hooked(model, FrameLocalAttention, variant=variant), arch)
    reference = one_step(hooked(model, ReferenceAttention, published=variant == "published"), arch)
    # float32 through different kernels: within 1e-5 relative and absolute (outputs reach |4|; on some CPUs the
    # masked reference and the frame-local path differ by 1.05e-5 there)
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5)
    assert (fast - one_step(model, arch)).abs().max() > 1e-2  # the hook really changed the computation


@pytest.mark.parametrize("arch", ARCHS)
def test_prefix_reuse_equals_a_naive_three_pass_loop(arch):
    model = random_model(arch)
    diffusion_model = model.get_model_object("diffusion_model")
    adapter = adapter_for(diffusion_model)
    guidance = CrossAttentionGuidance(adapter, diffusion_model, BLOCKS, 1.5, "renormalised", 0.0, 1e9, reuse_prefix=True)
    fast = one_step(guidance.patch(model), arch)
    assert guidance.prefix.last_used.skipped_blocks == BLOCKS[0]  # the perturbed pass really started at the first block

    frame_local = FrameLocalAttention(adapter, diffusion_model, BLOCKS, "renormalised")

    def three_passes(args):  # cond and uncond (already done), then the whole perturbed pass, combined by hand
        (perturbed,) = comfy.samplers.calc_cond_batch(args["model"], [args["cond"]], args["input"], args["sigma"],
                                                      frame_local.install_options(args["model_options"]))
        return cag_combine(args["cond_denoised"], args["uncond_denoised"], perturbed, args["cond_scale"], 1.5)

    naive = model.clone()
    naive.set_model_sampler_post_cfg_function(three_passes)
    assert (fast - one_step(naive, arch)).abs().max() <= 1e-5


@pytest.mark.parametrize("arch", ARCHS)
def test_scale_zero_and_outside_the_window_reproduce_cfg_bit_for_bit(arch):
    model = random_model(arch)
    plain = sample(model, arch, seed=2, steps=3)
    (zero,) = run_node(CAGModelPatch, model=model, cag_scale=0.0, blocks="1, 2").args
    (late,) = run_node(CAGModelPatch, model=model, cag_scale=2.0, blocks="1, 2", start_percent=0.95, variant="published").args
    assert torch.equal(sample(zero, arch, seed=2, steps=3), plain)
    assert torch.equal(sample(late, arch, seed=2, steps=3), plain)  # steps at sigma 1, 2/3, 1/3: all outside


def test_batch_and_cfg_one_and_the_model_left_clean_after_an_interrupt():
    model = random_model("wan")
    (guided,) = run_node(CAGModelPatch, model=model).args
    plain = sample(model, "wan", batch=3, cfg=1.0)
    out = sample(guided, "wan", batch=3, cfg=1.0)
    assert out.shape == plain.shape and not torch.equal(out, plain)

    def interrupt(step, *args):
        raise comfy.model_management.InterruptProcessingException()

    with pytest.raises(comfy.model_management.InterruptProcessingException):
        sample(guided, "wan", callback=interrupt)
    assert "patches_replace" not in model.model_options.get("transformer_options", {})
    assert not model.model_options.get("sampler_post_cfg_function")
    assert torch.equal(sample(model, "wan", batch=3, cfg=1.0), plain)


def test_guider_sampler_and_zero_conditioning_nodes():
    model = random_model("wan")
    (zero,) = run_node(ZeroConditioning, model=model).args
    assert zero[0][0].shape == (1, 512, 4096) and not zero[0][0].any()
    (guider,) = run_node(CAGGuider, model=model, positive=zero, negative=zero, cfg=4.0).args
    assert isinstance(guider, comfy.samplers.CFGGuider) and guider.cfg == 4.0
    latent = {"samples": torch.zeros(1, 16, 3, 8, 8)}
    (out,) = run_node(CAGSampler, model=model, steps=2, cfg=4.0, sampler_name="euler", positive=zero, negative=zero,
                      latent_image=latent).args
    assert out["samples"].shape == (1, 16, 3, 8, 8) and torch.isfinite(out["samples"]).all()
    with pytest.raises(ValueError, match="Block 9 is out of range"):
        run_node(CAGModelPatch, model=model, blocks="9")


def test_two_experts_on_split_steps_like_wan_2_2():
    """Wan 2.2 14B: a high-noise expert for the first steps, a low-noise one for the rest, each with its own sampler."""
    import nodes as comfy_nodes

    high, low = random_model("wan", seed=1), random_model("wan", seed=2)
    positive, negative = text_conditioning(high, 1), text_conditioning(high, 2)
    latent = {"samples": torch.zeros(1, 16, 3, 8, 8)}

    def two_samplers(first, second):
        sampler = comfy_nodes.KSamplerAdvanced()
        (mid,) = sampler.sample(first, "enable", 0, 4, 4.0, "euler", "simple", positive, negative, latent, 0, 2, "enable")
        (out,) = sampler.sample(second, "disable", 0, 4, 4.0, "euler", "simple", positive, negative, mid, 2, 4, "disable")
        return out["samples"]

    patch = lambda model: run_node(CAGModelPatch, model=model, blocks="1, 2").args[0]  # noqa: E731
    plain, guided = two_samplers(high, low), two_samplers(patch(high), patch(low))
    assert torch.isfinite(guided).all() and (guided - plain).abs().max() > 1e-3
    zero = lambda model: run_node(CAGModelPatch, model=model, cag_scale=0.0, blocks="1, 2").args[0]  # noqa: E731
    assert torch.equal(two_samplers(zero(high), zero(low)), plain)
