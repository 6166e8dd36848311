"""A video through the loaded VAE: every frame alone (DiffTrack) or the whole clip, batched, cached.

DiffTrack encodes every frame as a one-frame clip, so latent frame i is source
frame i. One `vae.encode` call per frame was most of a tracking run (8.4 s of
9.5 s for 81 frames of 480x832 on an H200). Three things make it cheap:

- batches: several one-frame clips per VAE call, as many as ComfyUI's own
  estimate of encode memory lets fit (at most `max_batch`, so progress and
  interrupt stay per batch and a long clip is never on the GPU at once);
- single-frame arithmetic: in a causal video VAE a one-frame clip only meets
  the zero padding in front of it, so a causal 3D convolution over it equals a
  2D convolution with the kernel's last temporal slice. For the VAE classes in
  SINGLE_FRAME_2D (checked one by one, see below) the convolutions run that way;
  every other VAE runs its own code, batched;
- a cache: a re-run on the same frames through the same VAE (a changed point,
  block or σ upstream of nothing else) reuses the latent.

Which VAE classes take the 2D path: the Wan 2.1 VAE (Wan 2.1, Wan 2.2 A14B) and
the Wan 2.2 VAE (TI2V-5B): the first chunk of their encode (frame 0) pads every
3-tap causal convolution with two zero frames and skips the temporal
down-sampling convolutions. Not taken: HunyuanVideo's VAE (also Kandinsky 5's),
LTXV's and Mochi's pad the first frame by replicating it, where a one-frame
convolution would be a 2D one with the temporal taps summed; not implemented.
"""
from __future__ import annotations

import contextlib
import functools
import weakref
from collections import OrderedDict
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
import comfy.model_management
import comfy.utils

from ..ditcorr import latent_frame_positions

ENCODINGS = ("per_frame", "native")
SINGLE_FRAME_2D = ("comfy.ldm.wan.vae.WanVAE", "comfy.ldm.wan.vae2_2.WanVAE")
MAX_BATCH = 8  # frames per VAE call at most: past a few, a 480x832 batch no longer runs faster (bench/extract_e2e.py)


def _class_name(module: torch.nn.Module) -> str:
    return f"{type(module).__module__}.{type(module).__qualname__}"


def _zero_padded_causal(module: torch.nn.Module) -> bool:
    """A Wan causal convolution whose one-frame output sees only its zero padding: the full causal padding in
    front (`_padding` is F.pad's (w, w, h, h, front, back)), stride 1 in time."""
    padding = getattr(module, "_padding", None)
    return (isinstance(module, torch.nn.Conv3d) and isinstance(padding, tuple) and len(padding) == 6
            and padding[5] == 0 and module.stride[0] == 1
            and padding[4] == module.dilation[0] * (module.kernel_size[0] - 1))


def _last_slice_conv(conv: torch.nn.Conv3d, input: torch.Tensor, weight: torch.Tensor,
                     bias: torch.Tensor | None) -> torch.Tensor:
    """conv3d of a one-frame clip [B, C, 1, H, W] that had zero frames in front of it, as a 2D convolution."""
    if input.shape[2] != 1:
        raise RuntimeError(f"The single-frame VAE path met a clip of {input.shape[2]} frames; it only runs one-frame "
                           "clips (this is a bug in the pack: please report it).")
    out = F.conv2d(input[:, :, 0], weight[:, :, -1], bias, conv.stride[1:], conv.padding[1:], conv.dilation[1:],
                   conv.groups)
    return out.unsqueeze(2)


@contextlib.contextmanager
def single_frame_convolutions(module: torch.nn.Module) -> Iterator[int]:
    """Within: each zero-padded causal 3D convolution of `module` runs a one-frame clip as a 2D convolution, without
    building the padded clip. Yields how many convolutions changed. The module is restored on exit, whatever
    happens inside (weights are untouched: ComfyUI's casting and offloading still hand the weight in)."""
    convs = [m for m in module.modules() if _zero_padded_causal(m)]
    saved = [conv._padding for conv in convs]
    try:
        for conv in convs:
            conv._padding = conv._padding[:4] + (0, 0)
            conv._conv_forward = functools.partial(_last_slice_conv, conv)
        yield len(convs)
    finally:
        for conv, padding in zip(convs, saved):
            conv._padding = padding
            conv.__dict__.pop("_conv_forward", None)


