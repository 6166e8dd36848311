"""Motion embeddings (DiTFlow's positional-embedding variant): a reference's motion kept in the rotary position
tables instead of in one generation's latent, so that it can be reused for new prompts with no optimisation.

RoPE turns each pair of a query's (or key's) channels by a 2x2 matrix that depends on the token's position. DiTFlow
optimises those matrices, one table for the queries and one for the keys shared by every block, so that the
generation's attention motion flow matches the reference's. Here the learned matrices act after the model's own
RoPE: table[token, pair] is a 2x2 matrix M with out = M x for each channel pair x of each head, starting from the
identity (the model's own positions, bit for bit). One (q, k) pair of tables per guided sampling step, each
warm-started from the step before.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import torch


def identity_table(tokens: int, head_dim: int, device=None) -> torch.Tensor:
    """[tokens, head_dim / 2, 2, 2] float32 identity matrices: the model's own positions."""
    if head_dim % 2:
        raise ValueError(f"Rotary tables pair a head's channels: a head of {head_dim} channels has no pairs.")
    return torch.eye(2, device=device).expand(tokens, head_dim // 2, 2, 2).clone()


def modulate(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """x [B, H, L, D] with each token's channel pairs (x[2i], x[2i+1]) multiplied by table [L, D/2, 2, 2] (the pair
    layout of ComfyUI's RoPE), in float32, returned in x's dtype. The identity table returns x exactly."""
    pairs = x.float().reshape(*x.shape[:-1], -1, 1, 2)  # [B, H, L, P, 1, 2]
    out = table[..., 0] * pairs[..., 0] + table[..., 1] * pairs[..., 1]  # [B, H, L, P, 2]
    return out.reshape(x.shape).to(x.dtype)


@dataclass
class MotionEmbeddings:
    """Learned position tables of one reference's motion.

    tables: per guided step (the sampler's first steps, in order), the (queries, keys) tables [L, D/2, 2, 2] over
    the L video tokens of `grid` (T, h, w); head_dim: D, the model's channels per head; model: the family's name
    (as the pack's adapters call it). A sampling step beyond the tables runs with the model's own positions.
    """

    tables: list[tuple[torch.Tensor, torch.Tensor]]
    grid: tuple[int, int, int]
    head_dim: int
    model: str

    def table_for(self, step: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self.tables[step] if 0 <= step < len(self.tables) else None

    def check_fits(self, model: str, grid: tuple[int, int, int], head_dim: int) -> None:
        """ValueError unless a forward of `model` over a `grid` token grid with heads of `head_dim` can use them."""
        self.check_model(model, head_dim)
        self.check_grid(grid)

    def check_model(self, model: str, head_dim: int) -> None:
        if model != self.model or head_dim != self.head_dim:
            raise ValueError(f"These motion embeddings were learned on a {self.model} model with heads of "
                             f"{self.head_dim} channels; this is a {model} model with heads of {head_dim}: learn "
                             "them again with this model.")

    def check_grid(self, grid: tuple[int, int, int]) -> None:
        if tuple(grid) != tuple(self.grid):
            raise ValueError(f"These motion embeddings are for {self.grid[0]} latent frames of {self.grid[2]}x"
                             f"{self.grid[1]} tokens; this generation has {grid[0]} of {grid[2]}x{grid[1]}: generate "
                             "at the size and length they were learned at.")

    def to_file(self, path: str) -> None:
        """A safetensors file: tensors step<i>.q / step<i>.k, the rest in its metadata."""
        import safetensors.torch

        tensors = {f"step{i}.{name}": table.contiguous().cpu()
                   for i, pair in enumerate(self.tables) for name, table in zip("qk", pair)}
        metadata = {"difftrack_motion_embeddings": json.dumps({"steps": len(self.tables), "grid": list(self.grid),
                                                               "head_dim": self.head_dim, "model": self.model})}
        safetensors.torch.save_file(tensors, path, metadata=metadata)

    @classmethod
    def from_file(cls, path: str) -> MotionEmbeddings:
        import safetensors

        with safetensors.safe_open(path, framework="pt") as file:
            header = (file.metadata() or {}).get("difftrack_motion_embeddings")
            if header is None:
                raise ValueError(f"{path} holds no motion embeddings (Save Motion Embeddings writes them).")
            info = json.loads(header)
            tables = [(file.get_tensor(f"step{i}.q"), file.get_tensor(f"step{i}.k")) for i in range(info["steps"])]
        return cls(tables, tuple(info["grid"]), info["head_dim"], info["model"])
