"""Writes the shipped workflows (workflows/*.json, ComfyUI's UI format) from the compact graphs below, and their
template-browser thumbnails (workflows/*.jpg) from a real run of each.

    python tools/build_workflows.py [--thumbnails [NAME ...]]

It starts a throwaway ComfyUI server (the e2e tests' helper, ComfyUI found as
the tests find it) and reads /object_info, so widget order, control widgets,
slots and link types are exactly what the frontend would save. Edit a graph
here, rerun, commit the JSON; tests/e2e/test_workflows.py checks the files
against /object_info and runs them. With --thumbnails each workflow then runs
on the tiny trained models and the bundled clip (CPU, about a minute and a
half in all); four frames of the videos it saves become its thumbnail, which
ComfyUI's template browser shows for custom-node templates (same name, .jpg).
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from difftrack_devkit.host import REPO
from difftrack_devkit.server import input_specs, is_widget, ui_to_api
from difftrack_devkit.testbed import FIRST_FRAME_MASK
WAN_REPACKAGED = "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files"
MODELS = {
    "wan2.1_t2v_1.3B_bf16.safetensors": f"{WAN_REPACKAGED}/diffusion_models/wan2.1_t2v_1.3B_bf16.safetensors",
    "wan_2.1_vae.safetensors": f"{WAN_REPACKAGED}/vae/wan_2.1_vae.safetensors",
    "umt5_xxl_fp8_e4m3fn_scaled.safetensors": f"{WAN_REPACKAGED}/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors",
    "clip_vision_h.safetensors": f"{WAN_REPACKAGED}/clip_vision/clip_vision_h.safetensors",
    "Wan21-WanMove_fp8_scaled_e4m3fn_KJ.safetensors":
        "https://huggingface.co/Kijai/WanVideo_comfy_fp8_scaled/resolve/main/WanMove/Wan21-WanMove_fp8_scaled_e4m3fn_KJ.safetensors",
    "lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors":
        "https://huggingface.co/Kijai/WanVideo_comfy/resolve/main/Lightx2v/lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors",
}
DIRECTORIES = {"UNETLoader": "diffusion_models", "VAELoader": "vae", "CLIPLoader": "text_encoders",
               "CLIPVisionLoader": "clip_vision", "LoraLoaderModelOnly": "loras"}

WAN = {"unet_name": "wan2.1_t2v_1.3B_bf16.safetensors", "weight_dtype": "default"}
VAE = {"vae_name": "wan_2.1_vae.safetensors"}
TEXT = {"clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "type": "wan", "device": "default"}
SCALE = {"upscale_method": "bilinear", "width": 832, "height": 480, "crop": "center"}
VIDEO_OUT = {"format": "mp4", "codec": "h264"}
CAG = {"cag_scale": 1.0, "blocks": "auto", "start_percent": 0.0, "end_percent": 1.0, "variant": "renormalised",
       "reuse_prefix": True}
PROMPT = "a red fox trotting across a snowy meadow, tracking shot, soft morning light"
NEGATIVE = "static, still image, blurry, distorted, jittery motion, low quality"
SAMPLING = {"seed": 42, "steps": 30, "cfg": 6.0, "sampler_name": "uni_pc", "scheduler": "simple"}


def text_to_video(y: int) -> tuple[dict, list]:
    """Loaders, prompts and an empty 832x480x33 latent (the prompt column starting at height y), and their links."""
    nodes = {
        "model": ("UNETLoader", WAN, (0, 0)),
        "clip": ("CLIPLoader", TEXT, (0, 160)),
        "vae": ("VAELoader", VAE, (0, 330)),
        "positive": ("CLIPTextEncode", {"text": PROMPT}, (360, y)),
        "negative": ("CLIPTextEncode", {"text": NEGATIVE}, (360, y + 240)),
        "latent": ("EmptyHunyuanLatentVideo", {"width": 832, "height": 480, "length": 33, "batch_size": 1}, (360, y + 480)),
    }
    return nodes, [("clip", 0, "positive", "clip"), ("clip", 0, "negative", "clip")]


def sampler_links(sampler: str, model: str) -> list:
    return [(model, 0, sampler, "model"), ("positive", 0, sampler, "positive"), ("negative", 0, sampler, "negative"),
            ("latent", 0, sampler, "latent_image")]


T2V_NODES, T2V_LINKS = text_to_video(0)
PATCH_NODES, PATCH_LINKS = text_to_video(330)
# Loaders and a loaded video scaled to 832x480: the front of every graph that reads a real video.
VIDEO_NODES = {
    "model": ("UNETLoader", WAN, (0, 0)),
    "vae": ("VAELoader", VAE, (0, 160)),
    "video": ("LoadVideo", {"file": "input.mp4"}, (0, 300)),
    "frames": ("GetVideoComponents", {}, (0, 660)),
    "scale": ("ImageScale", SCALE, (360, 660)),
}
VIDEO_LINKS = [("video", 0, "frames", "video"), ("frames", 0, "scale", "image")]

# Each graph: nodes as key -> (class, widget values, (x, y)); links as (source key, output slot, target key, input name).
GRAPHS = {
    "difftrack_track_points_wan21": dict(
        note=("## Track points with the video DiT's own attention\n"
              "1. Download the models below (the loaders list them too) and load your video in **Load Video**.\n"
              "2. Edit **points** in *Track Points*: JSON in pixels of the 832x480 frames, e.g. "
              '`[{"x": 400, "y": 240}]`; add `"t": 10` to query on frame 10, or set *grid_size* for a grid.\n'
              "3. Queue. You get the video with drawn tracks and, in `output/difftrack/`, the tracks as JSON, npz and CSV.\n\n"
              "Wan 2.1 T2V 1.3B (bf16) fits 24 GB at 832x480; keep clips under ~80 frames or lower *frames_per_chunk*. "
              "The default `refined+pixel` read-out aligns each point on the frames' pixels (still points stay still); "
              "`refined` is the DiT's sub-token read-out alone; `argmax` is the published DiffTrack read-out."),
        nodes={
            **VIDEO_NODES,
            "track": ("DiffTrackTrackPoints", {"points": '[{"x": 300, "y": 200}, {"x": 520, "y": 260}, {"x": 416, "y": 360}]'},
                      (700, 0)),
            "draw": ("DiffTrackDrawTracks", {}, (1100, 0)),
            "fps": ("CreateVideo", {"fps": 16.0}, (1440, 0)),
            "save": ("SaveVideo", {"filename_prefix": "difftrack/tracks", **VIDEO_OUT}, (1780, 0)),
            "files": ("DiffTrackSaveTracks", {"filename_prefix": "difftrack/tracks"}, (1100, 420)),
        },
        links=[*VIDEO_LINKS, ("model", 0, "track", "model"), ("vae", 0, "track", "vae"), ("scale", 0, "track", "images"),
               ("scale", 0, "draw", "images"), ("track", 0, "draw", "tracks"), ("draw", 0, "fps", "images"),
               ("fps", 0, "save", "video"), ("track", 0, "files", "tracks")],
    ),
    "difftrack_mask_propagation_wan21": dict(
        note=("## Follow an object through a video: propagate a mask with the video DiT's attention\n"
              "1. Load your video in **Load Video** and queue once: *Save Image* writes its first frame (832x480) "
              "to `output/difftrack/`.\n"
              "2. Load that frame in **Load Image**, right-click > *Open in MaskEditor*, paint the object(s) and "
              "save. Several objects: one Load Image per object, batched (*mask_objects* `batch`), or a label "
              "image of object ids (*mask_objects* `values`). Drew on another frame? Set *annotated_frame*.\n"
              "3. Queue again. *Propagate Mask* carries the mask forward and backward through every frame (runs of "
              "13 frames, memory flat in the video's length); you get the preview with tinted objects and the "
              "mask video in `output/difftrack/`. Its *prompts* output gives per frame a box and points inside and "
              "outside each object, in the JSON SAM nodes read, to refine the masks with SAM 2/3 if you have it.\n\n"
              "On the pack's tiny test model the DiT's attention propagates masks less well than matching VAE "
              "latents (README, Limits): measured results on full-size Wan are still to come."),
        nodes={
            **VIDEO_NODES,
            "first": ("ImageFromBatch", {"batch_index": 0, "length": 1}, (700, 420)),
            "save_first": ("SaveImage", {"filename_prefix": "difftrack/first_frame"}, (1040, 420)),
            "annotated": ("LoadImage", {"image": FIRST_FRAME_MASK}, (360, 0)),
            "propagate": ("DiffTrackPropagateMask", {}, (700, 0)),
            "fps": ("CreateVideo", {"fps": 16.0}, (1100, 0)),
            "save": ("SaveVideo", {"filename_prefix": "difftrack/masks_preview", **VIDEO_OUT}, (1440, 0)),
            "mask_image": ("MaskToImage", {}, (1100, 240)),
            "mask_fps": ("CreateVideo", {"fps": 16.0}, (1440, 240)),
            "mask_save": ("SaveVideo", {"filename_prefix": "difftrack/masks", **VIDEO_OUT}, (1780, 240)),
        },
        links=[*VIDEO_LINKS, ("scale", 0, "first", "image"), ("first", 0, "save_first", "images"),
               ("annotated", 1, "propagate", "mask"), ("scale", 0, "propagate", "images"),
               ("model", 0, "propagate", "model"), ("vae", 0, "propagate", "vae"),
               ("propagate", 2, "fps", "images"), ("fps", 0, "save", "video"),
               ("propagate", 0, "mask_image", "mask"), ("mask_image", 0, "mask_fps", "images"),
               ("mask_fps", 0, "mask_save", "video")],
    ),
    "difftrack_correspondence_analysis_wan21": dict(
        note=("## Which blocks of your model track? Correspondence Analysis, then tracking with its choice\n"
              "*Correspondence Analysis* runs one forward per noise level (13 frames spread over your video, every "
              "block captured at once) and scores every block x σ: the label-free score (cycle consistency, peak "
              "sharpness, appearance agreement) needs no reference; connect *reference_tracks* (from another "
              "tracker, or Track Points on a clip you trust) for DiffTrack's own accuracy, confidence and attention "
              "score. Its heat maps show where correspondence lives; its best block and σ go straight into *Track "
              "Points*, which draws the tracks. The table is saved as CSV in `output/difftrack/`. "
              "Wan 2.1 T2V 1.3B at 832x480 fits 24 GB; a sweep costs about 6 plain forwards."),
        nodes={
            **VIDEO_NODES,
            "analysis": ("DiffTrackCorrespondenceAnalysis", {}, (700, 0)),
            "track": ("DiffTrackTrackPoints", {"points": '[{"x": 300, "y": 200}, {"x": 520, "y": 260}, {"x": 416, "y": 360}]'},
                      (1100, 0)),
            "draw": ("DiffTrackDrawTracks", {}, (1500, 0)),
            "fps": ("CreateVideo", {"fps": 16.0}, (1840, 0)),
            "save": ("SaveVideo", {"filename_prefix": "difftrack/analysis_tracks", **VIDEO_OUT}, (2180, 0)),
        },
        links=[*VIDEO_LINKS, ("model", 0, "analysis", "model"), ("vae", 0, "analysis", "vae"),
               ("scale", 0, "analysis", "images"), ("analysis", 1, "track", "blocks"), ("analysis", 2, "track", "sigma"),
               ("model", 0, "track", "model"), ("vae", 0, "track", "vae"), ("scale", 0, "track", "images"),
               ("scale", 0, "draw", "images"), ("track", 0, "draw", "tracks"), ("draw", 0, "fps", "images"),
               ("fps", 0, "save", "video")],
    ),
    "difftrack_attention_map_wan21": dict(
        note=("## Where did this patch go? Attention maps for a clicked point\n"
              "Load a video, set **x**, **y** and **query_frame** in *Attention Map* (pixels of the 832x480 frames) "
              "and queue: every frame shows the cross-frame attention cost of that point, drawn over the video. "
              "*Extract Features* reads q/k of the middle block (`auto`); try other blocks to see where correspondence "
              "lives in your model. Wan 2.1 T2V 1.3B fits 24 GB."),
        nodes={
            **VIDEO_NODES,
            "features": ("DiffTrackExtractFeatures", {}, (700, 0)),
            "map": ("DiffTrackAttentionMap", {"x": 416, "y": 240}, (1100, 0)),
            "fps": ("CreateVideo", {"fps": 16.0}, (1440, 0)),
            "save": ("SaveVideo", {"filename_prefix": "difftrack/attention_map", **VIDEO_OUT}, (1780, 0)),
        },
        links=[*VIDEO_LINKS, ("model", 0, "features", "model"), ("vae", 0, "features", "vae"),
               ("scale", 0, "features", "images"), ("features", 0, "map", "features"), ("scale", 0, "map", "images"),
               ("map", 0, "fps", "images"), ("fps", 0, "save", "video")],
    ),
    "difftrack_cag_vs_cfg_wan21": dict(
        note=("## Cross-Attention Guidance next to plain CFG, same seed\n"
              "Both samplers share the prompt, seed and steps; the lower one adds CAG (DiffTrack), which pushes each "
              "step away from a prediction whose cross-frame attention is cut, for steadier motion. It costs about "
              "1.24x a CFG step. Tweak *cag_scale* (0 = plain CFG) and *blocks*. Wan 2.1 T2V 1.3B at 832x480, "
              "33 frames fits 24 GB."),
        nodes={
            **T2V_NODES,
            "cfg": ("KSampler", SAMPLING, (760, 0)),
            "cag": ("DiffTrackCAGSampler", {**SAMPLING, **CAG}, (760, 420)),
            "decode_cfg": ("VAEDecode", {}, (1140, 0)),
            "decode_cag": ("VAEDecode", {}, (1140, 420)),
            "video_cfg": ("CreateVideo", {"fps": 16.0}, (1400, 0)),
            "video_cag": ("CreateVideo", {"fps": 16.0}, (1400, 420)),
            "save_cfg": ("SaveVideo", {"filename_prefix": "difftrack/cfg", **VIDEO_OUT}, (1700, 0)),
            "save_cag": ("SaveVideo", {"filename_prefix": "difftrack/cag", **VIDEO_OUT}, (1700, 420)),
        },
        links=[*T2V_LINKS, *sampler_links("cfg", "model"), *sampler_links("cag", "model"),
               ("cfg", 0, "decode_cfg", "samples"), ("vae", 0, "decode_cfg", "vae"),
               ("cag", 0, "decode_cag", "samples"), ("vae", 0, "decode_cag", "vae"),
               ("decode_cfg", 0, "video_cfg", "images"), ("decode_cag", 0, "video_cag", "images"),
               ("video_cfg", 0, "save_cfg", "video"), ("video_cag", 0, "save_cag", "video")],
    ),
    "difftrack_motion_transfer_wan21": dict(
        note=("## Make a new video move like a reference video (motion transfer, after DiTFlow)\n"
              "1. Load the reference in **Load Video**: its first 33 frames, scaled to 832x480, are used.\n"
              "2. *Motion Flow from Video* reads its motion from the DiT's own attention (the picture shows the "
              "flow from the first latent frame: white is still, the hue is the direction).\n"
              "3. Write the new prompt. The upper sampler is guided by that flow on its first 20% of steps "
              "(*Motion Transfer Sampler*: the noisy latent is optimised until the attention moves the same way); "
              "the lower one is the same seed unguided, for comparison. Both videos go to `output/difftrack/`.\n\n"
              "Generate at the reference's size and length (here 832x480, 33 frames) with the same model. Guidance "
              "differentiates through the DiT: on Wan 1.3B at 81 frames the whole run takes about 1.6x a plain "
              "one's time (a gradient every third iteration; `gradient_every` 1 is DiTFlow's 2.4x) at under 9 GiB. "
              "On the pack's tiny test model it moves generations only a little towards the reference (README, "
              "Benchmarks)."),
        nodes={
            **T2V_NODES,
            "video": ("LoadVideo", {"file": "input.mp4"}, (0, 500)),
            "frames": ("GetVideoComponents", {}, (0, 860)),
            "scale": ("ImageScale", SCALE, (360, 860)),
            "cut": ("ImageFromBatch", {"batch_index": 0, "length": 33}, (360, 1100)),
            "flow": ("DiffTrackMotionFlow", {}, (760, 860)),
            "flow_video": ("CreateVideo", {"fps": 8.0}, (1140, 860)),
            "save_flow": ("SaveVideo", {"filename_prefix": "difftrack/motion_flow", **VIDEO_OUT}, (1400, 860)),
            "transfer": ("DiffTrackMotionTransferSampler", {}, (760, 0)),
            "plain": ("KSamplerSelect", {"sampler_name": "euler"}, (760, 560)),
            "guider": ("CFGGuider", {"cfg": 6.0}, (760, 680)),
            "noise": ("RandomNoise", {"noise_seed": 42}, (1140, 680)),
            "sigmas": ("BasicScheduler", {"scheduler": "simple", "steps": 30, "denoise": 1.0}, (1140, 560)),
            "guided": ("SamplerCustomAdvanced", {}, (1140, 0)),
            "unguided": ("SamplerCustomAdvanced", {}, (1140, 300)),
            "decode_guided": ("VAEDecode", {}, (1500, 0)),
            "decode_unguided": ("VAEDecode", {}, (1500, 300)),
            "video_guided": ("CreateVideo", {"fps": 16.0}, (1760, 0)),
            "video_unguided": ("CreateVideo", {"fps": 16.0}, (1760, 300)),
            "save_guided": ("SaveVideo", {"filename_prefix": "difftrack/motion_transfer", **VIDEO_OUT}, (2060, 0)),
            "save_unguided": ("SaveVideo", {"filename_prefix": "difftrack/unguided", **VIDEO_OUT}, (2060, 300)),
        },
        links=[*T2V_LINKS, ("video", 0, "frames", "video"), ("frames", 0, "scale", "image"), ("scale", 0, "cut", "image"),
               ("model", 0, "flow", "model"), ("vae", 0, "flow", "vae"), ("cut", 0, "flow", "images"),
               ("flow", 1, "flow_video", "images"), ("flow_video", 0, "save_flow", "video"),
               ("flow", 0, "transfer", "motion_flow"),
               ("model", 0, "guider", "model"), ("positive", 0, "guider", "positive"), ("negative", 0, "guider", "negative"),
               ("model", 0, "sigmas", "model"),
               *[link for run, sampler in (("guided", "transfer"), ("unguided", "plain")) for link in (
                   ("noise", 0, run, "noise"), ("guider", 0, run, "guider"), (sampler, 0, run, "sampler"),
                   ("sigmas", 0, run, "sigmas"), ("latent", 0, run, "latent_image"))],
               ("guided", 0, "decode_guided", "samples"), ("vae", 0, "decode_guided", "vae"),
               ("unguided", 0, "decode_unguided", "samples"), ("vae", 0, "decode_unguided", "vae"),
               ("decode_guided", 0, "video_guided", "images"), ("decode_unguided", 0, "video_unguided", "images"),
               ("video_guided", 0, "save_guided", "video"), ("video_unguided", 0, "save_unguided", "video")],
    ),
    "difftrack_motion_embeddings_wan21": dict(
        note=("## Learn a reference's motion once, reuse it for new prompts (motion embeddings, after DiTFlow)\n"
              "1. Load the reference in **Load Video**: its first 33 frames, scaled to 832x480, are used; *Motion "
              "Flow from Video* reads its motion from the DiT's own attention.\n"
              "2. *Learn Motion Embeddings* generates the first prompt while it learns position tables (every "
              "block's queries and keys, after RoPE) that make the attention move like the reference's; *Save Motion "
              "Embeddings* writes them to `output/motion_embeddings/`.\n"
              "3. *Apply Motion Embeddings* patches the model with them: the KSampler below generates the second "
              "prompt with another seed and no optimisation. Later, *Load Motion Embeddings* reads a saved file "
              "instead of learning again.\n\n"
              "Use the same model, size, length (here 832x480, 33 frames) and schedule (steps, scheduler) for "
              "learning and reuse. On the pack's tiny test model the effect is small (README, Benchmarks)."),
        nodes={
            **T2V_NODES,
            "second": ("CLIPTextEncode", {"text": "a white dog running along a beach, tracking shot, evening light"},
                       (360, 720)),
            "video": ("LoadVideo", {"file": "input.mp4"}, (0, 500)),
            "frames": ("GetVideoComponents", {}, (0, 860)),
            "scale": ("ImageScale", SCALE, (360, 960)),
            "cut": ("ImageFromBatch", {"batch_index": 0, "length": 33}, (360, 1200)),
            "flow": ("DiffTrackMotionFlow", {}, (760, 860)),
            "sigmas": ("BasicScheduler", {"scheduler": "simple", "steps": 30, "denoise": 1.0}, (760, 600)),
            "learn": ("DiffTrackLearnMotionEmbeddings", {"noise_seed": 42, "cfg": 6.0}, (1140, 0)),
            "save_embeddings": ("DiffTrackSaveMotionEmbeddings", {"filename_prefix": "difftrack"}, (1520, 560)),
            "apply": ("DiffTrackApplyMotionEmbeddings", {}, (1520, 420)),
            "reuse": ("KSampler", {**SAMPLING, "seed": 43, "sampler_name": "euler"}, (1900, 420)),
            "decode_learned": ("VAEDecode", {}, (1520, 0)),
            "decode_reused": ("VAEDecode", {}, (2260, 420)),
            "video_learned": ("CreateVideo", {"fps": 16.0}, (1760, 0)),
            "video_reused": ("CreateVideo", {"fps": 16.0}, (2500, 420)),
            "save_learned": ("SaveVideo", {"filename_prefix": "difftrack/motion_embeddings_learning", **VIDEO_OUT},
                             (2060, 0)),
            "save_reused": ("SaveVideo", {"filename_prefix": "difftrack/motion_embeddings_reused", **VIDEO_OUT},
                            (2760, 420)),
        },
        links=[*T2V_LINKS, ("clip", 0, "second", "clip"), ("video", 0, "frames", "video"),
               ("frames", 0, "scale", "image"), ("scale", 0, "cut", "image"),
               ("model", 0, "flow", "model"), ("vae", 0, "flow", "vae"), ("cut", 0, "flow", "images"),
               ("model", 0, "sigmas", "model"), *sampler_links("learn", "model"),
               ("flow", 0, "learn", "motion_flow"), ("sigmas", 0, "learn", "sigmas"),
               ("learn", 1, "save_embeddings", "motion_embeddings"),
               ("model", 0, "apply", "model"), ("learn", 1, "apply", "motion_embeddings"),
               ("apply", 0, "reuse", "model"), ("second", 0, "reuse", "positive"), ("negative", 0, "reuse", "negative"),
               ("latent", 0, "reuse", "latent_image"),
               ("learn", 0, "decode_learned", "samples"), ("vae", 0, "decode_learned", "vae"),
               ("reuse", 0, "decode_reused", "samples"), ("vae", 0, "decode_reused", "vae"),
               ("decode_learned", 0, "video_learned", "images"), ("decode_reused", 0, "video_reused", "images"),
               ("video_learned", 0, "save_learned", "video"), ("video_reused", 0, "save_reused", "video")],
    ),
    "difftrack_ksampler_cag_patch_wan21": dict(
        note=("## The stock KSampler with Cross-Attention Guidance\n"
              "**CAG** patches the model: any sampler that takes a MODEL now applies CAG on the steps between "
              "*start_percent* and *end_percent*. Wan 2.1 T2V 1.3B at 832x480, 33 frames fits 24 GB."),
        nodes={
            **PATCH_NODES,
            "cag_patch": ("DiffTrackCAG", CAG, (360, 0)),
            "sampler": ("KSampler", SAMPLING, (760, 0)),
            "decode": ("VAEDecode", {}, (1140, 0)),
            "video": ("CreateVideo", {"fps": 16.0}, (1400, 0)),
            "save": ("SaveVideo", {"filename_prefix": "difftrack/cag_ksampler", **VIDEO_OUT}, (1700, 0)),
        },
        links=[*PATCH_LINKS, ("model", 0, "cag_patch", "model"), *sampler_links("sampler", "cag_patch"),
               ("sampler", 0, "decode", "samples"), ("vae", 0, "decode", "vae"), ("decode", 0, "video", "images"),
               ("video", 0, "save", "video")],
    ),
    "difftrack_wanmove_from_video_tracks": dict(
        note=("## Move a new video the way a real one moves (DiffTrack tracks -> core WanMove)\n"
              "1. Load a video of at least 81 frames; *Track Points* (Wan 2.1 T2V 1.3B) tracks the points you give it.\n"
              "2. The first frame starts a WanMove generation (Wan 2.1 I2V 14B WanMove, fp8, with the lightx2v "
              "distill LoRA: 6 steps, cfg 1) whose motion follows those tracks.\n"
              "Put points on what should move; a 5x5 grid (*grid_size* 5) moves the whole scene. 832x480, 81 frames "
              "fits 24 GB with ComfyUI's offloading, which unloads the tracking model when the generation needs the memory."),
        nodes={
            "video": ("LoadVideo", {"file": "input.mp4"}, (0, 0)),
            "frames": ("GetVideoComponents", {}, (0, 360)),
            "scale": ("ImageScale", SCALE, (0, 520)),
            "track_model": ("UNETLoader", WAN, (360, 0)),
            "vae": ("VAELoader", VAE, (360, 160)),
            "track": ("DiffTrackTrackPoints", {"points": '[{"x": 300, "y": 200}, {"x": 520, "y": 260}, {"x": 416, "y": 360}]'},
                      (700, 0)),
            "first": ("ImageFromBatch", {"batch_index": 0, "length": 1}, (360, 520)),
            "vision": ("CLIPVisionLoader", {"clip_name": "clip_vision_h.safetensors"}, (360, 700)),
            "vision_encode": ("CLIPVisionEncode", {"crop": "center"}, (700, 700)),
            "clip": ("CLIPLoader", TEXT, (360, 860)),
            "positive": ("CLIPTextEncode", {"text": "the same scene, moving naturally, high quality video"}, (700, 860)),
            "negative": ("CLIPTextEncode", {"text": NEGATIVE}, (700, 1100)),
            "move": ("WanMoveTrackToVideo", {"width": 832, "height": 480, "length": 81, "batch_size": 1, "strength": 1.0},
                     (1100, 500)),
            "move_model": ("UNETLoader", {"unet_name": "Wan21-WanMove_fp8_scaled_e4m3fn_KJ.safetensors",
                                          "weight_dtype": "default"}, (1100, 0)),
            "lora": ("LoraLoaderModelOnly", {"lora_name": "lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors",
                                             "strength_model": 1.0}, (1100, 160)),
            "shift": ("ModelSamplingSD3", {"shift": 5.0}, (1100, 330)),
            "sampler": ("KSampler", {"seed": 42, "steps": 6, "cfg": 1.0, "sampler_name": "er_sde", "scheduler": "simple"},
                        (1500, 0)),
            "decode": ("VAEDecode", {}, (1880, 0)),
            "out": ("CreateVideo", {"fps": 16.0}, (2140, 0)),
            "save": ("SaveVideo", {"filename_prefix": "difftrack/wanmove", **VIDEO_OUT}, (2440, 0)),
        },
        links=[("video", 0, "frames", "video"), ("frames", 0, "scale", "image"),
               ("track_model", 0, "track", "model"), ("vae", 0, "track", "vae"), ("scale", 0, "track", "images"),
               ("scale", 0, "first", "image"), ("vision", 0, "vision_encode", "clip_vision"),
               ("first", 0, "vision_encode", "image"), ("clip", 0, "positive", "clip"), ("clip", 0, "negative", "clip"),
               ("positive", 0, "move", "positive"), ("negative", 0, "move", "negative"), ("vae", 0, "move", "vae"),
               ("track", 0, "move", "tracks"), ("first", 0, "move", "start_image"),
               ("vision_encode", 0, "move", "clip_vision_output"),
               ("move_model", 0, "lora", "model"), ("lora", 0, "shift", "model"), ("shift", 0, "sampler", "model"),
               ("move", 0, "sampler", "positive"), ("move", 1, "sampler", "negative"), ("move", 2, "sampler", "latent_image"),
               ("sampler", 0, "decode", "samples"), ("vae", 0, "decode", "vae"), ("decode", 0, "out", "images"),
               ("out", 0, "save", "video")],
    ),
}


def default_value(spec: list):
    kind, options = spec[0], spec[1] if len(spec) > 1 else {}
    if "default" in options:
        return options["default"]
    if isinstance(kind, list) or kind == "COMBO":
        choices = kind if isinstance(kind, list) else options.get("options", [])
        return choices[0] if choices else ""
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}[kind]


def build(graph: dict, object_info: dict) -> dict:
    keys = ["__note__", *graph["nodes"]]
    ids = {key: index + 1 for index, key in enumerate(keys)}
    nodes = {"__note__": {"id": 1, "type": "MarkdownNote", "pos": [0, -420], "size": [680, 380], "flags": {}, "order": 0,
                          "mode": 0, "inputs": [], "outputs": [], "properties": {}, "widgets_values": [graph["note"]],
                          "title": "Read me"}}
    linked = {(target, name) for _, _, target, name in graph["links"]}
    for order, (key, (kind, widgets, pos)) in enumerate(graph["nodes"].items(), start=1):
        info = object_info[kind]
        unknown = set(widgets) - {name for name, spec in input_specs(info)}
        if unknown:
            raise ValueError(f"{kind} has no inputs {sorted(unknown)}")
        inputs, values = [], []
        for name, spec in input_specs(info):
            if is_widget(spec):
                values.append(widgets.get(name, default_value(spec)))
                if len(spec) > 1 and spec[1].get("control_after_generate"):
                    values.append("fixed")
                if (key, name) in linked:  # a widget fed by a link: its socket, as the frontend saves it
                    inputs.append({"name": name, "type": spec[0], "widget": {"name": name}, "link": None})
            else:
                inputs.append({"name": name, "type": spec[0] if isinstance(spec[0], str) else "COMBO", "link": None})
        outputs = [{"name": name, "type": kind_, "links": [], "slot_index": slot}
                   for slot, (kind_, name) in enumerate(zip(info["output"], info["output_name"]))]
        properties = {"Node name for S&R": kind}
        if kind in DIRECTORIES:
            file = next(iter(v for k, v in widgets.items() if k.endswith("_name")))
            properties["models"] = [{"name": file, "url": MODELS[file], "directory": DIRECTORIES[kind]}]
        nodes[key] = {"id": ids[key], "type": kind, "pos": list(pos), "size": [320, 60 + 26 * (len(inputs) + len(values))],
                      "flags": {}, "order": order, "mode": 0, "inputs": inputs, "outputs": outputs,
                      "properties": properties, "widgets_values": values}
    links = []
    for link_id, (source, slot, target, name) in enumerate(graph["links"], start=1):
        output = nodes[source]["outputs"][slot]
        target_input = next(i for i in nodes[target]["inputs"] if i["name"] == name)
        output["links"].append(link_id)
        target_input["link"] = link_id
        links.append([link_id, ids[source], slot, ids[target], nodes[target]["inputs"].index(target_input), output["type"]])
    return {"last_node_id": len(keys), "last_link_id": len(links), "nodes": list(nodes.values()), "links": links,
            "groups": [], "config": {}, "extra": {"ds": {"scale": 0.7, "offset": [60, 480]}}, "version": 0.4}


THUMBNAIL_SIZE = 512  # the template browser shows square cards


def thumbnail(videos: list[Path], path: Path, picture: Path | None = None) -> None:
    """Four evenly spaced frames in a 2x2 grid (of one video; two of each of two videos, a row each; the middle
    frame of each of three or four), as a JPEG.
    With a picture (a node's preview, such as the analysis heat map) it fills the top half instead, on white, and two
    frames of the first video the bottom half."""
    import av
    import numpy as np
    from PIL import Image

    tiles = []
    if picture is not None:
        videos = videos[:1]
    for video in videos:
        with av.open(str(video)) as container:
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
        count = max(1, 4 // len(videos))
        if count == 1:  # three or more videos: the middle frame of each
            tiles.append(frames[len(frames) // 2])
        else:
            tiles += [frames[round(i * (len(frames) - 1) / (count - 1))] for i in range(count)]
    if picture is not None:
        tiles = [tiles[0], tiles[-1]]
    tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % 2)
    grid = np.concatenate([np.concatenate(tiles[i:i + 2], axis=1) for i in range(0, len(tiles), 2)], axis=0)
    if picture is not None:
        top = Image.new("RGB", (grid.shape[1], grid.shape[0]), (255, 255, 255))
        shown = Image.open(picture).convert("RGB")
        shown.thumbnail(top.size, Image.LANCZOS)
        top.paste(shown, ((top.width - shown.width) // 2, (top.height - shown.height) // 2))
        grid = np.concatenate([np.asarray(top), grid], axis=0)
    image = Image.fromarray(grid)
    image.resize((THUMBNAIL_SIZE, round(image.height * THUMBNAIL_SIZE / image.width)), Image.LANCZOS).save(path, quality=88)


def write_thumbnails(names: list[str]) -> None:
    from difftrack_devkit.testbed import DEMO_FRAMES, DEMO_SIZE, start_server, tiny_prompt

    server = start_server(Path(tempfile.mkdtemp(prefix="difftrack_thumbnails_")), trained=True)
    try:
        object_info = server.get("/object_info")
        for name in names:
            workflow = json.loads((REPO / "workflows" / f"{name}.json").read_text())
            prompt = tiny_prompt(ui_to_api(workflow, object_info), DEMO_SIZE, DEMO_FRAMES, steps=20, trained=True)
            entry = server.run(prompt, timeout=900)
            path = REPO / "workflows" / f"{name}.jpg"
            previews = [p for p in server.output_files(entry, ".png") if p.name.startswith("difftrack_analysis")]
            thumbnail(server.output_files(entry, ".mp4"), path, previews[0] if previews else None)
            print(f"wrote {path.relative_to(REPO)}")
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--thumbnails", nargs="*", metavar="NAME",
                        help="also run the named workflows (none named: every one) and write their thumbnails")
    args = parser.parse_args()
    from difftrack_devkit.testbed import start_server

    server = start_server(Path(tempfile.mkdtemp(prefix="difftrack_workflows_")))
    try:
        object_info = server.get("/object_info")
    finally:
        server.stop()
    for name, graph in GRAPHS.items():
        path = REPO / "workflows" / f"{name}.json"
        path.write_text(json.dumps(build(graph, object_info), indent=1) + "\n")
        print(f"wrote {path.relative_to(REPO)}")
    if args.thumbnails is not None:
        write_thumbnails(args.thumbnails or list(GRAPHS))


if __name__ == "__main__":
    main()
