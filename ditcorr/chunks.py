"""Chunk planning for long videos (DiffTrack's strided chunks).

The DiT sees a fixed number of frames per forward: the reference frame plus
`frames_per_chunk - 1` others. Others are taken at a stride so that every chunk
spans the whole video; chunks repeat until every frame is covered, so a long
video costs O(T) forwards of a fixed size.
"""
from __future__ import annotations


def plan_chunks(frame_count: int, frames_per_chunk: int = 13, reference: int = 0) -> list[list[int]]:
    """Frame indices of each chunk; the reference frame first in every chunk.

    frames_per_chunk <= 0 or >= frame_count: one chunk holding every frame.
    Every frame appears in at least one chunk; all chunks have the same length.
    """
    if frame_count < 1:
        raise ValueError("A video needs at least one frame.")
    if not 0 <= reference < frame_count:
        raise ValueError(f"Reference frame {reference} is outside the video's {frame_count} frames (0..{frame_count - 1}).")
    others = [f for f in range(frame_count) if f != reference]
    per_chunk = frames_per_chunk - 1
    if frames_per_chunk <= 0 or len(others) <= per_chunk:
        return [[reference] + others]
    if per_chunk < 1:
        raise ValueError("frames_per_chunk must be at least 2 (the reference frame plus one other), or 0 for one chunk.")
    interval = len(others) // per_chunk
    chunks = [others[c::interval][:per_chunk] for c in range(interval)]
    leftover = others[interval * per_chunk:]
    if leftover:
        # Fill the last chunk with evenly spread frames so every forward has the same size.
        spread = [others[round(i * (len(others) - 1) / max(per_chunk - 1, 1))] for i in range(per_chunk)]
        fill = [f for f in spread if f not in leftover][: per_chunk - len(leftover)]
        chunks.append(sorted(leftover + fill))
    return [[reference] + chunk for chunk in chunks]


def plan_windows(frame_count: int, frames_per_chunk: int = 13, reference: int = 0, overlap: int = 3) -> list[list[int]]:
    """Frame indices of each chunk for propagation through time: the reference frame first, then a run of
    consecutive frames. Runs go forward in time from the reference, then backward from it; each run after the
    first on its side repeats the `overlap` frames nearest the reference of the one before, so a frame's nearest
    predecessors always share its forward. A side shorter than one run gets a shorter run.

    frames_per_chunk <= 0, or every frame fitting in one chunk: one chunk holding every frame.
    """
    if frame_count < 1:
        raise ValueError("A video needs at least one frame.")
    if not 0 <= reference < frame_count:
        raise ValueError(f"Reference frame {reference} is outside the video's {frame_count} frames (0..{frame_count - 1}).")
    run = frames_per_chunk - 1
    if frames_per_chunk <= 0 or frame_count - 1 <= run:
        return [[reference] + [f for f in range(frame_count) if f != reference]]
    if not 0 <= overlap < run:
        raise ValueError(f"frames_per_chunk {frames_per_chunk} leaves no new frames after an overlap of {overlap}: "
                         f"use at least {overlap + 2} frames per chunk (or 0 for one chunk).")
    chunks = []
    for side in (list(range(reference + 1, frame_count)), list(range(reference - 1, -1, -1))):
        start = 0
        while start < len(side):
            begin = max(0, min(start, len(side) - run))  # the last run ends at the video's end, full length
            chunks.append([reference] + sorted(side[begin:begin + run]))
            if begin + run >= len(side):
                break
            start = begin + run - overlap
    return chunks
