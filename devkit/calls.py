"""Counting how often modules run (a forward pre-hook on each), for tests that check what a path skips."""
from __future__ import annotations

import torch


class CallCounter:
    """counts[name]: forwards of each named module since the counter was made; remove() takes the hooks off."""

    def __init__(self, modules: dict[object, torch.nn.Module]):
        self.counts = {name: 0 for name in modules}
        self.handles = [module.register_forward_pre_hook(self._counter(name)) for name, module in modules.items()]

    def _counter(self, name):
        def count(module, args):
            self.counts[name] += 1
        return count

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
