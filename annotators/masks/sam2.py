"""SAM2 video segmentation: points or boxes on any frame, propagated through the clip (forwards, then backwards
from the prompted frame), with the `sam2` package, the user's checkpoint and the package's own configs."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F

from ..base import AnnotatorError, Progress, TorchAnnotator, counted, pick_device, require
from ..weights import resolve_weight

# checkpoint file -> the config the sam2 package ships for it
CONFIGS = {
    "sam2.1_hiera_tiny.pt": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1_hiera_small.pt": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_hiera_base_plus.pt": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_large.pt": "configs/sam2.1/sam2.1_hiera_l.yaml",
}
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class Prompt:
    """Clicks and/or a box (pixels in the frame) for one object on one frame."""

    frame: int = 0
    points: list[tuple[float, float]] = field(default_factory=list)  # (x, y)
    labels: list[int] = field(default_factory=list)  # 1 foreground, 0 background
    box: tuple[float, float, float, float] | None = None  # (x1, y1, x2, y2)
    object_id: int = 1


class SAM2Video(TorchAnnotator):
    """Frames + prompts -> MASK (T, H, W): the union of the prompted objects."""

    output = "mask"

    def __init__(
        self,
        checkpoint: str = "sam2.1_hiera_large.pt",
        config: str | None = None,
        search_dirs=(),
        device=None,
        overrides: list[str] | None = None,
    ):
        build_sam = require("sam2.build_sam", "sam2==1.1.0")
        self.device = pick_device(device)
        path = resolve_weight(checkpoint, "sam2", search_dirs)
        config = config or CONFIGS.get(path.name)
        if config is None:
            raise AnnotatorError(
                f"no sam2 config known for '{path.name}': pass config= one of {sorted(CONFIGS.values())}"
            )
        self.model = build_sam.build_sam2_video_predictor(
            config, str(path), device=str(self.device), hydra_overrides_extra=overrides or []
        )
        self.prompts: list[Prompt] = []

    def annotate(self, frames: torch.Tensor) -> torch.Tensor:
        return self.segment(frames, self.prompts, self.progress)

    def frames_for_model(self, frames: torch.Tensor) -> torch.Tensor:
        """(T, H, W, 3) -> (T, 3, S, S) normalised, as sam2's frame loader prepares video frames."""
        size = self.model.image_size
        x = frames.to(self.device, torch.float32).permute(0, 3, 1, 2)
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        mean, std = (torch.tensor(v, device=self.device).view(1, 3, 1, 1) for v in (MEAN, STD))
        return (x - mean) / std

    @torch.inference_mode()
    def segment(self, frames: torch.Tensor, prompts: list[Prompt], progress: Progress | None = None) -> torch.Tensor:
        """(T, H, W, 3) + prompts -> (T, H, W) masks; `progress(done, t + 1)` after each propagated frame (the
        prompt frame is visited by the forward and the backward pass)."""
        if not prompts:
            raise AnnotatorError("SAM2 needs at least one prompt: points or a box on a frame")
        t, h, w, _ = frames.shape
        for p in prompts:
            if not 0 <= p.frame < t:
                raise AnnotatorError(f"prompt frame {p.frame} is outside the clip of {t} frames")
        images = self.frames_for_model(frames)
        # sam2's init_state reads a video file or a JPEG folder; hand it the frames we already hold instead
        loader = mock.patch("sam2.sam2_video_predictor.load_video_frames", return_value=(images, h, w))
        autocast = torch.autocast("cuda", torch.bfloat16) if self.device.type == "cuda" else nullcontext()
        with loader, autocast:
            state = self.model.init_state(video_path="<frames>")
            for p in prompts:
                self.model.add_new_points_or_box(
                    state,
                    frame_idx=p.frame,
                    obj_id=p.object_id,
                    points=np.array(p.points, np.float32).reshape(-1, 2) if p.points else None,
                    labels=np.array(p.labels, np.int32) if p.points else None,
                    box=np.array(p.box, np.float32) if p.box is not None else None,
                )
            masks = torch.zeros(t, h, w)
            start = min(p.frame for p in prompts)
            propagated = (step for reverse in (False, True)
                          for step in self.model.propagate_in_video(state, start_frame_idx=start, reverse=reverse))
            for idx, _, logits in counted(propagated, t + 1, progress):
                masks[idx] = (logits > 0).any(0)[0].float().cpu()
        return masks
