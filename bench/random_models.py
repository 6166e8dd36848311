"""Real ComfyUI video-DiT classes with random weights, at any size (tests and benchmarks).

Speed does not depend on weight values, and hook correctness does not either,
so random weights give real timings and real code paths without downloads.
Needs ComfyUI importable (its root on sys.path).
"""
from __future__ import annotations

import math

import torch

# Tiny configs (CPU-fast) and the real sizes used by the benchmarks.
CONFIGS = {
    "wan_tiny": ("WAN21_T2V", dict(image_model="wan2.1", dim=256, ffn_dim=512, num_heads=2, num_layers=4, in_dim=16,
                                   out_dim=16, freq_dim=256, patch_size=(1, 2, 2),
                                   window_size=(-1, -1), qk_norm=True, cross_attn_norm=True, eps=1e-6, model_type="t2v")),
    "wan_i2v_tiny": ("WAN21_I2V", dict(image_model="wan2.1", dim=256, ffn_dim=512, num_heads=2, num_layers=4, in_dim=36,
                                       out_dim=16, freq_dim=256, patch_size=(1, 2, 2), window_size=(-1, -1), qk_norm=True,
                                       cross_attn_norm=True, eps=1e-6, model_type="i2v")),
    "wan_camera_tiny": ("WAN21_Camera", dict(image_model="wan2.1", dim=256, ffn_dim=512, num_heads=2, num_layers=4,
                                             in_dim=32, out_dim=16, freq_dim=256, patch_size=(1, 2, 2),
                                             window_size=(-1, -1), qk_norm=True, cross_attn_norm=True, eps=1e-6,
                                             model_type="camera", in_dim_control_adapter=24)),
    "wan_vace_tiny": ("WAN21_Vace", dict(image_model="wan2.1", dim=256, ffn_dim=512, num_heads=2, num_layers=4, in_dim=16,
                                         out_dim=16, freq_dim=256, patch_size=(1, 2, 2), window_size=(-1, -1),
                                         qk_norm=True, cross_attn_norm=True, eps=1e-6, model_type="vace", vace_layers=2,
                                         vace_in_dim=96)),
    "wan_1.3b": ("WAN21_T2V", dict(image_model="wan2.1", dim=1536, ffn_dim=8960, num_heads=12, num_layers=30, in_dim=16,
                                   out_dim=16, freq_dim=256, patch_size=(1, 2, 2), window_size=(-1, -1), qk_norm=True,
                                   cross_attn_norm=True, eps=1e-6, model_type="t2v")),
    "wan_14b": ("WAN21_T2V", dict(image_model="wan2.1", dim=5120, ffn_dim=13824, num_heads=40, num_layers=40, in_dim=16,
                                  out_dim=16, freq_dim=256, patch_size=(1, 2, 2), window_size=(-1, -1), qk_norm=True,
                                  cross_attn_norm=True, eps=1e-6, model_type="t2v")),
    "hunyuan_tiny": ("HunyuanVideo", dict(image_model="hunyuan_video", in_channels=16, out_channels=16, patch_size=[1, 2, 2],
                                          vec_in_dim=None, context_in_dim=64, hidden_size=256, mlp_ratio=2.0, num_heads=2,
                                          depth=3, depth_single_blocks=1, axes_dim=[16, 56, 56], theta=256, qkv_bias=True,
                                          guidance_embed=False, byt5=False, meanflow=False, use_cond_type_embedding=False,
                                          vision_in_dim=None, meanflow_sum=False)),
    "hunyuan15_tiny": ("HunyuanVideo15", dict(image_model="hunyuan_video", in_channels=65, out_channels=32,
                                              patch_size=[1, 1, 1], vec_in_dim=None, context_in_dim=64, hidden_size=256,
                                              mlp_ratio=2.0, num_heads=2, depth=3, depth_single_blocks=1,
                                              axes_dim=[16, 56, 56], theta=256, qkv_bias=True, guidance_embed=False,
                                              byt5=False, meanflow=False, use_cond_type_embedding=True,
                                              vision_in_dim=1152, meanflow_sum=True)),
    "ltxv_tiny": ("LTXV", dict(image_model="ltxv", num_layers=3, attention_head_dim=64, num_attention_heads=2,
                               cross_attention_dim=128, caption_channels=64, in_channels=128)),
    "mochi_tiny": ("GenmoMochi", dict(image_model="mochi_preview", depth=3, patch_size=2, num_heads=2, hidden_size_x=256,
                                      hidden_size_y=128, mlp_ratio_x=48.0, mlp_ratio_y=2.0, learn_sigma=False, in_channels=12,
                                      qk_norm=True, qkv_bias=False, out_bias=True, attn_drop=0.0, patch_embed_bias=True,
                                      posenc_preserve_area=True, timestep_mlp_bias=True, attend_to_padding=False,
                                      timestep_scale=1000.0, use_t5=True, t5_feat_dim=64, t5_token_length=16,
                                      rope_theta=10000.0)),
    "kandinsky5_tiny": ("Kandinsky5", dict(image_model="kandinsky5", model_dim=128, ff_dim=256, time_dim=64,
                                           visual_embed_dim=132, in_text_dim=64, in_text_dim2=32, num_text_blocks=1,
                                           num_visual_blocks=3, axes_dims=(16, 24, 24))),
    # Cosmos-Predict2 (MiniTrainDIT): a family the pack refuses; tests check the message.
    "cosmos_predict2_tiny": ("CosmosT2IPredict2", dict(image_model="cosmos_predict2", max_img_h=240, max_img_w=240,
                                                       max_frames=128, in_channels=16, out_channels=16, patch_spatial=2,
                                                       patch_temporal=1, model_channels=128, concat_padding_mask=True,
                                                       crossattn_emb_channels=64, pos_emb_cls="rope3d",
                                                       pos_emb_learnable=True, pos_emb_interpolation="crop", min_fps=1,
                                                       max_fps=30, use_adaln_lora=True, adaln_lora_dim=32, num_blocks=2,
                                                       num_heads=2, extra_per_block_abs_pos_emb=False,
                                                       rope_h_extrapolation_ratio=4.0, rope_w_extrapolation_ratio=4.0,
                                                       rope_t_extrapolation_ratio=1.0)),
}


