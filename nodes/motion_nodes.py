"""Motion transfer (after DiTFlow): a reference video's motion read from the DiT's cross-frame attention."""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
import comfy.sample
import comfy.samplers
import comfy.utils
import folder_paths
import latent_preview
from comfy_api.latest import io, ui

from ..ditcorr.amf import FlowLoss, MotionFlow, colour_wheel, flow_colours
from ..ditcorr.motion_embeddings import MotionEmbeddings
from .motion_transfer import PositionModulation, TransferSettings, motion_flow, transfer_sampler
from .encoding import ENCODINGS, encode_with_progress
from .extract import progress_step
from .vocabulary import CATEGORY, blocks_tooltip, model_and_adapter, model_blocks

MotionFlowType = io.Custom("MOTION_FLOW")  # difftrack_pack.ditcorr.amf.MotionFlow
MotionEmbeddingsType = io.Custom("MOTION_EMBEDDINGS")  # difftrack_pack.ditcorr.motion_embeddings.MotionEmbeddings
EMBEDDINGS_FOLDER = "motion_embeddings"  # under ComfyUI's output folder


def flow_pictures(flow: MotionFlow, images: torch.Tensor, block: int, source: int) -> torch.Tensor:
    """[T, H, W, 3]: per latent frame, the flow from latent frame `source` in flow colours (white = still, one
    scale for the whole video) over the source frame nearest that latent frame, half and half, with the colour
    wheel in the top-left corner."""
    height, width = images.shape[1:3]
    tokens = flow.from_frame(block, source)  # [T, h, w, 2]
    colours = flow_colours(tokens, max(float(tokens.norm(dim=-1).max()), 1e-6)).permute(0, 3, 1, 2)
    colours = F.interpolate(colours, size=(height, width), mode="nearest").permute(0, 2, 3, 1)
    frames = images[[min(images.shape[0] - 1, round(p)) for p in flow.positions]].float().cpu()
    pictures = 0.5 * frames + 0.5 * colours
    size = max(16, min(height, width) // 5)
    pictures[:, 2:2 + size, 2:2 + size] = colour_wheel(size)
    return pictures


class MotionFlowFromVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DiffTrackMotionFlow",
            display_name="Motion Flow from Video (DiffTrack)",
            category=CATEGORY,
            description=("Reads a reference video's motion from the video DiT's own cross-frame attention (DiTFlow's "
                         "Attention Motion Flow): one clean forward of the encoded video, then per pair of latent "
                         "frames and per token the displacement to its most attended token. Outputs MOTION_FLOW for "
                         "motion-transfer guidance and a picture of the flow from one frame to every other."),
            inputs=[
                io.Model.Input("model", tooltip="The video DiT (the one you will generate with)."),
                io.Vae.Input("vae", tooltip="The model's VAE."),
                io.Image.Input("images", tooltip="The reference video whose motion to read."),
                io.String.Input("blocks", default="auto",
                                tooltip=blocks_tooltip("Guidance blocks whose attention gives the motion", "read")
                                        + " DiTFlow guided with block 15 of CogVideoX-2B's 30, 20 of 5B's 42."),
                io.Float.Input("temperature", default=2.0, min=0.01, max=100.0, step=0.01,
                               tooltip="τ multiplying the heads' mean attention logits before the softmax (DiTFlow: "
                                       "2 in its config, 5 in its ablation); guidance reads the flow with the same τ."),
                io.Float.Input("sigma", default=0.0, min=0.0, max=1.0, step=0.001,
                               tooltip="Noise level of the forward; 0 = the clean video, as DiTFlow reads it."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the noise when sigma > 0."),
                io.Combo.Input("encoding", options=list(ENCODINGS), default="native",
                               tooltip="native: the whole clip with the VAE's temporal compression, the latent layout "
                                       "a generation has (what guidance needs). per_frame: one latent frame per frame."),
                io.Int.Input("frame_window", default=0, min=0, max=1024,
                             tooltip="0: every ordered pair of latent frames (DiTFlow). N: only pairs at most N "
                                     "latent frames apart (FastVMT's local pairs: cheaper to guide with)."),
                io.Int.Input("picture_frame", default=0, min=0, max=100000,
                             tooltip="The latent frame whose flow to every other frame the picture shows."),
                io.Conditioning.Input("conditioning", optional=True,
                                      tooltip="An empty prompt (else a zero context), as DiTFlow reads the reference."),
            ],
            outputs=[
                MotionFlowType.Output(display_name="motion_flow"),
                io.Image.Output(display_name="picture",
                                tooltip="Per latent frame, the flow from picture_frame over the video (white = still; "
                                        "the hue is the direction, as on the wheel in the corner)."),
            ],
        )

    @classmethod
    def execute(cls, model, vae, images, blocks, temperature, sigma, seed, encoding, frame_window, picture_frame,
                conditioning=None) -> io.NodeOutput:
        used = model_blocks(blocks, "read", model)
        latent, positions = encode_with_progress(vae, images, encoding)
        if not 0 <= picture_frame < latent.shape[2]:
            raise ValueError(f"picture_frame {picture_frame} is outside the reference's {latent.shape[2]} latent frames "
                             f"(0..{latent.shape[2] - 1}).")
        step = progress_step(comfy.utils.ProgressBar(len(used)))
        flow = motion_flow(model, latent, positions, tuple(images.shape[1:3]), images.shape[0], conditioning, used,
                           temperature, sigma, seed, frame_window, step)
        picture = flow_pictures(flow, images, used[0], picture_frame)
        shown = ui.ImageSaveHelper.save_animated_webp(picture, "difftrack_flow", io.FolderType.temp, cls, fps=4.0,
                                                      lossless=False, quality=85, method=4)
        return io.NodeOutput(flow, picture, ui=ui.SavedImages([shown], is_animated=picture.shape[0] > 1))


def guidance_inputs(optimised: str) -> list:
    """The inputs of DiTFlow's schedule and loss, shared by the nodes that guide with a motion flow; `optimised`
    names what the Adam steps move (the tooltips say it)."""
    defaults = TransferSettings()
    return [
        io.Float.Input("guided_percent", default=defaults.guided_share, min=0.0, max=1.0, step=0.01,
                       tooltip="Share of the steps, from the first, that are guided (DiTFlow: 10 of 50)."),
        io.Int.Input("iterations", default=defaults.iterations, min=0, max=100,
                     tooltip=f"Adam steps on the {optimised} per guided step (DiTFlow: 5); 0 = plain sampling."),
        io.Int.Input("gradient_every", default=defaults.gradient_every, min=1, max=100,
                     tooltip="Compute the gradient (a forward and backward of the DiT, most of the cost) on "
                             "every n-th iteration of a step and reuse it for the Adam steps between "
                             "(FastVMT's gradient reuse); 1 = every iteration (DiTFlow). The default 3 "
                             "transferred as much motion on the test model at 1.57x plain sampling's time "
                             "instead of 2.4x (Wan 1.3B, 81 frames)."),
        io.Float.Input("rate_start", default=defaults.rate_start, min=0.0, max=10.0, step=0.0001,
                       tooltip="Learning rate on the first guided step as for DiTFlow's 10 guided steps "
                               "(DiTFlow: 0.002); with n guided steps it is multiplied by 10 / n, so fewer "
                               "steps move the latent as far in all..."),
        io.Float.Input("rate_end", default=defaults.rate_end, min=0.0, max=10.0, step=0.0001,
                       tooltip="...falling linearly to this on the last (DiTFlow: 0.001)."),
        io.Boolean.Input("moving_only", default=defaults.loss.moving_only,
                         tooltip="Count only patches the reference moves (DiTFlow's threshloss); off also "
                                 "holds still what stands still (a static camera)."),
        io.Float.Input("min_confidence", default=defaults.loss.min_confidence, min=0.0, max=1.0, step=0.01,
                       tooltip="Leave out patches whose reference match is less certain than this (the peak "
                               "attention probability): occluded or textureless patches whose argmax lurches."),
        io.Float.Input("max_displacement", default=0.0, min=0.0, max=1000.0, step=0.5,
                       tooltip="Leave out reference displacements longer than this many patches (argmax "
                               "outliers); 0 = no limit."),
        io.Float.Input("huber", default=defaults.loss.huber, min=0.0, max=100.0, step=0.1,
                       tooltip="Huber's δ in patches: errors beyond it count linearly, so outliers pull less; "
                               "0 = squared error (DiTFlow)."),
    ]


def guidance_settings(guided_percent: float, iterations: int, gradient_every: int, rate_start: float, rate_end: float,
                      moving_only: bool, min_confidence: float, max_displacement: float, huber: float,
                      **rest) -> TransferSettings:
    """TransferSettings from guidance_inputs' values (`rest`: the other TransferSettings fields)."""
    loss = FlowLoss(moving_only, min_confidence, max_displacement or None, huber)
    return TransferSettings(guided_percent, iterations, rate_start, rate_end, loss, gradient_every=gradient_every,
                            **rest)


class MotionTransferSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        defaults = TransferSettings()
        return io.Schema(
            node_id="DiffTrackMotionTransferSampler",
            display_name="Motion Transfer Sampler (DiffTrack)",
            category=CATEGORY,
            description=("A SAMPLER for SamplerCustomAdvanced that makes the generation move like a reference video "
                         "(DiTFlow): in the first steps the noisy latent is optimised so that the DiT's attention "
                         "motion flow matches the reference's, then the chosen sampler takes its step. Generate at "
                         "the reference's size and length, with the same model."),
            inputs=[
                MotionFlowType.Input("motion_flow", tooltip="From Motion Flow from Video."),
                io.Combo.Input("sampler_name", options=list(comfy.samplers.KSampler.SAMPLERS), default="euler",
                               tooltip="The sampler that takes the steps. The guided steps run it one step at a time, "
                                       "so a multistep sampler restarts its history at each of them (DiTFlow used "
                                       "DDIM, a one-step sampler)."),
                *guidance_inputs("latent"),
                io.Boolean.Input("inject_reference", default=bool(defaults.inject_blocks),
                                 tooltip="On the guided steps, block 0's self-attention takes its keys and values from "
                                         "the reference noised to the step's level with the run's own noise "
                                         "(DiTFlow's injection): the generation starts from the reference's layout. "
                                         "One more forward of block 0 per guided step."),
                io.Boolean.Input("checkpoint_blocks", default=defaults.checkpoint_blocks,
                                 tooltip="Recompute the blocks before the guidance block in each backward pass instead "
                                         "of keeping them: the same guidance in a fraction of the memory (Wan 1.3B, "
                                         "81 frames: 33 GiB kept), for about a fifth more time per iteration."),
            ],
            outputs=[io.Sampler.Output(display_name="sampler")],
        )

    @classmethod
    def execute(cls, motion_flow, sampler_name, guided_percent, iterations, gradient_every, rate_start, rate_end,
                moving_only, min_confidence, max_displacement, huber, inject_reference, checkpoint_blocks) -> io.NodeOutput:
        settings = guidance_settings(guided_percent, iterations, gradient_every, rate_start, rate_end, moving_only,
                                     min_confidence, max_displacement, huber, checkpoint_blocks=checkpoint_blocks,
                                     inject_blocks=(0,) if inject_reference else ())
        return io.NodeOutput(transfer_sampler(sampler_name, motion_flow, settings))


class LearnMotionEmbeddings(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DiffTrackLearnMotionEmbeddings",
            display_name="Learn Motion Embeddings (DiffTrack)",
            category=CATEGORY,
            description=("DiTFlow's positional-embedding variant: samples like SamplerCustom while, in the first "
                         "steps, position tables multiplying every block's queries and keys after the model's RoPE "
                         "are optimised so that the DiT's attention motion flow matches the reference's. Outputs the "
                         "generation and the tables (MOTION_EMBEDDINGS), which Apply Motion Embeddings reuses for "
                         "new prompts and seeds with no optimisation."),
            inputs=[
                io.Model.Input("model", tooltip="The video DiT the motion flow was read with."),
                io.Conditioning.Input("positive", tooltip="The prompt of this generation."),
                io.Conditioning.Input("negative"),
                io.Latent.Input("latent_image", tooltip="An empty latent of the reference's size and length."),
                MotionFlowType.Input("motion_flow", tooltip="From Motion Flow from Video."),
                io.Sigmas.Input("sigmas", tooltip="The schedule (a scheduler node); the tables are learned on its "
                                                  "first guided steps, and apply at the same steps when reused."),
                io.Combo.Input("sampler_name", options=list(comfy.samplers.KSampler.SAMPLERS), default="euler",
                               tooltip="The sampler that takes the steps (the guided ones one at a time)."),
                io.Int.Input("noise_seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True),
                io.Float.Input("cfg", default=5.0, min=0.0, max=100.0, step=0.1, round=0.01),
                *guidance_inputs("position tables"),
            ],
            outputs=[io.Latent.Output(display_name="latent"),
                     MotionEmbeddingsType.Output(display_name="motion_embeddings")],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent_image, motion_flow, sigmas, sampler_name, noise_seed, cfg,
                **guidance) -> io.NodeOutput:
        learned = []
        sampler = transfer_sampler(sampler_name, motion_flow, guidance_settings(**guidance, optimise="embeddings"),
                                   learned=learned)
        latent = comfy.sample.fix_empty_latent_channels(model, latent_image["samples"])
        noise = comfy.sample.prepare_noise(latent, noise_seed)
        callback = latent_preview.prepare_callback(model, sigmas.shape[-1] - 1)
        samples = comfy.sample.sample_custom(model, noise, cfg, sampler, sigmas, positive, negative, latent,
                                             noise_mask=latent_image.get("noise_mask"), callback=callback,
                                             disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=noise_seed)
        if not learned:  # no guided step ran: the model's own positions, which leave sampling as it was
            diffusion_model, adapter = model_and_adapter(model)
            learned.append(MotionEmbeddings([], adapter.token_grid(diffusion_model, latent.shape),
                                            adapter.head_dim(diffusion_model), adapter.name))
        return io.NodeOutput({**latent_image, "samples": samples}, learned[0])


class ApplyMotionEmbeddings(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DiffTrackApplyMotionEmbeddings",
            display_name="Apply Motion Embeddings (DiffTrack)",
            category=CATEGORY,
            description=("Patches the model so that sampling's first steps use learned motion embeddings (from Learn "
                         "or Load Motion Embeddings): every block's queries and keys are multiplied by the step's "
                         "position tables after RoPE, no optimisation. Any sampler; generate at the size and length "
                         "they were learned at, with the same number of steps' schedule."),
            inputs=[
                io.Model.Input("model"),
                MotionEmbeddingsType.Input("motion_embeddings"),
            ],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, motion_embeddings) -> io.NodeOutput:
        diffusion_model, adapter = model_and_adapter(model)
        try:
            head_dim = adapter.head_dim(diffusion_model)
        except NotImplementedError as error:
            raise ValueError(f"{error} Motion embeddings work with Wan 2.1/2.2 models for now.") from None
        motion_embeddings.check_model(adapter.name, head_dim)  # the size: checked on each forward
        patched = model.clone()
        PositionModulation(adapter, diffusion_model, motion_embeddings.table_for, motion_embeddings).install(patched)
        return io.NodeOutput(patched)


class SaveMotionEmbeddings(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DiffTrackSaveMotionEmbeddings",
            display_name="Save Motion Embeddings (DiffTrack)",
            category=CATEGORY,
            description=(f"Writes motion embeddings as a safetensors file (tensors and a JSON header, no pickle) "
                         f"under the output folder's {EMBEDDINGS_FOLDER}/, where Load Motion Embeddings finds them."),
            inputs=[
                MotionEmbeddingsType.Input("motion_embeddings"),
                io.String.Input("filename_prefix", default="difftrack",
                                tooltip=f"Name of the file under output/{EMBEDDINGS_FOLDER}/ (a counter is added)."),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, motion_embeddings, filename_prefix) -> io.NodeOutput:
        folder, filename, counter, _, _ = folder_paths.get_save_image_path(
            os.path.join(EMBEDDINGS_FOLDER, filename_prefix), folder_paths.get_output_directory())
        path = os.path.join(folder, f"{filename}_{counter:05}_.safetensors")
        motion_embeddings.to_file(path)
        return io.NodeOutput(ui=ui.PreviewText(os.path.relpath(path, folder_paths.get_output_directory())))


def embeddings_folder() -> str:
    """Where Save Motion Embeddings writes and Load Motion Embeddings reads."""
    return os.path.join(folder_paths.get_output_directory(), EMBEDDINGS_FOLDER)


def saved_embeddings() -> list[str]:
    """Files under the output folder's motion_embeddings/, relative to it."""
    root = embeddings_folder()
    return sorted(os.path.relpath(os.path.join(folder, name), root) for folder, _, names in os.walk(root)
                  for name in names if name.endswith(".safetensors"))


class LoadMotionEmbeddings(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DiffTrackLoadMotionEmbeddings",
            display_name="Load Motion Embeddings (DiffTrack)",
            category=CATEGORY,
            description=f"Reads motion embeddings that Save Motion Embeddings wrote (output/{EMBEDDINGS_FOLDER}/).",
            inputs=[io.Combo.Input("embeddings", options=saved_embeddings(),
                                   tooltip=f"A file under output/{EMBEDDINGS_FOLDER}/.")],
            outputs=[MotionEmbeddingsType.Output(display_name="motion_embeddings")],
        )

    @classmethod
    def execute(cls, embeddings) -> io.NodeOutput:
        root = os.path.abspath(embeddings_folder())
        path = os.path.abspath(os.path.join(root, embeddings))
        if os.path.commonpath([path, root]) != root or not os.path.isfile(path):
            raise ValueError(f"No motion embeddings named {embeddings!r} under output/{EMBEDDINGS_FOLDER}/: save them "
                             "with Save Motion Embeddings, or pick one from the list.")
        return io.NodeOutput(MotionEmbeddings.from_file(path))

    @classmethod
    def fingerprint_inputs(cls, embeddings):
        path = os.path.join(embeddings_folder(), embeddings)
        return os.path.getmtime(path) if os.path.isfile(path) else embeddings


NODES = [MotionFlowFromVideo, MotionTransferSampler, LearnMotionEmbeddings, ApplyMotionEmbeddings,
         SaveMotionEmbeddings, LoadMotionEmbeddings]
