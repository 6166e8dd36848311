"""Classical optical flow for the motion metrics (OpenCV's DIS: no learned weights; a test and benchmark
dependency, never one of the pack's)."""
from __future__ import annotations

import numpy as np
import torch


def dis_flows(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward (t -> t+1) and backward (t+1 -> t) flows [T-1, H, W, 2] in pixels of frames [T, H, W, C] in [0, 1],
    by OpenCV's DIS optical flow (its 'medium' preset) on the grey frames."""
    import cv2

    grey = [(frame[..., :3].float().mean(-1).clamp(0, 1).numpy() * 255).round().astype(np.uint8) for frame in frames]
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    forward = [dis.calc(grey[t], grey[t + 1], None) for t in range(len(grey) - 1)]
    backward = [dis.calc(grey[t + 1], grey[t], None) for t in range(len(grey) - 1)]
    return torch.from_numpy(np.stack(forward)), torch.from_numpy(np.stack(backward))
