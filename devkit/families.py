"""One row per supported video-DiT family: what tests and benchmarks need to run it.

A row names its adapter (nodes/adapters/), its tiny test cases (ComfyUI config
class, unet config, the latent of a test video), the recomputation of a
block's q/k from the module's own weights, and its real sizes for benchmarks
(random weights). The host tests are parametrised over every tiny case of
every row, and `test_every_adapter_has_a_family_row` fails for an adapter
without one: adding a family is one adapter file plus one row here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from . import qk_references


@dataclass(frozen=True)
class ModelConfig:
    """A ComfyUI model: `comfy.supported_models.<config_class>(unet)`; `latent` [C, T, H, W] of a test video."""

    config_class: str
    unet: dict
    latent: tuple[int, int, int, int] | None = None


@dataclass(frozen=True)
class Family:
    adapter: str  # class name of the family's adapter in nodes/adapters/
    tiny: dict[str, ModelConfig]  # test cases, CPU-fast
    qk_reference: Callable  # block -> (module to observe, reference(args, kwargs) -> (q, k) [B, H, L, D])
    sizes: dict[str, ModelConfig] = field(default_factory=dict)  # real sizes, for benchmarks


def _wan(**overrides) -> dict:
    return {**dict(image_model="wan2.1", dim=256, ffn_dim=512, num_heads=2, num_layers=4, in_dim=16, out_dim=16,
                   freq_dim=256, patch_size=(1, 2, 2), window_size=(-1, -1), qk_norm=True, cross_attn_norm=True,
                   eps=1e-6, model_type="t2v"), **overrides}


def _hunyuan(**overrides) -> dict:
    return {**dict(image_model="hunyuan_video", in_channels=16, out_channels=16, patch_size=[1, 2, 2], vec_in_dim=None,
                   context_in_dim=64, hidden_size=256, mlp_ratio=2.0, num_heads=2, depth=3, depth_single_blocks=1,
                   axes_dim=[16, 56, 56], theta=256, qkv_bias=True, guidance_embed=False, byt5=False, meanflow=False,
                   use_cond_type_embedding=False, vision_in_dim=None, meanflow_sum=False), **overrides}


WAN_VIDEO = (16, 3, 8, 8)
FAMILIES: dict[str, Family] = {family.adapter: family for family in (
    Family("WanAdapter", {
        "wan": ModelConfig("WAN21_T2V", _wan(), WAN_VIDEO),
        "wan_i2v": ModelConfig("WAN21_I2V", _wan(in_dim=36, model_type="i2v"), WAN_VIDEO),
        "wan_vace": ModelConfig("WAN21_Vace", _wan(vace_layers=2, vace_in_dim=96, model_type="vace"), WAN_VIDEO),
        "wan_camera": ModelConfig("WAN21_Camera", _wan(in_dim=32, in_dim_control_adapter=24, model_type="camera"),
                                  WAN_VIDEO),
        # Wan 2.2 TI2V-5B's layout: a 48-channel latent of the 16x spatial VAE.
        "wan22_ti2v": ModelConfig("WAN22_T2V", _wan(in_dim=48, out_dim=48), (48, 3, 8, 8)),
    }, qk_references.wan, sizes={
        "wan_1.3b": ModelConfig("WAN21_T2V", _wan(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30)),
        "wan_14b": ModelConfig("WAN21_T2V", _wan(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40)),
    }),
    Family("HunyuanVideoAdapter", {
        "hunyuan_video": ModelConfig("HunyuanVideo", _hunyuan(), (16, 3, 8, 8)),
        "hunyuan_video15": ModelConfig("HunyuanVideo15", _hunyuan(
            in_channels=65, out_channels=32, patch_size=[1, 1, 1], use_cond_type_embedding=True, vision_in_dim=1152,
            meanflow_sum=True), (32, 3, 4, 4)),
    }, qk_references.hunyuan_video),
    Family("LTXVAdapter", {
        "ltxv": ModelConfig("LTXV", dict(image_model="ltxv", num_layers=3, attention_head_dim=64, num_attention_heads=2,
                                         cross_attention_dim=128, caption_channels=64, in_channels=128), (128, 3, 4, 4)),
    }, qk_references.ltxv),
    Family("MochiAdapter", {
        "mochi": ModelConfig("GenmoMochi", dict(
            image_model="mochi_preview", depth=3, patch_size=2, num_heads=2, hidden_size_x=256, hidden_size_y=128,
            mlp_ratio_x=48.0, mlp_ratio_y=2.0, learn_sigma=False, in_channels=12, qk_norm=True, qkv_bias=False,
            out_bias=True, attn_drop=0.0, patch_embed_bias=True, posenc_preserve_area=True, timestep_mlp_bias=True,
            attend_to_padding=False, timestep_scale=1000.0, use_t5=True, t5_feat_dim=64, t5_token_length=16,
            rope_theta=10000.0), (12, 3, 8, 8)),
    }, qk_references.mochi),
    Family("Kandinsky5Adapter", {
        "kandinsky5": ModelConfig("Kandinsky5", dict(
            image_model="kandinsky5", model_dim=128, ff_dim=256, time_dim=64, visual_embed_dim=132, in_text_dim=64,
            in_text_dim2=32, num_text_blocks=1, num_visual_blocks=3, axes_dims=(16, 24, 24)), (16, 3, 8, 8)),
    }, qk_references.kandinsky5),
)}

# Families ComfyUI loads that the pack refuses (tests check the message).
REFUSED: dict[str, ModelConfig] = {
    "cosmos_predict2": ModelConfig("CosmosT2IPredict2", dict(
        image_model="cosmos_predict2", max_img_h=240, max_img_w=240, max_frames=128, in_channels=16, out_channels=16,
        patch_spatial=2, patch_temporal=1, model_channels=128, concat_padding_mask=True, crossattn_emb_channels=64,
        pos_emb_cls="rope3d", pos_emb_learnable=True, pos_emb_interpolation="crop", min_fps=1, max_fps=30,
        use_adaln_lora=True, adaln_lora_dim=32, num_blocks=2, num_heads=2, extra_per_block_abs_pos_emb=False,
        rope_h_extrapolation_ratio=4.0, rope_w_extrapolation_ratio=4.0, rope_t_extrapolation_ratio=1.0)),
}

# Every tiny test case: name -> its family's row.
CASES: dict[str, Family] = {name: family for family in FAMILIES.values() for name in family.tiny}


def model_config(name: str) -> ModelConfig:
    """The config of a tiny case, a real size or a refused family, by name."""
    for family in FAMILIES.values():
        if name in family.tiny or name in family.sizes:
            return {**family.tiny, **family.sizes}[name]
    if name in REFUSED:
        return REFUSED[name]
    raise KeyError(f"No model config {name!r}; known: {', '.join(sorted(all_config_names()))}")


def all_config_names() -> list[str]:
    return [*CASES, *(size for family in FAMILIES.values() for size in family.sizes), *REFUSED]


def missing_rows(adapters, families: dict[str, Family] = FAMILIES) -> list[str]:
    """Adapters (instances) without a row in `families`: each a family no host test would cover."""
    return sorted({type(adapter).__name__ for adapter in adapters} - set(families))
