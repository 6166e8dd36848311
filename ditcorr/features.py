"""Captured query/key features of a video DiT and the geometry needed to read them.

A `DitFeatures` holds, for every captured (block, step, branch, sample, chunk),
the per-head queries and keys of the video tokens laid out on the token grid,
plus what is needed to map tokens back to pixels and frames of the source video.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch

BRANCHES = ("cond", "uncond")


@dataclass(frozen=True, order=True)
class CaptureKey:
    """Where one captured q/k pair came from."""

    block: int
    step: int
    branch: str  # "cond" | "uncond"
    sample: int  # index inside the branch's batch
    chunk: int  # index into DitFeatures.chunk_frames (0 for a generation)


@dataclass
class QK:
    """Per-head queries and keys of one forward's video tokens.

    q, k: [heads, T, h, w, d] (T token frames on an h x w token grid).
    sigma: the noise level of the forward.
    """

    q: torch.Tensor
    k: torch.Tensor
    sigma: float

    @property
    def nbytes(self) -> int:
        return self.q.numel() * self.q.element_size() + self.k.numel() * self.k.element_size()


def steps_in_sampling_order(captures: list[dict[CaptureKey, QK]]) -> dict[CaptureKey, QK]:
    """Captures of models that ran one after the other on one schedule (Wan 2.2's high- and low-noise experts, each
    with its own sampler and so its own step numbers from 0) as one set, steps renumbered in the order they ran:
    by falling σ, ties in the order of `captures`. Every other field of a key is kept."""
    steps = {}  # (which capture, its step) -> σ
    for index, captured in enumerate(captures):
        for key, qk in captured.items():
            steps.setdefault((index, key.step), qk.sigma)
    order = sorted(steps, key=lambda step: (-steps[step], step))
    renumbered = {step: new for new, step in enumerate(order)}
    return {CaptureKey(key.block, renumbered[(index, key.step)], key.branch, key.sample, key.chunk): qk
            for index, captured in enumerate(captures) for key, qk in captured.items()}


class FeatureChunk(NamedTuple):
    """One chunk's captured q/k and where its token frames sit in the source video."""

    frames: tuple[float, ...]  # source-frame position of each token frame (a float: native encoding)
    qk: QK


@dataclass
class DitFeatures:
    """Captured q/k of chosen blocks and steps, with their geometry.

    frame_size: (height, width) in pixels of the source frames.
    frame_count: number of frames of the source video.
    chunk_frames: for every chunk, the source-frame position of each of its
        token frames (a float: native VAE encoding puts a latent frame between
        source frames).
    model: architecture name, for messages.
    storage: where the captured q/k are kept, as the capture reported it.
    """

    frame_size: tuple[int, int]
    frame_count: int
    chunk_frames: list[tuple[float, ...]]
    model: str = ""
    captures: dict[CaptureKey, QK] = field(default_factory=dict)
    storage: str = ""

    @property
    def token_grid(self) -> tuple[int, int]:
        """(h, w) of the token grid."""
        first = next(iter(self.captures.values()))
        return tuple(first.q.shape[2:4])

    @property
    def nbytes(self) -> int:
        return sum(qk.nbytes for qk in self.captures.values())

    def blocks(self) -> list[int]:
        return sorted({key.block for key in self.captures})

    def steps(self) -> list[int]:
        return sorted({key.step for key in self.captures})

    def select(self, block: int | None = None, step: int | None = None, branch: str = "cond",
               sample: int = 0) -> list[FeatureChunk]:
        """The chunks of one (block, step, branch, sample), in chunk order.

        block/step None: the first captured one. Raises ValueError naming what
        was captured when nothing matches.
        """
        if not self.captures:
            raise ValueError("These features hold no captures (they were released or nothing was recorded).")
        block = self.blocks()[0] if block is None else block
        step = self.steps()[0] if step is None else step
        chunks = sorted(
            (key.chunk, qk) for key, qk in self.captures.items()
            if (key.block, key.step, key.branch, key.sample) == (block, step, branch, sample)
        )
        if not chunks:
            have = sorted({(k.block, k.step, k.branch, k.sample) for k in self.captures})
            raise ValueError(
                f"No capture for block {block}, step {step}, branch {branch!r}, sample {sample}. "
                f"Captured (block, step, branch, sample): {have}"
            )
        return [FeatureChunk(self.chunk_frames[index], qk) for index, qk in chunks]

    def select_many(self, blocks: list[int] | None = None, steps: list[int] | None = None, branch: str = "cond",
                    sample: int = 0) -> list[list[FeatureChunk]]:
        """One chunk list per (block, step) to fuse; None = every captured block / step."""
        return [self.select(block, step, branch, sample)
                for block in (blocks if blocks is not None else self.blocks())
                for step in (steps if steps is not None else self.steps())]

    def release(self) -> None:
        """Drop every captured tensor so its memory can be reused."""
        self.captures.clear()


def latent_frame_positions(latent_frames: int, temporal_ratio: int) -> tuple[float, ...]:
    """Source-frame position of each latent frame of a causal video VAE.

    Latent frame 0 encodes source frame 0 alone; latent frame i >= 1 encodes
    source frames (i-1)*r+1 .. i*r, whose centre is the position returned.
    """
    r = temporal_ratio
    return tuple(0.0 if i == 0 else (i - 1) * r + 1 + (r - 1) / 2 for i in range(latent_frames))


def source_frame_count(latent_frames: int, temporal_ratio: int) -> int:
    """Frames of the video a causal VAE decodes from `latent_frames` latent frames."""
    return 1 + (latent_frames - 1) * temporal_ratio