@torch.no_grad()
def randomize_(module: torch.nn.Module, seed: int = 0) -> None:
    """Fill every parameter with scale-aware random values (norm gains near 1, fan-in scaled matrices).

    Drawn on each parameter's own device, so a 14B model on a GPU fills in seconds.
    """
    generators = {}
    for name, param in module.named_parameters():
        if param.device not in generators:
            generators[param.device] = torch.Generator(device=param.device).manual_seed(seed)
        values = torch.randn(param.shape, generator=generators[param.device], dtype=torch.float32, device=param.device)
        if param.ndim >= 2:
            values /= math.sqrt(math.prod(param.shape[1:]))
        elif name.endswith(("weight", "scale")):
            values = 1 + 0.1 * values
        else:
            values *= 0.02
        param.copy_(values.to(param.dtype))


def random_model(name: str, dtype: torch.dtype = torch.float32, device: str = "cpu", seed: int = 0):
    """A ModelPatcher around a real ComfyUI model (model_base + ldm class) of config `name` with random weights."""
    import comfy.model_patcher
    import comfy.ops
    import comfy.supported_models

    config_class, unet_config = CONFIGS[name]
    config = getattr(comfy.supported_models, config_class)(dict(unet_config))
    config.set_inference_dtype(dtype, None)
    config.custom_operations = comfy.ops.disable_weight_init  # weights are filled below, skip default init
    model = config.get_model({}, device=device)
    randomize_(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device(device), offload_device=torch.device("cpu"))



def random_wan_vae_state_dict(dim: int = 8, seed: int = 0) -> dict:
    """State dict of a Wan 2.1 VAE of base width `dim` with random weights (ComfyUI's VAE() detects it)."""
    from comfy.ldm.wan.vae import WanVAE

    vae = WanVAE(dim=dim, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                 temperal_downsample=[False, True, True], dropout=0.0)
    randomize_(vae, seed)
    return vae.state_dict()


def random_wan_vae(dim: int = 8, seed: int = 0):
    """A ComfyUI VAE object around a random tiny Wan 2.1 VAE."""
    import comfy.sd

    return comfy.sd.VAE(sd=random_wan_vae_state_dict(dim, seed))
