"""Optical-flow control video: flow from each frame to the next, drawn with the standard colour wheel.

VACE ran RAFT on the T-1 consecutive pairs and repeated the first flow image to get T frames; both backends
here do the same. OpenCV DIS is the offline default; RAFT needs torchvision and its weight file.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from ..base import Annotator, TorchAnnotator, load_weights, pick_device, require, to_uint8
from ..weights import resolve_weight
from .colorwheel import flow_to_color


def vace_flow_frames(flows: torch.Tensor) -> torch.Tensor:
    """(T-1, H, W, 2) flows -> (T, H, W, 3) colour frames, the first flow shown twice (VACE's first frame)."""
    colors = flow_to_color(flows)
    return torch.cat([colors[:1], colors]) if len(colors) else colors


class FlowAnnotator(Annotator):
    def flows(self, frames: torch.Tensor) -> torch.Tensor:
        """(T, H, W, 3) -> (T-1, H, W, 2) flow in pixels (x, y) from frame t to frame t+1."""
        raise NotImplementedError

    def annotate(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.shape[0] == 1:  # no pair to compare: no motion
            return torch.ones_like(frames, dtype=torch.float32)
        return vace_flow_frames(self.flows(frames))


class DISFlow(FlowAnnotator):
    """OpenCV's dense inverse-search flow on gray frames (fast, CPU)."""

    PRESETS = {
        "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
        "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
        "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
    }

    def __init__(self, preset: str = "medium"):
        self.preset = self.PRESETS[preset]

    def flows(self, frames: torch.Tensor) -> torch.Tensor:
        dis = cv2.DISOpticalFlow_create(self.preset)
        gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in to_uint8(frames)]
        pairs = zip(gray[:-1], gray[1:], strict=True)
        return torch.from_numpy(np.stack([dis.calc(a, b, None) for a, b in self.counted(pairs, len(gray) - 1)]))


class RAFTFlow(FlowAnnotator, TorchAnnotator):
    """RAFT through torchvision's `raft_large` and torchvision's weight file
    (e.g. raft_large_C_T_SKHT_V2-ff5fadd5.pth).

    The pack itself never needs torchvision: without it this backend says so and DIS remains.
    """

    WEIGHT = "raft_large_C_T_SKHT_V2-ff5fadd5.pth"

    def __init__(
        self,
        weight: str = WEIGHT,
        search_dirs=(),
        device=None,
        iters: int = 20,
    ):
        optical_flow = require("torchvision.models.optical_flow", "torchvision")
        self.device = pick_device(device)
        self.model = optical_flow.raft_large(weights=None, progress=False)
        path = resolve_weight(weight, "annotators", search_dirs)
        self.model.load_state_dict(load_weights(path))
        self.model = self.model.eval().requires_grad_(False).to(self.device)
        self.iters = iters

    @torch.inference_mode()
    def flows(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.to(self.device, torch.float32).permute(0, 3, 1, 2) * 2 - 1  # RAFT wants -1..1
        h, w = x.shape[-2:]
        x = torch.nn.functional.pad(x, (0, -w % 8, 0, -h % 8), mode="replicate")  # RAFT needs multiples of 8
        pairs = zip(x[:-1], x[1:], strict=True)
        out = [self.model(a[None], b[None], num_flow_updates=self.iters)[-1][0]
               for a, b in self.counted(pairs, len(x) - 1)]
        return torch.stack(out)[:, :, :h, :w].permute(0, 2, 3, 1).cpu()


__all__ = ["DISFlow", "RAFTFlow", "flow_to_color", "vace_flow_frames"]
