"""Attention capture on every supported family, with real ComfyUI model classes at tiny sizes."""
from __future__ import annotations

import pytest
import torch
import comfy.model_management

from difftrack_devkit.families import CASES
from difftrack_devkit.models import random_model, sample
from difftrack_devkit.nodes import run_node
from difftrack_devkit.qk_references import Observer

from difftrack_pack.ditcorr import CaptureKey
from difftrack_pack.nodes.capture_nodes import AttentionCapture, CapturedFeatures
from difftrack_pack.nodes.hooks import WRAPPER_KEY

ARCHS = list(CASES)
BLOCK = 1


def capture(model, blocks=str(BLOCK), steps="all", branches="both", dtype="float32", storage="cpu"):
    patched, handle = run_node(AttentionCapture, model=model, blocks=blocks, steps=steps, branches=branches,
                               storage_dtype=dtype, storage=storage).args
    return patched, handle


def collect(handle, latent):
    return run_node(CapturedFeatures, capture=handle, latent={"samples": latent}).args[0]


class CondRecorder:
    """Which cond each chunk of batch rows was, per forward (ComfyUI's model_function_wrapper: not our hook)."""

    def __init__(self, patcher):
        self.forwards = []
        patcher.set_model_unet_function_wrapper(self)

    def __call__(self, apply_model, args):
        self.forwards.append(list(args["cond_or_uncond"]))
        return apply_model(args["input"], args["timestep"], **args["c"])


def expected_captures(observer: Observer, conds: CondRecorder, grid) -> dict:
    """The reference q/k of every (step, branch, sample), from the observed forwards (one per step)."""
    expected = {}
    for step, ((q_ref, k_ref), chunk_conds) in enumerate(zip(observer.forwards, conds.forwards)):
        rows = q_ref.shape[0] // len(chunk_conds)
        video = slice(q_ref.shape[2] - grid.numel(), q_ref.shape[2])
        heads, dim = q_ref.shape[1], q_ref.shape[3]
        for row in range(q_ref.shape[0]):
            key = CaptureKey(BLOCK, step, ("cond", "uncond")[chunk_conds[row // rows]], row % rows, 0)
            expected[key] = (q_ref[row, :, video].reshape(heads, *grid, dim), k_ref[row, :, video].reshape(heads, *grid, dim))
    return expected


def assert_match(features, expected, branches=("cond", "uncond")):
    wanted = {key: qk for key, qk in expected.items() if key.branch in branches}
    assert sorted(features.captures) == sorted(wanted)
    for key, (q_ref, k_ref) in wanted.items():
        torch.testing.assert_close(features.captures[key].q, q_ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(features.captures[key].k, k_ref, rtol=1e-5, atol=1e-5)


def observed_run(patched, handle, arch, **sampling):
    observer = Observer(arch, patched.get_model_object("diffusion_model"), BLOCK)
    conds = CondRecorder(patched)
    features = collect(handle, sample(patched, arch, **sampling))
    observer.remove()
    grid = next(iter(features.captures.values())).q.shape[1:4]
    return features, expected_captures(observer, conds, grid), conds


@pytest.mark.parametrize("arch", ARCHS)
def test_captured_qk_equal_recomputed_from_weights(arch):
    patched, handle = capture(random_model(arch))
    features, expected, conds = observed_run(patched, handle, arch, batch=2, steps=2, cfg=3.0)
    assert len(conds.forwards) == 2 and all(sorted(f) == [0, 1] for f in conds.forwards), \
        "cond and uncond must share one forward per step"
    assert len(expected) == 2 * 2 * 2  # steps x branches x samples
    assert_match(features, expected)


@pytest.mark.parametrize("arch", ARCHS)
def test_outputs_bit_identical_with_capture_on_and_off(arch):
    model = random_model(arch)
    plain = sample(model, arch, seed=3)
    recording, _ = capture(model)
    idle, idle_handle = capture(model, steps="999")  # hooked, but no step matches: capture is off
    assert torch.equal(sample(recording, arch, seed=3), plain)
    assert torch.equal(sample(idle, arch, seed=3), plain)
    assert idle_handle.session.captures == {}


def test_cond_only_and_gpu_storage_in_the_models_dtype():
    model = random_model("wan")
    patched, handle = capture(model, blocks="0, 2", steps="1", branches="cond", dtype="model", storage="gpu")
    features = collect(handle, sample(patched, "wan", batch=3))
    assert sorted(features.captures) == [CaptureKey(b, 1, "cond", s, 0) for b in (0, 2) for s in range(3)]
    first = features.captures[CaptureKey(0, 1, "cond", 0, 0)]
    assert first.q.device == comfy.model_management.get_torch_device() and first.q.dtype == torch.float32
    assert features.frame_size == (64, 64) and features.frame_count == 9  # 3 latent frames of a 4x causal, 8x VAE


@pytest.mark.parametrize("arch", ARCHS)
def test_nothing_leaks_between_consecutive_runs(arch):
    patched, handle = capture(random_model(arch), branches="cond")
    first = collect(handle, sample(patched, arch, seed=1))
    first_q = {key: qk.q.clone() for key, qk in first.captures.items()}
    second, expected, _ = observed_run(patched, handle, arch, seed=2)
    assert_match(second, expected, branches=("cond",))  # exactly the second run's tensors, nothing accumulated
    for key, qk in first.captures.items():  # and the first run's features were not touched by the second run
        assert torch.equal(qk.q, first_q[key])
        assert not torch.equal(qk.q, second.captures[key].q)


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("failure", ["error", "interrupt"])
@pytest.mark.parametrize("arch", ARCHS)
def test_no_patch_left_after_an_exception_inside_sampling(arch, failure):
    model = random_model(arch)
    before = sample(model, arch, seed=5)
    patched, handle = capture(model)

    def fail(step, *args):
        if failure == "interrupt":
            raise comfy.model_management.InterruptProcessingException()
        raise Boom("raised inside sampling")

    expected = comfy.model_management.InterruptProcessingException if failure == "interrupt" else Boom
    with pytest.raises(expected):
        sample(patched, arch, seed=5, callback=fail)

    diffusion_model = model.get_model_object("diffusion_model")
    assert "patches_replace" not in model.model_options.get("transformer_options", {})
    assert WRAPPER_KEY not in str(model.wrappers)
    assert not model.object_patches and not model.model_options.get("transformer_options", {}).get("wrappers")
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in diffusion_model.modules())
    assert handle.session.forward is None
    assert torch.equal(sample(model, arch, seed=5), before)  # the user's model runs exactly as before
    features = collect(handle, sample(patched, arch, seed=5))  # and the patched one still captures cleanly
    assert len(features.captures) == 8
