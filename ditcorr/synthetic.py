"""Synthetic videos with exact point tracks and occlusions (for training and measuring trackers).

A clip is a textured background that pans, with textured sprites on top (later
sprites in front), each moving with its own translation, rotation and scale.
A motion regime (MOTIONS) sets how fast: "fast" (the training clips), "slow"
(points that barely move), "static-camera" (no pan, sprites that stop) or
"mixed" (each of pan and sprites drawn from one of those); "one-way" is "fast"
with the camera panning one way (down and to the right, give or take 20
degrees: the background moves up and to the left), clips from which a
generator learns to pan without having to pick a direction out of noise;
"mostly-one-way" pans so in three clips of four and any way in the rest;
"one-way-slow" pans one way with sprites of at most 6 px a frame, whose
whereabouts a generator can foresee from a clip's first frames;
"mostly-one-way-slow" is "one-way-slow" in three clips of four and "fast" in
the rest (any direction, fast sprites), so a generator still meets every motion.
Every pixel shows a known surface point, so the track and visibility of any
point follow exactly: a point on a sprite moves with the sprite; a point is
visible where it is inside the frame and no sprite in front covers it.
Everything is seeded and uses torch only.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class Sprite:
    centre: torch.Tensor  # (x, y) pixels at t = 0
    velocity: torch.Tensor  # pixels per frame
    size: float  # half-width in pixels at t = 0
    angle: float  # radians at t = 0
    spin: float  # radians per frame
    growth: float  # relative scale change per frame
    disc: bool  # a disc, else a square
    texture: torch.Tensor  # [3, S, S] in [0, 1] over the sprite's local square
    stop: float = math.inf  # the frame after which it stands still

    def pose(self, t: torch.Tensor):
        """Centre [.., 2], angle, scale at times t."""
        t = t.clamp(max=self.stop)
        return self.centre + self.velocity * t[..., None], self.angle + self.spin * t, self.size * (1 + self.growth * t)


@dataclass(frozen=True)
class Motion:
    """How fast a motion regime moves.

    pan, sprite: the highest speed of the background and of sprites, in pixels per frame of a 256-px frame (scaled
    with the frame); None keeps the "fast" regime's: a pan up to 4 px and sprites up to a frame over the clip per axis.
    turn: factor on sprites' spin and growth; still: chance that a sprite never moves; stops: chance that a moving
    sprite stands still from a random frame on; mixed: the pan and each sprite take a regime drawn at random;
    heading: the pan's direction in degrees (x to the right, y down), give or take HEADING_SPREAD, at the speed it
    would have had (None: any direction), in a `heading_share` of the clips; the rest are "fast" clips, sprites too.
    """

    pan: float | None = None
    sprite: float | None = None
    turn: float = 1.0
    still: float = 0.0
    stops: float = 0.0
    mixed: bool = False
    heading: float | None = None
    heading_share: float = 1.0

    @staticmethod
    def velocity(unit: torch.Tensor, fast: torch.Tensor, frame_scale: float, limit: float | None) -> torch.Tensor:
        """unit: a draw in [-1, 1]^2, fast: the "fast" regime's velocity from it; a capped velocity stays under `limit`."""
        return fast if limit is None else unit * (limit / math.sqrt(2) * frame_scale)


MOTIONS = {"fast": Motion(), "slow": Motion(pan=1.0, sprite=2.5, turn=0.2, still=0.25, stops=0.25),
           "static-camera": Motion(pan=0.0, sprite=6.0, turn=0.5, still=0.3, stops=0.5), "mixed": Motion(mixed=True),
           "one-way": Motion(heading=30.0), "mostly-one-way": Motion(heading=30.0, heading_share=0.75),
           "one-way-slow": Motion(heading=30.0, sprite=6.0),
           "mostly-one-way-slow": Motion(heading=30.0, sprite=6.0, heading_share=0.75)}
HEADING_SPREAD = 20.0  # degrees either side of a regime's heading


