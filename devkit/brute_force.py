"""Obviously-correct references for the core's fast paths: full attention maps and cost volumes, in float64."""
from __future__ import annotations

import torch

from difftrack_pack.ditcorr import QK


def full_attention(qk: QK, tau: float) -> torch.Tensor:
    """Every token of a chunk attending to every token of it: mean over heads of softmax(q.k / tau), [L, L] with
    L = T*h*w in (t, row, column) order."""
    heads, frames, h, w, d = qk.q.shape
    q, k = qk.q.reshape(heads, -1, d).double(), qk.k.reshape(heads, -1, d).double()
    return torch.stack([torch.softmax(q[i] @ k[i].T / tau, -1) for i in range(heads)]).mean(0)


def full_cost_volume(qk: QK, source: int, target: int, tau: float) -> torch.Tensor:
    """DiffTrack's symmetric cost of every token of frame `source` against every token of frame `target`, [Ms, Md]."""
    heads, _, h, w, d = qk.q.shape
    flat = lambda t, f: t[:, f].reshape(heads, h * w, d).double()  # noqa: E731
    forward = torch.stack([torch.softmax(flat(qk.q, source)[i] @ flat(qk.k, target)[i].T / tau, -1) for i in range(heads)]).mean(0)
    backward = torch.stack([torch.softmax(flat(qk.q, target)[i] @ flat(qk.k, source)[i].T / tau, -1) for i in range(heads)]).mean(0)
    return 0.5 * (forward + backward.T)
