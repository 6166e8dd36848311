"""Motion-transfer guidance on the tiny trained Wan: a reference's flow read, then the latent optimised towards it
inside a real ComfyUI sampling run; zero iterations leave sampling bit for bit as it was; gradients reach the
latent only; the RoPE swap is undone even after an error."""
from __future__ import annotations

import dataclasses
import importlib

import pytest
import torch
import comfy.samplers
import comfy.sd
import comfy.utils

from difftrack_devkit.models import text_conditioning
from difftrack_devkit.testbed import TRAINED, TRAINED_DIT, TRAINED_VAE
from difftrack_pack.ditcorr.synthetic import make_clip
from difftrack_pack.nodes.adapters import adapter_for
from difftrack_pack.nodes.differentiable import differentiable_forwards
from difftrack_pack.nodes.motion_nodes import MotionFlowFromVideo
from difftrack_pack.nodes.motion_transfer import TransferSettings, optimise, transfer_sampler
from difftrack_devkit.nodes import run_node

SIZE, FRAMES = 64, 9


@pytest.fixture(scope="module")
def trained():
    model = comfy.sd.load_diffusion_model(str(TRAINED / TRAINED_DIT))
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(TRAINED / TRAINED_VAE)))
    clip = make_clip(11, (SIZE, SIZE), FRAMES)
    flow, _ = run_node(MotionFlowFromVideo, model=model, vae=vae, images=clip.frames, blocks="7").args
    return model, flow


