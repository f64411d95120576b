"""Person masks offline through MediaPipe (its 0.10.21 wheel ships the models).

"pose" (default) is BlazePose's segmentation of the tracked person (one person, full body, best edges);
"selfie" is the selfie-segmentation model (every person, fast, made for close and mid shots).
"""

from __future__ import annotations

import numpy as np
import torch

from ..base import AnnotatorError, FrameAnnotator, require, to_uint8


class PersonMask(FrameAnnotator):
    output = "mask"
    MODELS = ("pose", "selfie")

    def __init__(self, model: str = "pose", threshold: float | None = 0.5):
        if model not in self.MODELS:
            raise AnnotatorError(f"person mask model must be one of {self.MODELS}, got '{model}'")
        self.model, self.threshold = model, threshold

    def annotate(self, frames: torch.Tensor) -> torch.Tensor:
        solutions = require("mediapipe.python.solutions", "mediapipe==0.10.21")
        if self.model == "pose":
            segmenter = solutions.pose.Pose(static_image_mode=len(frames) == 1, enable_segmentation=True)
        else:
            segmenter = solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
        with segmenter:
            masks = [self.segment(segmenter, frame) for frame in self.counted(to_uint8(frames), len(frames))]
        masks = torch.from_numpy(np.stack(masks))
        return masks if self.threshold is None else (masks >= self.threshold).float()

    @staticmethod
    def segment(segmenter, frame: np.ndarray) -> np.ndarray:
        mask = segmenter.process(np.ascontiguousarray(frame)).segmentation_mask
        return np.zeros(frame.shape[:2], np.float32) if mask is None else mask.astype(np.float32)