def _encode_batch(vae, pixels: torch.Tensor, single_frame_2d: bool) -> torch.Tensor:
    """[B, C, 1, H, W] pixels (cropped, channels first) -> [B, C', 1, h, w] float latents on the VAE's output device."""
    pixels_in = vae.process_input(pixels).to(vae.vae_dtype).to(vae.device)
    fast = single_frame_2d and _class_name(vae.first_stage_model) in SINGLE_FRAME_2D
    with single_frame_convolutions(vae.first_stage_model) if fast else contextlib.nullcontext():
        return vae.first_stage_model.encode(pixels_in).to(vae.output_device).float()


def encode_each_frame(vae, images: torch.Tensor, on_frames: Callable[[int], None] = lambda count: None,
                      max_batch: int = MAX_BATCH, single_frame_2d: bool = True) -> torch.Tensor:
    """Every frame encoded alone as a one-frame clip, several per VAE call: [F, H, W, C] in [0, 1] ->
    [1, C', F, h, w], equal to one `vae.encode(images[i:i + 1])` per frame within the VAE dtype's rounding.

    ComfyUI decides what fits, as in its own encode: it loads the VAE for one frame's estimated encode memory,
    then a batch is as many frames as that estimate fits in the free memory (at most `max_batch`); a batch that
    runs out of memory is halved, and a single frame that does goes through `vae.encode` (which tiles).
    `on_frames(n)` is called after each batch of n frames; an interrupt stops between batches.
    `single_frame_2d=False` runs the VAE's own 3D convolutions even where the 2D path applies (to measure it).
    """
    if vae.latent_dim != 3 or vae.not_video:
        raise ValueError("Per-frame encoding needs a video VAE (Wan, HunyuanVideo, LTXV, Mochi...); this VAE encodes "
                         "images. Load the VAE that belongs to the video model.")
    vae.throw_exception_if_invalid()
    pixels = vae.vae_encode_crop_pixels(images).movedim(-1, 1).unsqueeze(2)  # [F, C, 1, H, W]
    frame_memory = vae.memory_used_encode(pixels[:1].shape, vae.vae_dtype)
    comfy.model_management.load_models_gpu([vae.patcher], memory_required=frame_memory,
                                           force_full_load=vae.disable_offload)
    free = comfy.model_management.get_free_memory(vae.device)
    batch = max(1, min(max_batch, int(free / max(1, frame_memory))))
    latent, start = None, 0
    while start < pixels.shape[0]:
        comfy.model_management.throw_exception_if_processing_interrupted()
        try:
            out = _encode_batch(vae, pixels[start:start + batch], single_frame_2d)
        except comfy.model_management.OOM_EXCEPTION:
            if batch == 1:
                out = vae.encode(images[start:start + 1])  # [1, C', 1, h, w], tiled if need be
            else:
                batch //= 2
                comfy.model_management.soft_empty_cache()
                continue
        if latent is None:
            latent = torch.empty((1, out.shape[1], pixels.shape[0], *out.shape[3:]), device=out.device)
        latent[0, :, start:start + out.shape[0]] = out[:, :, 0].transpose(0, 1)
        start += out.shape[0]
        on_frames(out.shape[0])
    return latent


