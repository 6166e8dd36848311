"""Synthetic scenes with exact tracks and occlusions, and q/k descriptors built from the ground truth.

Layers (background, then sprites, later ones on top) move at constant velocity.
The descriptor of a token is a random-Fourier embedding of the surface point
it shows (layer, u, v): similar for nearby points of one layer, near-orthogonal
across layers. A tracker fed these descriptors must recover the ground truth:
this checks coordinates, chunking, interpolation and read-out without a model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from difftrack_pack.ditcorr import QK


@dataclass
class Layer:
    origin: tuple[float, float]  # top-left (x, y) at t = 0, pixels
    velocity: tuple[float, float]  # pixels per frame
    size: tuple[float, float] | None  # (width, height); None = covers everything (background)

    def at(self, t: float) -> tuple[float, float]:
        return self.origin[0] + self.velocity[0] * t, self.origin[1] + self.velocity[1] * t

    def covers(self, x: torch.Tensor, y: torch.Tensor, t: float) -> torch.Tensor:
        if self.size is None:
            return torch.ones_like(x, dtype=torch.bool)
        left, top = self.at(t)
        return (x >= left) & (x < left + self.size[0]) & (y >= top) & (y < top + self.size[1])


class Scene:
    def __init__(self, frame_size=(96, 128), token=4, frames=9, seed=0, heads=2, features=256, lengthscale=16.0,
                 sharpness=80.0):
        self.frame_size, self.token, self.frames = frame_size, token, frames
        self.layers = [
            Layer((0.0, 0.0), (0.37, -0.21), None),
            Layer((8.0, 14.0), (3.3, 1.3), (44.0, 40.0)),
            Layer((84.0, 44.0), (-3.7, -0.6), (34.0, 30.0)),
        ]
        generator = torch.Generator().manual_seed(seed)
        self.omega = torch.randn(heads, len(self.layers), features, 2, generator=generator) / lengthscale
        self.phase = torch.rand(heads, len(self.layers), features, generator=generator) * 2 * math.pi
        # q.k / sqrt(d) = sharpness * mean(cos(omega . displacement)), with d = 2 * features
        self.scale = math.sqrt(sharpness * math.sqrt(2 * features) / features)

    def origins(self, t) -> torch.Tensor:
        """Top-left of every layer at time t (a number or one time per point): [L, N, 2]."""
        t = torch.as_tensor(t, dtype=torch.float32).reshape(-1)
        return torch.stack([torch.stack(layer.at(t), dim=-1) for layer in self.layers])

    def surface(self, x: torch.Tensor, y: torch.Tensor, t):
        """Topmost layer index and its (u, v) at pixels (x, y) of time t (a number or one per point)."""
        layer = torch.zeros_like(x, dtype=torch.long)
        for index, candidate in enumerate(self.layers):
            layer = torch.where(candidate.covers(x, y, torch.as_tensor(t)), torch.full_like(layer, index), layer)
        origin = self.origins(t).expand(-1, x.shape[0], -1)
        picked = origin.gather(0, layer[None, :, None].expand(1, -1, 2))[0]
        return layer, x - picked[:, 0], y - picked[:, 1]

    def descriptors(self, times: list[float]) -> QK:
        """q = k = embedding of the surface seen at each token centre, [heads, T, h, w, d]."""
        height, width = self.frame_size
        ys, xs = torch.meshgrid(torch.arange(height // self.token) * self.token + self.token / 2,
                                torch.arange(width // self.token) * self.token + self.token / 2, indexing="ij")
        frames = []
        for t in times:
            layer, u, v = self.surface(xs.flatten().float(), ys.flatten().float(), t)
            angle = (self.omega[:, layer] * torch.stack([u, v], -1)[None, :, None, :]).sum(-1) + self.phase[:, layer]
            # cos and sin pairs: the dot product is sum(cos(omega . displacement)), exactly shift-invariant
            features = torch.cat([torch.cos(angle), torch.sin(angle)], dim=-1)
            frames.append(features.reshape(self.omega.shape[0], *xs.shape, -1))
        q = torch.stack(frames, dim=1) * self.scale
        return QK(q, q.clone(), 0.05)

    def render(self) -> torch.Tensor:
        """The frames [T, H, W, 3] in [0, 1]: every pixel the colour of the surface point it shows (a smooth texture
        of its own per layer), so appearance follows the same ground truth as the descriptors."""
        height, width = self.frame_size
        ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
        frequency = torch.tensor([[0.21, 0.13], [-0.17, 0.23], [0.11, -0.19]])  # per colour channel, cycles a pixel
        frames = []
        for t in range(self.frames):
            layer, u, v = self.surface(xs.flatten(), ys.flatten(), float(t))
            phase = (torch.stack([u, v], -1) @ frequency.T) + layer[:, None] * 2.1  # [HW, 3]
            frames.append((0.5 + 0.4 * torch.sin(phase)).reshape(height, width, 3))
        return torch.stack(frames)

    def truth(self, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact tracks [T, N, 2] and visibility [T, N] of (x, y, frame) queries."""
        layer, u, v = self.surface(queries[:, 0], queries[:, 1], queries[:, 2])
        path, visible = [], []
        for t in range(self.frames):
            origin = self.origins(float(t))[:, 0]
            x, y = u + origin[layer, 0], v + origin[layer, 1]
            inside = (x >= 0) & (x < self.frame_size[1]) & (y >= 0) & (y < self.frame_size[0])
            on_top = self.surface(x, y, float(t))[0] == layer
            path.append(torch.stack([x, y], -1))
            visible.append(inside & on_top)
        return torch.stack(path), torch.stack(visible)

    def margin(self, x: torch.Tensor, y: torch.Tensor, t: float) -> torch.Tensor:
        """Pixels from (x, y) at time t to the nearest frame or sprite edge: where descriptors are unambiguous."""
        height, width = self.frame_size
        distance = torch.minimum(torch.minimum(x, width - 1 - x), torch.minimum(y, height - 1 - y))
        for layer in self.layers[1:]:
            left, top = layer.at(t)
            distance = torch.minimum(distance, torch.minimum(
                torch.minimum((x - left).abs(), (x - left - layer.size[0]).abs()),
                torch.minimum((y - top).abs(), (y - top - layer.size[1]).abs())))
        return distance

    def queries(self, count: int, frame: int, seed: int = 1) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        xy = torch.rand(count, 2, generator=generator) * torch.tensor([self.frame_size[1] - 1.0, self.frame_size[0] - 1.0])
        return torch.cat([xy, torch.full((count, 1), float(frame))], dim=1)