@dataclass
class Clip:
    """frames [T, H, W, 3] in [0, 1]; tracks [N, T, 2] (x, y) pixels; visible [N, T]; query_frames [N]."""

    frames: torch.Tensor
    tracks: torch.Tensor
    visible: torch.Tensor
    query_frames: torch.Tensor


def smooth_texture(generator: torch.Generator, size: int, scale: int, channels: int = 3) -> torch.Tensor:
    """A colourful texture [C, size, size] in [0, 1]: random noise at 1/scale resolution, smoothly upsampled, plus detail."""
    coarse = torch.rand(1, channels, max(2, size // scale), max(2, size // scale), generator=generator)
    fine = torch.rand(1, channels, max(2, size // 2), max(2, size // 2), generator=generator)
    texture = 0.75 * F.interpolate(coarse, size=size, mode="bicubic", align_corners=False)
    texture = texture + 0.25 * F.interpolate(fine, size=size, mode="bilinear", align_corners=False)
    return texture[0].clamp(0, 1)


def stretched(values: torch.Tensor, top: float = 1.0) -> torch.Tensor:
    """values mapped linearly onto [0, top] (their minimum to 0, their maximum to top)."""
    return top * (values - values.min()) / (values.max() - values.min()).clamp_min(1e-6)


def shape_radius(local: torch.Tensor, disc: bool) -> torch.Tensor:
    """How far sprite-local points [.., 2] are from the sprite's centre in its own shape's norm: 1 on its edge."""
    return local.norm(dim=-1) if disc else local.abs().amax(dim=-1)


def muted(texture: torch.Tensor, colourfulness: float = 0.6) -> torch.Tensor:
    """The texture [3, H, W] with part of its colour, in [0.1, 0.95]: a background that sprites stand out from."""
    brightness = texture.mean(dim=0, keepdim=True)
    return 0.1 + 0.85 * (brightness + colourfulness * (texture - brightness))


def sprite_colour(generator: torch.Generator) -> torch.Tensor:
    """A saturated colour [3, 1, 1]: its channels stretched over [0.1, 1]."""
    return 0.1 + stretched(torch.rand(3, 1, 1, generator=generator), 0.9)


def sprite_texture(generator: torch.Generator, disc: bool, size: int = 64, colour: torch.Tensor | None = None) -> torch.Tensor:
    """A sprite's texture [3, size, size]: one saturated colour, shaded by a texture of 4 cells, with a black outline.

    The colour and outline make sprites objects a generator can learn; the shading
    gives points inside a sprite something to be matched by. colour: [3, 1, 1] to use instead of the one drawn
    (which is drawn all the same, so the generator's later draws do not change).
    """
    drawn = sprite_colour(generator)
    colour = drawn if colour is None else colour
    shade = stretched(smooth_texture(generator, size, size // 4, channels=1))
    texel = (torch.arange(size) + 0.5) / size * 2 - 1
    v, u = torch.meshgrid(texel, texel, indexing="ij")
    outline = shape_radius(torch.stack([u, v], dim=-1), disc) > 0.85
    return torch.where(outline, 0.05, colour * (0.3 + 0.7 * shade))


class Scene:
    """A seeded random scene; render() and track() give frames and exact tracks. one_colour: every sprite the same
    colour (drawn from the seed), so that only shape, shading and motion tell them apart; the rest of the scene is
    the one drawn without it."""

    def __init__(self, seed: int, frame_size: tuple[int, int] = (64, 64), frames: int = 13, sprites: int = 3,
                 motion: str = "fast", one_colour: bool = False):
        if motion not in MOTIONS:
            raise ValueError(f"Unknown motion regime {motion!r}; use one of {tuple(MOTIONS)}.")
        regime = MOTIONS[motion]
        self.generator = torch.Generator().manual_seed(seed)
        # The regime's own draws come from a second generator, so "fast" clips are the same as before regimes existed.
        regime_generator = torch.Generator().manual_seed(seed + 7_919)
        draw = lambda: float(torch.rand(1, generator=regime_generator))  # noqa: E731
        pick = lambda: MOTIONS[("fast", "slow", "static-camera")[int(3 * draw()) % 3]] if regime.mixed else regime  # noqa: E731
        self.frame_size, self.frames = frame_size, frames
        height, width = frame_size
        rand = lambda *shape: torch.rand(*shape, generator=self.generator)  # noqa: E731
        scale = min(height, width) / 64  # motion and texture grow with the frame, so larger clips are no easier
        per_256 = min(height, width) / 256
        background = pick()
        unit = (rand(2) - 0.5) * 2
        self.pan = Motion.velocity(unit, unit * scale, per_256, background.pan)  # background pixels per frame
        headed = background.heading is not None and draw() < background.heading_share
        if headed:
            angle = math.radians(background.heading + HEADING_SPREAD * (2 * draw() - 1))
            self.pan = self.pan.norm() * torch.tensor([math.cos(angle), math.sin(angle)])
        self.margin = int(abs(self.pan).max() * frames) + 2
        self.background = muted(smooth_texture(self.generator, max(height, width) + 2 * self.margin, max(8, round(4 * scale))))
        # from a generator of its own, so the scene's draws stay the same
        colour = sprite_colour(torch.Generator().manual_seed(seed + 104_729)) if one_colour else None
        self.sprites = []
        for _ in range(sprites):
            centre, unit = rand(2) * torch.tensor([width, height]), (rand(2) - 0.5) * 2
            fast = unit * min(height, width) / frames
            size, angle = float(min(height, width) * (0.08 + 0.1 * rand(1))), float(rand(1) * math.pi)
            spin, growth, disc = float((rand(1) - 0.5) * 0.2), float((rand(1) - 0.5) * 0.04), bool(rand(1) < 0.5)
            own = pick() if headed or background.heading is None else MOTIONS["fast"]
            moves = 0.0 if draw() < own.still else 1.0
            velocity = Motion.velocity(unit, fast, per_256, own.sprite) * moves
            stop = draw() * (frames - 1) if draw() < own.stops else math.inf
            self.sprites.append(Sprite(centre, velocity, size, angle, spin * own.turn * moves, growth * own.turn * moves,
                                       disc, sprite_texture(self.generator, disc, colour=colour), stop))

    def _local(self, sprite: Sprite, points: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Sprite-local coordinates in [-1, 1]^2 (inside the sprite) of pixel points at times t."""
        centre, angle, scale = sprite.pose(t)
        offset = points - centre
        cos, sin = torch.cos(angle), torch.sin(angle)
        return torch.stack([cos * offset[..., 0] + sin * offset[..., 1], -sin * offset[..., 0] + cos * offset[..., 1]], -1) / scale[..., None]

    def _inside(self, sprite: Sprite, local: torch.Tensor) -> torch.Tensor:
        return shape_radius(local, sprite.disc) <= 1

    def layer_at(self, points: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Index of the front-most layer at pixel points (0 = background, k = sprite k-1)."""
        layer = torch.zeros(points.shape[:-1], dtype=torch.long)
        for index, sprite in enumerate(self.sprites, start=1):
            layer = torch.where(self._inside(sprite, self._local(sprite, points, t)), index, layer)
        return layer

    def _pixel_centres(self) -> torch.Tensor:
        """[H, W, 2] (x, y) of every pixel's centre."""
        height, width = self.frame_size
        ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
        return torch.stack([xs, ys], -1).float()

    def render(self) -> torch.Tensor:
        """[T, H, W, 3] frames, each pixel sampled at its centre."""
        height, width = self.frame_size
        pixels = self._pixel_centres()
        frames = []
        for t in range(self.frames):
            time = torch.full((height, width), float(t))
            frame = self._sample(self.background, self._background_coords(pixels, time))
            for sprite in self.sprites:
                local = self._local(sprite, pixels, time)
                colour = self._sample(sprite.texture, local)
                frame = torch.where(self._inside(sprite, local)[..., None], colour, frame)
            frames.append(frame)
        return torch.stack(frames)

    def labels(self) -> torch.Tensor:
        """[T, H, W] long: which layer each pixel shows (0 the background, k sprite k), sampled at pixel centres as
        render() samples colours: exact per-object masks of every frame."""
        height, width = self.frame_size
        pixels = self._pixel_centres()
        return torch.stack([self.layer_at(pixels, torch.full((height, width), float(t))) for t in range(self.frames)])

    def _background_coords(self, pixels: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Background texture coordinates in [-1, 1] of pixel points at times t (the background pans by `pan`)."""
        shifted = pixels + self.pan * t[..., None] + self.margin
        return shifted / self.background.shape[-1] * 2 - 1

    @staticmethod
    def _sample(texture: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        """Bilinear texture colours [.., 3] at coordinates in [-1, 1]."""
        shape = where.shape[:-1]
        grid = where.reshape(1, 1, -1, 2).float()
        out = F.grid_sample(texture[None], grid, mode="bilinear", padding_mode="border", align_corners=False)
        return out[0, :, 0].T.reshape(*shape, 3)

    def track(self, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact tracks [N, T, 2] and visibility [N, T] of (x, y, frame) query points."""
        t0 = queries[:, 2]
        layer = self.layer_at(queries[:, :2], t0)
        times = torch.arange(self.frames, dtype=torch.float32)
        tracks = queries[:, None, :2] - (times[None, :, None] - t0[:, None, None]) * self.pan  # background points
        for index, sprite in enumerate(self.sprites, start=1):
            mine = layer == index
            if not mine.any():
                continue
            local = self._local(sprite, queries[mine, :2], t0[mine])  # [M, 2] fixed on the sprite
            centre, angle, scale = sprite.pose(times)  # [T, 2], [T], [T]
            cos, sin = torch.cos(angle), torch.sin(angle)
            u, v = local[:, None, 0] * scale, local[:, None, 1] * scale
            tracks[mine] = centre + torch.stack([cos * u - sin * v, sin * u + cos * v], -1)
        height, width = self.frame_size
        inside = (tracks[..., 0] >= 0) & (tracks[..., 0] < width) & (tracks[..., 1] >= 0) & (tracks[..., 1] < height)
        front = self.layer_at(tracks, times[None].expand(tracks.shape[0], -1))
        return tracks, inside & (front == layer[:, None])

    def queries(self, count: int, query_frame: int | None = 0) -> torch.Tensor:
        """Random (x, y, frame) queries: on `query_frame`, or each on a random frame when None."""
        height, width = self.frame_size
        xy = torch.rand(count, 2, generator=self.generator) * torch.tensor([width - 1.0, height - 1.0]) + 0.5
        frame = (torch.randint(0, self.frames, (count,), generator=self.generator).float() if query_frame is None
                 else torch.full((count,), float(query_frame)))
        return torch.cat([xy, frame[:, None]], dim=1)


def make_clip(seed: int, frame_size: tuple[int, int] = (64, 64), frames: int = 13, sprites: int = 3, points: int = 64,
              query_frame: int | None = 0, motion: str = "fast") -> Clip:
    """A rendered clip with `points` tracked query points (on `query_frame`, or random frames when None)."""
    scene = Scene(seed, frame_size, frames, sprites, motion)
    queries = scene.queries(points, query_frame)
    tracks, visible = scene.track(queries)
    return Clip(scene.render(), tracks, visible, queries[:, 2].long())


def tapvid_npz(clip: Clip) -> bytes:
    """TAP-Vid layout: video uint8 [T, H, W, 3], tracks [N, T, 2] (x, y) pixels, occluded bool [N, T], query_frames [N]."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, video=(clip.frames * 255).round().byte().numpy(), tracks=clip.tracks.numpy(),
                        occluded=(~clip.visible).numpy(), query_frames=clip.query_frames.numpy())
    return buffer.getvalue()