def encode_frames(vae, images: torch.Tensor, encoding: str,
                  on_frames: Callable[[int], None] = lambda count: None) -> tuple[torch.Tensor, tuple[float, ...]]:
    """Latent of a video and the source-frame position of each latent frame.

    images: [F, H, W, 3] in [0, 1]. "per_frame" encodes every frame alone as a
    one-frame video, so latent frame i is source frame i (DiffTrack); "native"
    encodes the whole clip with the VAE's temporal compression.
    Returns ([1, C, T, h, w], positions of the T latent frames).
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"Unknown encoding {encoding!r}; use one of {ENCODINGS}.")
    if encoding == "native":
        latent = vae.encode(images[..., :3])
        on_frames(images.shape[0])
        ratio = max(1, round((images.shape[0] - 1) / max(latent.shape[2] - 1, 1)))
        return latent, latent_frame_positions(latent.shape[2], ratio)
    return encode_each_frame(vae, images[..., :3], on_frames), tuple(float(i) for i in range(images.shape[0]))


def enlarged(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Frames [T, H, W, 3] `factor` times larger on each side, bicubic, as core's Upscale Image By makes them: what
    the model sees when its tokens should cover a smaller patch of the video (the frames themselves when 1)."""
    if factor == 1:
        return images
    height, width = images.shape[1:3]
    return comfy.utils.common_upscale(images.movedim(-1, 1), width * factor, height * factor, "bicubic",
                                      "disabled").movedim(1, -1)


class EncodingCache:
    """The latest encodings, by VAE, frames, encoding and enlargement: a re-run that changed only a point, a block or
    σ skips the VAE. Entries are known by the very VAE and frames objects (ComfyUI hands a node the same cached output
    while nothing upstream changed; outputs are never modified in place) and are held weakly: an entry goes when
    its VAE or its frames do. At most `max_entries` latents and `max_bytes` of them; the oldest go first."""

    def __init__(self, max_entries: int = 4, max_bytes: int = 2**30):
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._entries: OrderedDict[tuple[int, int, str, int], tuple[weakref.ref, weakref.ref, torch.Tensor, tuple]] = OrderedDict()
        self.hits = 0

    def get(self, vae, images: torch.Tensor, encoding: str, upscale: int = 1) -> tuple[torch.Tensor, tuple[float, ...]] | None:
        self._drop_dead()
        key = (id(vae), id(images), encoding, upscale)
        if key not in self._entries:
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return self._entries[key][2:]

    def put(self, vae, images: torch.Tensor, encoding: str, latent: torch.Tensor, positions: tuple[float, ...],
            upscale: int = 1) -> None:
        if latent.numel() * latent.element_size() > self.max_bytes:
            return
        self._entries[(id(vae), id(images), encoding, upscale)] = (weakref.ref(vae), weakref.ref(images), latent, positions)
        while len(self._entries) > self.max_entries or self.size_bytes() > self.max_bytes:
            self._entries.popitem(last=False)

    def size_bytes(self) -> int:
        return sum(latent.numel() * latent.element_size() for _, _, latent, _ in self._entries.values())

    def __len__(self) -> int:
        self._drop_dead()
        return len(self._entries)

    def _drop_dead(self) -> None:
        for key in [key for key, (vae, images, _, _) in self._entries.items() if vae() is None or images() is None]:
            del self._entries[key]

    def clear(self) -> None:
        self._entries.clear()


ENCODING_CACHE = EncodingCache()  # the nodes' cache; tests and benchmarks may make their own


def encode_with_progress(vae, images: torch.Tensor, encoding: str, cache: EncodingCache | None = ENCODING_CACHE,
                         upscale: int = 1) -> tuple[torch.Tensor, tuple[float, ...]]:
    """encode_frames of the frames enlarged `upscale` times, with a progress bar over the frames (unless `cache`
    already holds this encoding: it is known by the frames as given, so a re-run neither enlarges nor encodes)."""
    cached = cache.get(vae, images, encoding, upscale) if cache is not None else None
    if cached is not None:
        return cached
    bar = comfy.utils.ProgressBar(images.shape[0])

    def advance(count: int) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        bar.update(count)

    latent, positions = encode_frames(vae, enlarged(images, upscale), encoding, advance)
    if cache is not None:
        cache.put(vae, images, encoding, latent, positions, upscale)
    return latent, positions
