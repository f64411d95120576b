"""OpenPose-style drawing of body, face and hands, as VACE's pose control videos look.

Keypoints are normalised (x, y) in 0..1 with a confidence, per person: body (18, 3) in OpenPose order
(nose, neck, R shoulder, R elbow, R wrist, L shoulder, L elbow, L wrist, R hip, R knee, R ankle, L hip, L knee,
L ankle, R eye, L eye, R ear, L ear), face (68, 3), hands (2, 21, 3) in OpenPose hand order (wrist, then four
joints per finger from the thumb). Points under the confidence threshold are not drawn.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

THRESHOLD = 0.3  # DWPose / VACE visibility threshold
STICK_WIDTH = 4
# the 17 limbs drawn (OpenPose's 19 without the ear-shoulder links), as pairs of body keypoint indices
LIMBS = [
    (1, 2),
    (1, 5),
    (2, 3),
    (3, 4),
    (5, 6),
    (6, 7),
    (1, 8),
    (8, 9),
    (9, 10),
    (1, 11),
    (11, 12),
    (12, 13),
    (1, 0),
    (0, 14),
    (14, 16),
    (0, 15),
    (15, 17),
]
# OpenPose's colour table. VACE draws it into a BGR canvas and flips to RGB, so these are BGR here.
COLORS = [
    (255, 0, 0),
    (255, 85, 0),
    (255, 170, 0),
    (255, 255, 0),
    (170, 255, 0),
    (85, 255, 0),
    (0, 255, 0),
    (0, 255, 85),
    (0, 255, 170),
    (0, 255, 255),
    (0, 170, 255),
    (0, 85, 255),
    (0, 0, 255),
    (85, 0, 255),
    (170, 0, 255),
    (255, 0, 255),
    (255, 0, 170),
    (255, 0, 85),
]
HAND_EDGES = [
    (0, 1),
    (1, 2),
    (2, 3),
    (3, 4),
    (0, 5),
    (5, 6),
    (6, 7),
    (7, 8),
    (0, 9),
    (9, 10),
    (10, 11),
    (11, 12),
    (0, 13),
    (13, 14),
    (14, 15),
    (15, 16),
    (0, 17),
    (17, 18),
    (18, 19),
    (19, 20),
]


@dataclass
class Pose:
    """Keypoints of the people in one frame, normalised to 0..1 with a confidence in the last column."""

    bodies: np.ndarray = field(default_factory=lambda: np.zeros((0, 18, 3)))
    faces: np.ndarray = field(default_factory=lambda: np.zeros((0, 68, 3)))
    hands: np.ndarray = field(default_factory=lambda: np.zeros((0, 2, 21, 3)))


def canvas_size(height: int, width: int, resolution: int = 1024) -> tuple[int, int]:
    """VACE draws at the detector's working size (short side `resolution`, both sides multiples of 64) and
    resizes to the frame, which sets how thick limbs look; 0 draws at the frame size."""
    if resolution <= 0:
        return height, width
    k = resolution / min(height, width)
    return int(round(height * k / 64)) * 64, int(round(width * k / 64)) * 64


def _visible(points: np.ndarray) -> np.ndarray:
    return points[..., 2] > THRESHOLD


def draw_body(canvas: np.ndarray, body: np.ndarray) -> None:
    h, w = canvas.shape[:2]
    xy, visible = body[:, :2] * (w, h), _visible(body)
    for color, (a, b) in zip(COLORS, LIMBS, strict=False):
        if not (visible[a] and visible[b]):
            continue
        (xa, ya), (xb, yb) = xy[a], xy[b]
        length = math.hypot(xa - xb, ya - yb)
        angle = math.degrees(math.atan2(ya - yb, xa - xb))
        center = (int((xa + xb) / 2), int((ya + yb) / 2))
        polygon = cv2.ellipse2Poly(center, (int(length / 2), STICK_WIDTH), int(angle), 0, 360, 1)
        cv2.fillConvexPoly(canvas, polygon, color)


def draw_joints(canvas: np.ndarray, body: np.ndarray) -> None:
    h, w = canvas.shape[:2]
    for color, (x, y, score) in zip(COLORS, body, strict=False):
        if score > THRESHOLD:
            cv2.circle(canvas, (int(x * w), int(y * h)), 4, color, thickness=-1)


def draw_face(canvas: np.ndarray, face: np.ndarray) -> None:
    h, w = canvas.shape[:2]
    for x, y, score in face:
        if score > THRESHOLD:
            cv2.circle(canvas, (int(x * w), int(y * h)), 3, (255, 255, 255), thickness=-1)


def draw_hand(canvas: np.ndarray, hand: np.ndarray) -> None:
    h, w = canvas.shape[:2]
    xy, visible = (hand[:, :2] * (w, h)).astype(int), _visible(hand)
    for i, (a, b) in enumerate(HAND_EDGES):
        if visible[a] and visible[b]:
            color = tuple(255 * c for c in colorsys.hsv_to_rgb(i / len(HAND_EDGES), 1.0, 1.0))
            cv2.line(canvas, tuple(map(int, xy[a])), tuple(map(int, xy[b])), color, thickness=2)
    for (x, y), seen in zip(xy, visible, strict=False):
        if seen:
            cv2.circle(canvas, (int(x), int(y)), 4, (0, 0, 255), thickness=-1)


def draw_pose(
    pose: Pose,
    height: int,
    width: int,
    body: bool = True,
    face: bool = True,
    hands: bool = False,
    resolution: int = 1024,
) -> np.ndarray:
    """The pose control frame (height, width, 3) uint8 RGB: black background, limbs dimmed to 60% under
    full-colour joints, face points white; VACE's default is body and face without hands."""
    ch, cw = canvas_size(height, width, resolution)
    canvas = np.zeros((ch, cw, 3), np.uint8)
    if body:
        for person in pose.bodies:
            draw_body(canvas, person)
        canvas = (canvas * 0.6).astype(np.uint8)
        for person in pose.bodies:
            draw_joints(canvas, person)
    if hands:
        for hand in pose.hands.reshape(-1, 21, 3):
            draw_hand(canvas, hand)
    if face:
        for person in pose.faces:
            draw_face(canvas, person)
    if (ch, cw) != (height, width):
        shrink = ch * cw > height * width
        canvas = cv2.resize(
            canvas, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LANCZOS4
        )
    return np.ascontiguousarray(canvas[..., ::-1])  # BGR -> RGB
