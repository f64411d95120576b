"""MediaPipe Holistic as a pose backend: BlazePose body (33 points) mapped to OpenPose's 18, the face mesh
reduced to 68 points, and the 21-point hands (already in OpenPose's hand order)."""

from __future__ import annotations

import numpy as np

from ..base import require
from . import PoseAnnotator
from .draw import Pose

# OpenPose body index -> BlazePose landmark; the neck (1) is the shoulders' midpoint
BLAZEPOSE_FOR_OPENPOSE = {
    0: 0,
    2: 12,
    3: 14,
    4: 16,
    5: 11,
    6: 13,
    7: 15,
    8: 24,
    9: 26,
    10: 28,
    11: 23,
    12: 25,
    13: 27,
    14: 5,
    15: 2,
    16: 8,
    17: 7,
}
# face-mesh landmarks at the 68 iBUG points: jaw 17, brows 10, nose 9, eyes 12, mouth 20
FACE_MESH_68 = [
    127,
    234,
    93,
    132,
    58,
    136,
    150,
    176,
    152,
    400,
    379,
    365,
    288,
    361,
    323,
    454,
    356,
    70,
    63,
    105,
    66,
    107,
    336,
    296,
    334,
    293,
    300,
    168,
    197,
    5,
    4,
    75,
    97,
    2,
    326,
    305,
    33,
    160,
    158,
    133,
    153,
    144,
    362,
    385,
    387,
    263,
    373,
    380,
    61,
    40,
    37,
    0,
    267,
    270,
    291,
    321,
    314,
    17,
    84,
    91,
    78,
    81,
    13,
    311,
    308,
    402,
    14,
    178,
]


def _points(landmarks, count: int, use_visibility: bool) -> np.ndarray:
    """(count, 3) x, y, confidence; all zero (not drawn) when MediaPipe found nothing."""
    if landmarks is None:
        return np.zeros((count, 3))
    lm = landmarks.landmark
    conf = [p.visibility if use_visibility else 1.0 for p in lm]
    return np.array([[p.x, p.y, c] for p, c in zip(lm, conf, strict=False)])


def body_from_blazepose(blaze: np.ndarray) -> np.ndarray:
    """(33, 3) BlazePose landmarks -> (18, 3) OpenPose body; points outside the frame are dropped."""
    body = np.zeros((18, 3))
    for op, bp in BLAZEPOSE_FOR_OPENPOSE.items():
        body[op] = blaze[bp]
    shoulders = blaze[[11, 12]]
    body[1] = [*shoulders[:, :2].mean(0), shoulders[:, 2].min()]
    outside = (body[:, :2] < 0).any(1) | (body[:, :2] > 1).any(1)
    body[outside, 2] = 0
    return body


class MediaPipePose(PoseAnnotator):
    """One person per frame, tracked through the clip (a fresh tracker per call)."""

    def __init__(
        self,
        body: bool = True,
        face: bool = True,
        hands: bool = False,
        resolution: int = 1024,
        min_confidence: float = 0.5,
    ):
        super().__init__(body, face, hands, resolution)
        self.min_confidence = min_confidence

    def detect(self, frames: np.ndarray) -> list[Pose]:
        holistic_mod = require("mediapipe.python.solutions.holistic", "mediapipe==0.10.21")
        poses = []
        with holistic_mod.Holistic(
            static_image_mode=len(frames) == 1,
            model_complexity=1,
            min_detection_confidence=self.min_confidence,
            min_tracking_confidence=self.min_confidence,
        ) as holistic:
            for frame in self.counted(frames, len(frames)):
                poses.append(self.to_pose(holistic.process(np.ascontiguousarray(frame))))
        return poses

    @staticmethod
    def to_pose(result) -> Pose:
        if result.pose_landmarks is None:
            return Pose()
        body = body_from_blazepose(_points(result.pose_landmarks, 33, use_visibility=True))
        face = _points(result.face_landmarks, 468, use_visibility=False)[FACE_MESH_68]
        hands = np.stack(
            [_points(result.left_hand_landmarks, 21, False), _points(result.right_hand_landmarks, 21, False)]
        )
        return Pose(bodies=body[None], faces=face[None], hands=hands[None])
