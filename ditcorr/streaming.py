"""Captured q/k brought to the compute device a few chunks at a time, wherever they are stored.

Features kept in CPU memory (to save VRAM) would otherwise be read where they
live: on the CPU, a hundred times slower than the GPU the model runs on. A
`DeviceWindow` copies the chunks a computation asks for to the compute device,
holds at most `capacity` of them there (the chunk in use and the next one,
prefetched while the current one computes), and drops the oldest: extra device
memory is bounded by the window, not by the video's length. On CUDA, copies
from pinned memory run on a side stream and overlap the computation; a dropped
chunk's memory is only free once the kernels queued on it have run, so the
host waits for those of the oldest dropped chunk before it lets more than
`capacity` dropped chunks pile up behind the queue. A `FrameCopier` does the
same for slices of the video's frames, which an IMAGE holds in CPU memory.
"""
from __future__ import annotations

import os
from collections import OrderedDict, deque
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from .features import QK


def to_device(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """values (small, in CPU memory) on `device` without waiting for it: a blocking copy to a GPU first waits for
    every kernel queued there, which idles the GPU while the host queues the next ones. (A copy from pageable memory
    is staged before the call returns, so `values` may be freed at once.)"""
    return values.to(device, non_blocking=True)


class DeviceWindow:
    """device: where to compute; None = where each chunk lives (nothing is copied).
    capacity: chunks held on the device at once (>= 1).
    always_copy: copy a chunk even when it already lives on `device` (lets a CPU-only test run the streaming path).
    """

    def __init__(self, device: torch.device | str | None = None, capacity: int = 2, always_copy: bool = False):
        if capacity < 1:
            raise ValueError("A device window holds at least one chunk.")
        self.device = None if device is None else torch.device(device)
        if self.device is not None and self.device.type == "cuda" and self.device.index is None:
            # "cuda" and "cuda:0" differ as torch.device values: without an index, chunks already there would be copied.
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.capacity = capacity
        self.always_copy = always_copy
        self._resident: OrderedDict[int, tuple[QK, torch.cuda.Event | None]] = OrderedDict()
        self._stream = torch.cuda.Stream(self.device) if self.device is not None and self.device.type == "cuda" else None
        self._dropped: deque[torch.cuda.Event] = deque()  # when the kernels queued on each dropped chunk are done
        self.copies = 0  # chunks copied so far
        self.most_resident = 0  # the most chunks held at once

    def _copies(self, qk: QK) -> bool:
        return self.device is not None and (self.always_copy or qk.q.device != self.device)

    def get(self, qk: QK) -> QK:
        """`qk` on the compute device, ready to use on the current stream."""
        if not self._copies(qk):
            return qk
        if id(qk) not in self._resident:
            self._load(qk)
        self._resident.move_to_end(id(qk))
        moved, ready = self._resident[id(qk)]
        if ready is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(ready)
            moved.q.record_stream(current)  # allocated on the side stream, used (and freed) on this one
            moved.k.record_stream(current)
            self._resident[id(qk)] = (moved, None)
        return moved

    def prefetch(self, qk: QK) -> None:
        """Start copying `qk` so that a later get() finds it (a no-op when it needs no copy or is there)."""
        if self._copies(qk) and id(qk) not in self._resident:
            self._load(qk)

    def _load(self, qk: QK) -> None:
        while len(self._resident) >= self.capacity:
            self._resident.popitem(last=False)
            if self._stream is not None:
                self._dropped.append(torch.cuda.current_stream(self.device).record_event())
                if len(self._dropped) > self.capacity:
                    self._dropped.popleft().synchronize()
        if self._stream is not None:
            self._stream.wait_stream(torch.cuda.current_stream(self.device))  # the source may still be written
            with torch.cuda.stream(self._stream):
                moved = QK(qk.q.to(self.device, non_blocking=True, copy=True),
                           qk.k.to(self.device, non_blocking=True, copy=True), qk.sigma)
                ready = torch.cuda.Event()
                ready.record(self._stream)
        else:
            moved, ready = QK(qk.q.to(self.device, copy=True), qk.k.to(self.device, copy=True), qk.sigma), None
        self._resident[id(qk)] = (moved, ready)
        self.copies += 1
        self.most_resident = max(self.most_resident, len(self._resident))

    def clear(self) -> None:
        self._resident.clear()
        self._dropped.clear()


def _grey_levels(frames: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """The mean of the channels of frames [..., C] as float32 [...] (into `out` when given, of that shape)."""
    frames = frames.float()
    # A matrix-vector product over the channels: on a CPU three times faster than mean(dim=-1), which reduces an
    # innermost axis of 3 element by element.
    weights = torch.full((frames.shape[-1],), 1.0 / frames.shape[-1], device=frames.device)
    flat = frames.reshape(-1, frames.shape[-1])
    if out is None:
        return torch.mv(flat, weights).view(frames.shape[:-1])
    torch.mv(flat, weights, out=out.view(-1))
    return out


class FrameCopier:
    """Slices of the video on the compute device, copied ahead of use.

    On CUDA, from frames elsewhere, a prefetched slice is copied by a worker thread on a side stream: a copy from
    pageable memory holds the thread that issues it and, on the compute stream, would first wait for every kernel
    queued there; this way it overlaps them (the DiT read-out, the chunk before) and the caller's thread goes on.

    as_bytes: copies to the GPU carry 8-bit frames (what a decoded video holds), a quarter of the float32 bytes,
    given back as float32 in [0, 1]; the quantisation, under half a level of 255, is for consumers that only need
    the image's structure (a guide for edges), not exact values. Frames that need no copy are given as they are.
    grey: frames are given as their grey level [n, H, W] float32 (the mean of their channels), computed where they
    live before any copy, so a copy carries a third of the bytes (for consumers that align on intensity); from CPU
    memory, by several threads into page-locked memory.
    """

    def __init__(self, frames: torch.Tensor, device: torch.device, as_bytes: bool = False, grey: bool = False):
        self.frames, self.device, self.as_bytes, self.grey = frames, torch.device(device), as_bytes, grey
        copies = self.device.type == "cuda" and frames.device != self.device
        self.stream = torch.cuda.Stream(self.device) if copies else None
        self.pool = ThreadPoolExecutor(max_workers=1) if copies else None
        # One thread turns colour into grey at a few GB/s, below the copy it feeds: a frame per converter thread.
        from_cpu = copies and grey and frames.device.type == "cpu"
        self.converters = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) if from_cpu else None
        self.pending: dict[tuple[int, int], Future] = {}

    def _grey_pinned(self, low: int, high: int) -> torch.Tensor:
        """frames[low:high]'s grey levels [n, H, W] in page-locked CPU memory, whose copy to the GPU runs at full
        speed without holding the thread that issues it."""
        frames = self.frames[low:high]
        grey = torch.empty(frames.shape[:-1], dtype=torch.float32, pin_memory=True)
        list(self.converters.map(lambda index: _grey_levels(frames[index], grey[index]), range(len(frames))))
        return grey

    def _moved(self, low: int, high: int) -> torch.Tensor:
        if self.converters is not None:
            return self._grey_pinned(low, high).to(self.device, non_blocking=True)
        frames = self._source(low, high)
        if not self.as_bytes:
            return frames.to(self.device, non_blocking=True)
        quantised = frames.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)
        return quantised.to(self.device, non_blocking=True).float().div_(255)

    def _copy(self, low: int, high: int) -> tuple[torch.Tensor, torch.cuda.Event]:
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            moved = self._moved(low, high)
            ready = torch.cuda.Event()
            ready.record(self.stream)
        return moved, ready

    def prefetch(self, low: int, high: int) -> None:
        """Start copying frames[low:high] (a no-op off CUDA, or when it is on its way)."""
        if self.pool is not None and (low, high) not in self.pending:
            self.pending[(low, high)] = self.pool.submit(self._copy, low, high)

    def _source(self, low: int, high: int) -> torch.Tensor:
        """frames[low:high] where they live, as given (grey levels for `grey`)."""
        return _grey_levels(self.frames[low:high]) if self.grey else self.frames[low:high]

    def take(self, low: int, high: int) -> torch.Tensor:
        """frames[low:high] on the device, ready for the current stream."""
        if self.pool is None:
            return self._source(low, high).to(self.device)
        self.prefetch(low, high)
        moved, ready = self.pending.pop((low, high)).result()
        current = torch.cuda.current_stream(self.device)
        current.wait_event(ready)
        moved.record_stream(current)  # allocated on the side stream, used (and freed) on this one
        return moved

    def close(self) -> None:
        """Wait for copies under way and drop what was never taken (safe to call more than once)."""
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pending.clear()
        if self.converters is not None:
            self.converters.shutdown(wait=True)

    def __enter__(self) -> FrameCopier:
        return self

    def __exit__(self, *exception) -> None:
        self.close()