def sample_with(model, flow, sampler, first_step: int = 0, seed: int = 3) -> torch.Tensor:
    """A real sampling run of `sampler` at the reference's latent layout (cfg 2, 5 steps from `first_step` on, the
    noise of `seed`)."""
    latent = torch.zeros(1, 16, flow.latent_frames, SIZE // 8, SIZE // 8)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(text_conditioning(model, 1), text_conditioning(model, 2))
    guider.set_cfg(2.0)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", 5)[first_step:]
    return guider.sample(noise, latent, sampler, sigmas, seed=3, disable_pbar=True)


def generate(model, flow, settings: TransferSettings | None, base: str = "euler", report=None,
             first_step: int = 0, learned=None) -> torch.Tensor:
    """sample_with the guided sampler, or the plain `base` sampler when settings is None."""
    return sample_with(model, flow, transfer_sampler(base, flow, settings, report, learned) if settings is not None
                       else comfy.samplers.sampler_object(base), first_step)


def test_zero_iterations_sample_bit_for_bit_as_the_plain_sampler(trained):
    model, flow = trained
    plain = generate(model, flow, None)
    assert torch.equal(generate(model, flow, TransferSettings(iterations=0)), plain)
    # Guided steps run one by one through the base sampler: for a one-step sampler that changes nothing either.
    assert torch.equal(generate(model, flow, TransferSettings(iterations=0, guided_share=1.0)), plain)


def test_guidance_lowers_the_flow_loss_and_touches_no_weight(trained):
    model, flow = trained
    report = []
    settings = TransferSettings(guided_share=0.4, iterations=4, rate_start=0.05, rate_end=0.05, gradient_every=1)
    guided = generate(model, flow, settings, report=report)
    assert len(report) == 2 and all(len(losses) == 4 for losses in report)
    assert all(losses[-1] < losses[0] for losses in report), report
    assert not torch.equal(guided, generate(model, flow, None))
    diffusion_model = model.get_model_object("diffusion_model")
    assert all(parameter.grad is None and not parameter.requires_grad for parameter in diffusion_model.parameters())


def test_checkpointed_blocks_give_the_same_guidance(trained):
    """Blocks 0-6 recomputed in the backward pass instead of kept (the guidance block, 7, as it is): the same
    losses at every iteration and the same generation as keeping the whole graph."""
    model, flow = trained
    runs = {}
    for checkpoint in (False, True):
        report = []
        settings = TransferSettings(guided_share=0.4, iterations=3, rate_start=0.05, rate_end=0.05,
                                    checkpoint_blocks=checkpoint, gradient_every=1)
        runs[checkpoint] = generate(model, flow, settings, report=report), report
    torch.testing.assert_close(runs[True][0], runs[False][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.tensor(runs[True][1]), torch.tensor(runs[False][1]), rtol=1e-5, atol=0)


@pytest.mark.parametrize("optimise", ["latent", "embeddings"])
def test_checkpointed_blocks_keep_a_fraction_of_the_graph(trained, optimise):
    """What the backward pass keeps, counted as every tensor autograd saves outside a checkpoint during one guided
    step of one iteration: with blocks 0-6 checkpointed, under a third of keeping the whole graph (optimising the
    latent or the position tables)."""
    model, flow = trained
    kept = {}
    for checkpoint in (False, True):
        saved = []

        def pack(tensor):
            saved.append(tensor.numel() * tensor.element_size())
            return tensor

        settings = TransferSettings(guided_share=0.2, iterations=1, checkpoint_blocks=checkpoint, optimise=optimise)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            generate(model, flow, settings)
        kept[checkpoint] = sum(saved)
    assert 0 < kept[True] < kept[False] / 3, kept


def test_gradient_reuse_steps_adam_with_every_nth_gradient():
    """optimise computing the gradient on iterations 0, 2, 4 of 5 against a hand-written loop: Adam fed the
    analytic gradient of a quadratic, refreshed on those iterations and reused between."""
    generator = torch.Generator().manual_seed(0)
    target, start = torch.randn(3, 4, generator=generator), torch.randn(3, 4, generator=generator)
    evaluated = []

    def loss_of(latent):
        evaluated.append(latent.detach().clone())
        return ((latent - target) ** 2).sum()

    (out,), losses = optimise(loss_of, (start,), iterations=5, rate=0.1, gradient_every=2)
    latent = start.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([latent], lr=0.1)
    for iteration in range(5):
        if iteration % 2 == 0:
            gradient = 2 * (latent.detach() - target)
        latent.grad = gradient.clone()
        optimiser.step()
    assert len(evaluated) == len(losses) == 3
    torch.testing.assert_close(out, latent.detach())
    with pytest.raises(ValueError, match="gradient_every is 0"):
        TransferSettings(gradient_every=0)


def test_the_learning_rate_is_ditflows_at_ten_guided_steps_and_scales_with_fewer():
    """The rates fall linearly over the guided steps; with n guided steps instead of DiTFlow's 10 they are 10 / n
    times as large (the same total Adam movement), and 50 steps with 20 % guided are DiTFlow's exactly."""
    settings = TransferSettings()
    guided = settings.guided_steps(50)
    assert guided == 10 and settings.rate(0, guided) == pytest.approx(0.002)
    assert settings.rate(guided - 1, guided) == pytest.approx(0.001)
    assert (settings.rate(0, 4), settings.rate(3, 4)) == pytest.approx((0.005, 0.0025))  # 20 steps
    assert settings.rate(0, 1) == pytest.approx(0.02)


def test_gradient_reuse_in_sampling_computes_fewer_gradients_and_still_lowers_the_loss(trained):
    model, flow = trained
    report = []
    settings = TransferSettings(guided_share=0.4, iterations=4, rate_start=0.05, rate_end=0.05, gradient_every=2)
    guided = generate(model, flow, settings, report=report)
    assert len(report) == 2 and all(len(losses) == 2 for losses in report)  # iterations 0 and 2 of each step
    assert all(losses[-1] < losses[0] for losses in report), report
    every = generate(model, flow, TransferSettings(guided_share=0.4, iterations=4, rate_start=0.05, rate_end=0.05,
                                                   gradient_every=1))
    assert not torch.equal(guided, every)


@pytest.mark.parametrize("skip_reshape", [False, True])
def test_run_with_replaces_the_video_tokens_keys_values_and_queries_only(skip_reshape):
    """SelfAttentionCall.run_with in both layouts a backend may receive ([B, L, H*D] with the head count, or
    [B, H, L, D]): the attention over keys and values (and of queries) whose video positions are the given ones."""
    from difftrack_pack.nodes.hooks import SelfAttentionCall

    generator = torch.Generator().manual_seed(0)
    rows, heads, length, dim, video = 2, 2, 7, 4, slice(1, 6)
    q, k, v = (torch.randn(rows, heads, length, dim, generator=generator) for _ in range(3))
    k_new, v_new, q_new = (torch.randn(1, heads, 5, dim, generator=generator) for _ in range(3))

    def attention(q, k, v, heads, skip_reshape=False):  # a backend: [B, L, H*D] out
        if not skip_reshape:
            q, k, v = (t.view(rows, length, heads, dim).transpose(1, 2) for t in (q, k, v))
        out = torch.softmax(q @ k.transpose(-1, -2) / dim ** 0.5, dim=-1) @ v
        return out.transpose(1, 2).reshape(rows, length, heads * dim)

    given = lambda t: t if skip_reshape else t.transpose(1, 2).reshape(rows, length, heads * dim)  # noqa: E731
    args, kwargs = (given(q), given(k), given(v), heads), {"skip_reshape": skip_reshape}
    call = SelfAttentionCall(0, None, video, length, attention, args, kwargs,
                             lambda args=args: attention(*args, **kwargs))
    keys, values = k.clone(), v.clone()
    keys[:, :, video], values[:, :, video] = k_new, v_new
    expected = (torch.softmax(q @ keys.transpose(-1, -2) / dim ** 0.5, dim=-1) @ values).transpose(1, 2)
    torch.testing.assert_close(call.run_with(k_new, v_new), expected.reshape(rows, length, heads * dim))
    queries = q.clone()
    queries[:, :, video] = q_new
    expected = (torch.softmax(queries @ k.transpose(-1, -2) / dim ** 0.5, dim=-1) @ v).transpose(1, 2)
    torch.testing.assert_close(call.run_with(q=q_new), expected.reshape(rows, length, heads * dim))
    assert torch.equal(call.q, q) and torch.equal(call.k, k) and torch.equal(call.v, v)  # the call's own: as they were


def test_injecting_the_generations_own_keys_and_values_changes_nothing(trained):
    """A reference equal to the generation's empty latent (in the model's latent space: ComfyUI leaves an all-zero
    latent image unshifted), noised with the run's noise, has the generation's own keys and values at block 0 on
    the first step; with a learning rate of 0 the guided step is then the plain one. The run starts below σ 1 (at
    σ 1 any reference is all noise); there the real reference's keys and values change the generation."""
    model, flow = trained
    own = dataclasses.replace(flow, latent=model.model.process_latent_out(torch.zeros_like(flow.latent)))
    settings = TransferSettings(guided_share=0.25, iterations=1, rate_start=0.0, rate_end=0.0, inject_blocks=(0,))
    plain = generate(model, flow, None, first_step=1)
    torch.testing.assert_close(generate(model, own, settings, first_step=1), plain, rtol=0, atol=1e-4)  # batch 1 vs 2
    assert (generate(model, flow, settings, first_step=1) - plain).abs().max() > 0.1


def test_injection_with_checkpointed_blocks_gives_the_same_guidance(trained):
    """Block 0 takes the reference's keys and values, blocks 1-6 are recomputed in the backward pass: the losses
    of every iteration equal those of keeping the whole graph."""
    model, flow = trained
    reports = {}
    for checkpoint in (False, True):
        reports[checkpoint] = []
        generate(model, flow, TransferSettings(guided_share=0.4, iterations=2, rate_start=0.05, rate_end=0.05,
                                               gradient_every=1, inject_blocks=(0,), checkpoint_blocks=checkpoint),
                 report=reports[checkpoint])
    torch.testing.assert_close(torch.tensor(reports[True]), torch.tensor(reports[False]), rtol=1e-4, atol=1e-5)


def test_injection_at_a_guidance_block_or_without_a_reference_latent_is_refused(trained):
    model, flow = trained
    with pytest.raises(ValueError, match="both a guidance block and an injection block"):
        generate(model, flow, TransferSettings(inject_blocks=(7,)))
    with pytest.raises(ValueError, match="holds no reference latent"):
        generate(model, dataclasses.replace(flow, latent=None), TransferSettings(inject_blocks=(0,)))


def test_the_rope_swap_is_undone_after_an_error(trained):
    model, _ = trained
    module = importlib.import_module("comfy.ldm.wan.model")
    original = module.apply_rope1
    diffusion_model = model.get_model_object("diffusion_model")
    with pytest.raises(RuntimeError, match="stop"):
        with differentiable_forwards(adapter_for(diffusion_model), diffusion_model):
            assert module.apply_rope1 is not original
            raise RuntimeError("stop")
    assert module.apply_rope1 is original


def test_the_sampler_node_gives_the_guided_sampler(trained):
    from difftrack_pack.nodes.motion_nodes import MotionTransferSampler

    model, flow = trained
    (sampler,) = run_node(MotionTransferSampler, motion_flow=flow, iterations=2, guided_percent=0.2,
                          rate_start=0.05, rate_end=0.05).args
    out = sample_with(model, flow, sampler)
    report = []
    expected = generate(model, flow, TransferSettings(guided_share=0.2, iterations=2, rate_start=0.05, rate_end=0.05),
                        report=report)
    assert len(report) == 1 and torch.equal(out, expected)  # the node's settings are the ones it was given


def test_a_generation_of_another_size_is_refused(trained):
    model, flow = trained
    other = type(flow)(**{**flow.__dict__, "grid": (flow.grid[0] + 1, flow.grid[1])})
    with pytest.raises(ValueError, match="generate at the reference's size and length"):
        generate(model, other, TransferSettings())


def test_a_family_it_cannot_differentiate_is_refused(trained):
    from difftrack_devkit.models import random_model, model_config

    _, flow = trained
    model = random_model("hunyuan_video")
    channels, frames, height, width = model_config("hunyuan_video").latent
    latent = torch.zeros(1, channels, frames, height, width)
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(text_conditioning(model, 1), text_conditioning(model, 2))
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", 2)
    with pytest.raises(ValueError, match="not yet for HunyuanVideo"):
        guider.sample(torch.randn(latent.shape), latent, transfer_sampler("euler", flow, TransferSettings()), sigmas,
                      disable_pbar=True)


# --- DiTFlow's positional-embedding variant: position tables learned instead of the latent, reused zero-shot ---

def embeddings_settings(**given) -> TransferSettings:
    return TransferSettings(**{"guided_share": 0.4, "iterations": 3, "rate_start": 0.05, "rate_end": 0.05,
                               "gradient_every": 1, "optimise": "embeddings", **given})


def test_identity_tables_sample_bit_for_bit_as_the_plain_sampler(trained):
    """Learning at rate 0 keeps the identity tables, which run every block's queries and keys through the
    modulation: the generation is the plain sampler's, bit for bit."""
    model, flow = trained
    learned = []
    out = generate(model, flow, embeddings_settings(rate_start=0.0, rate_end=0.0), learned=learned)
    assert torch.equal(out, generate(model, flow, None))
    (embeddings,) = learned
    identity = torch.eye(2).expand_as(embeddings.tables[0][0])
    assert len(embeddings.tables) == 2 and all(torch.equal(t, identity) for pair in embeddings.tables for t in pair)


def test_learning_embeddings_lowers_the_flow_loss_and_touches_no_weight(trained):
    model, flow = trained
    report, learned = [], []
    guided = generate(model, flow, embeddings_settings(), report=report, learned=learned)
    assert len(report) == 2 and all(losses[-1] < losses[0] for losses in report), report
    (embeddings,) = learned
    assert len(embeddings.tables) == 2 and embeddings.grid == (flow.latent_frames, *flow.grid)
    assert not torch.equal(embeddings.tables[0][0], embeddings.tables[1][0])  # each step goes on from the last
    assert not torch.equal(guided, generate(model, flow, None))
    diffusion_model = model.get_model_object("diffusion_model")
    assert all(parameter.grad is None and not parameter.requires_grad for parameter in diffusion_model.parameters())


def test_learning_embeddings_with_checkpointed_blocks_gives_the_same_guidance(trained):
    """The position tables' hook acts in the backward pass's recompute too: blocks 0-6 checkpointed give the same
    losses and generation as keeping the whole graph."""
    model, flow = trained
    runs = {}
    for checkpoint in (False, True):
        report = []
        runs[checkpoint] = generate(model, flow, embeddings_settings(checkpoint_blocks=checkpoint), report=report), report
    torch.testing.assert_close(runs[True][0], runs[False][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.tensor(runs[True][1]), torch.tensor(runs[False][1]), rtol=1e-5, atol=0)


def test_learned_embeddings_apply_zero_shot_and_round_trip_through_save_and_load(trained, tmp_path, monkeypatch):
    import folder_paths
    from difftrack_pack.nodes.motion_nodes import (ApplyMotionEmbeddings, LoadMotionEmbeddings, SaveMotionEmbeddings,
                                                    saved_embeddings)

    model, flow = trained
    learned = []
    generate(model, flow, embeddings_settings(), learned=learned)
    monkeypatch.setattr(folder_paths, "output_directory", str(tmp_path))
    run_node(SaveMotionEmbeddings, motion_embeddings=learned[0], filename_prefix="pan")
    (name,) = saved_embeddings()
    (loaded,) = run_node(LoadMotionEmbeddings, embeddings=name).args
    for pair, saved in zip(loaded.tables, learned[0].tables):
        assert all(torch.equal(a, b) for a, b in zip(pair, saved))
    (patched,) = run_node(ApplyMotionEmbeddings, model=model, motion_embeddings=loaded).args
    # Another seed than the one they were learned with: the tables steer a run with no optimisation.
    euler = comfy.samplers.sampler_object("euler")
    zero_shot, plain = sample_with(patched, flow, euler, seed=4), sample_with(model, flow, euler, seed=4)
    assert not torch.equal(zero_shot, plain)
    assert torch.equal(sample_with(model, flow, euler, seed=4), plain)  # the model itself is left unpatched


def test_embeddings_for_another_size_or_with_injection_are_refused(trained, tmp_path):
    from difftrack_pack.ditcorr.motion_embeddings import MotionEmbeddings
    from difftrack_pack.nodes.motion_nodes import ApplyMotionEmbeddings, LoadMotionEmbeddings

    model, flow = trained
    learned = []
    generate(model, flow, embeddings_settings(guided_share=0.2, iterations=1), learned=learned)
    other = MotionEmbeddings(learned[0].tables, (flow.latent_frames + 1, *flow.grid), learned[0].head_dim,
                             learned[0].model)
    (patched,) = run_node(ApplyMotionEmbeddings, model=model, motion_embeddings=other).args
    with pytest.raises(ValueError, match="generate at the size and length they were learned at"):
        sample_with(patched, flow, comfy.samplers.sampler_object("euler"))
    with pytest.raises(ValueError, match="turn inject_reference off"):
        embeddings_settings(inject_blocks=(0,))
    with pytest.raises(ValueError, match="No motion embeddings named"):
        run_node(LoadMotionEmbeddings, embeddings="../elsewhere.safetensors")
