"""Pose control video: keypoints detected per frame, drawn OpenPose-style (body and face, hands optional).

Backends: DWPose through onnxruntime (VACE's, from the user's yolox_l.onnx + dw-ll_ucoco_384.onnx) and
MediaPipe Holistic (offline: the mediapipe 0.10.21 wheel ships its models; one person per frame).
"""

import numpy as np
import torch

from ..base import Annotator, from_uint8, to_uint8
from .draw import Pose, draw_pose


class PoseAnnotator(Annotator):
    """Detects `Pose`s frame by frame and draws them. Subclasses implement `detect`."""

    def __init__(self, body: bool = True, face: bool = True, hands: bool = False, resolution: int = 1024):
        self.body, self.face, self.hands, self.resolution = body, face, hands, resolution

    def detect(self, frames: np.ndarray) -> list[Pose]:
        """(T, H, W, 3) uint8 RGB -> one Pose per frame."""
        raise NotImplementedError

    def annotate(self, frames: torch.Tensor) -> torch.Tensor:
        t, h, w, _ = frames.shape
        poses = self.detect(to_uint8(frames))
        return from_uint8(
            draw_pose(p, h, w, self.body, self.face, self.hands, self.resolution) for p in poses
        )


def __getattr__(name):  # backends load lazily: each needs its own optional package
    if name == "MediaPipePose":
        from .mediapipe_pose import MediaPipePose

        return MediaPipePose
    if name == "DWPose":
        from .dwpose import DWPose

        return DWPose
    raise AttributeError(name)


__all__ = ["DWPose", "MediaPipePose", "Pose", "PoseAnnotator", "draw_pose"]
