"""Layout control videos on white: a box moving between two boxes, or the outlines of tracked masks."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from .base import AnnotatorError, check_masks, from_uint8, to_uint8

WHITE = (255, 255, 255)
BLACK = (0, 0, 0)


def moving_box(
    start_box, end_box, num_frames: int, height: int, width: int, color=BLACK, thickness: int = 2
) -> torch.Tensor:
    """Boxes (x1, y1, x2, y2) in pixels, linearly moved from `start_box` (first frame) to `end_box` (last frame),
    drawn as outlines on white, as VACE's layout annotator draws them. Returns IMAGE (T, H, W, 3)."""
    if num_frames < 1:
        raise AnnotatorError(f"num_frames must be at least 1, got {num_frames}")
    start, end = np.asarray(start_box, np.float64), np.asarray(end_box, np.float64)
    if start.shape != (4,) or end.shape != (4,):
        raise AnnotatorError("boxes are (x1, y1, x2, y2) in pixels")
    for name, box in (("start box", start), ("end box", end)):
        x1, y1, x2, y2 = box
        if not (x1 < x2 and y1 < y2):
            raise AnnotatorError(f"the {name} {tuple(box)} is empty: give x1 < x2 and y1 < y2")
        if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
            raise AnnotatorError(f"the {name} {tuple(box)} lies outside the {width}x{height} frame, so nothing "
                                 "would be drawn: give pixel coordinates inside the frame")
    frames = []
    for t in np.linspace(0.0, 1.0, num_frames):
        x1, y1, x2, y2 = np.round(start + (end - start) * t).astype(int)
        frame = np.full((height, width, 3), WHITE, np.uint8)
        cv2.rectangle(frame, (int(x1), int(y1)), (int(x2), int(y2)), tuple(color), thickness)
        frames.append(frame)
    return from_uint8(frames)


def mask_tracks(masks: torch.Tensor, color=BLACK, thickness: int = 3) -> torch.Tensor:
    """The outer contours of each frame's mask drawn on white (VACE's track layout). MASK in, IMAGE out."""
    frames = []
    for mask in to_uint8(check_masks(masks)[..., None])[..., 0]:
        contours, _ = cv2.findContours(
            (mask > 127).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        frame = np.full((*mask.shape, 3), WHITE, np.uint8)
        frames.append(cv2.drawContours(frame, contours, -1, tuple(color), thickness))
    return from_uint8(frames)
