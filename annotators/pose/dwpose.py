"""DWPose through onnxruntime, as VACE runs it: YOLOX-L finds people (yolox_l.onnx, input 1x3x640x640,
output 1 x anchors x 85), the RTMPose-style whole-body model (dw-ll_ucoco_384.onnx, input 1x3x384x288) gives 133
COCO-WholeBody keypoints as SimCC x / y distributions for each person box."""

from __future__ import annotations

import cv2
import numpy as np

from ..base import pick_device, require
from ..weights import resolve_weight
from . import PoseAnnotator
from .draw import Pose, canvas_size

DETECT_SIZE = (640, 640)  # (h, w)
STRIDES = (8, 16, 32)
PAD_VALUE = 114
NMS_IOU, SCORE_MIN, PERSON_MIN = 0.45, 0.1, 0.3
BOX_PADDING = 1.25
SIMCC_SPLIT = 2.0
MEAN, STD = np.array([123.675, 116.28, 103.53]), np.array([58.395, 57.12, 57.375])
# COCO-WholeBody body (17) -> OpenPose body (18, neck at 1 from the shoulders)
COCO_FOR_OPENPOSE = [0, -1, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3]
FACE, LEFT_HAND, RIGHT_HAND = slice(23, 91), slice(91, 112), slice(112, 133)


def letterbox(image: np.ndarray) -> tuple[np.ndarray, float]:
    """Resize into the detector's square, top-left aligned, padded grey: (1, 3, 640, 640) float and the scale."""
    ratio = min(DETECT_SIZE[0] / image.shape[0], DETECT_SIZE[1] / image.shape[1])
    size = (int(image.shape[1] * ratio), int(image.shape[0] * ratio))
    padded = np.full((*DETECT_SIZE, 3), PAD_VALUE, np.uint8)
    padded[: size[1], : size[0]] = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    return padded.transpose(2, 0, 1)[None].astype(np.float32), ratio


def decode_yolox(raw: np.ndarray) -> np.ndarray:
    """(anchors, 85) raw YOLOX head outputs -> (anchors, 85) with boxes (cx, cy, w, h) in input pixels."""
    grids, strides = [], []
    for stride in STRIDES:
        h, w = DETECT_SIZE[0] // stride, DETECT_SIZE[1] // stride
        xs, ys = np.meshgrid(np.arange(w), np.arange(h))
        grids.append(np.stack([xs, ys], -1).reshape(-1, 2))
        strides.append(np.full((h * w, 1), stride))
    grid, stride = np.concatenate(grids), np.concatenate(strides)
    out = raw.copy()
    out[:, :2] = (raw[:, :2] + grid) * stride
    out[:, 2:4] = np.exp(raw[:, 2:4]) * stride
    return out


def nms(boxes: np.ndarray, scores: np.ndarray, iou_max: float) -> list[int]:
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order, keep = scores.argsort()[::-1], []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(int(i))
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        iou = w * h / (areas[i] + areas[rest] - w * h)
        order = rest[iou <= iou_max]
    return keep


def person_boxes(outputs: np.ndarray, ratio: float) -> np.ndarray:
    """Decoded YOLOX predictions -> (N, 4) person boxes (x1, y1, x2, y2) in image pixels.

    DWPose runs class-aware NMS (score > 0.1) and keeps people above 0.3; NMS per class leaves other classes
    out of the person result, so only the person class is computed."""
    cxcywh, scores = outputs[:, :4], outputs[:, 4] * outputs[:, 5]
    boxes = np.concatenate([cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, :2] + cxcywh[:, 2:] / 2], 1) / ratio
    valid = scores > SCORE_MIN
    boxes, scores = boxes[valid], scores[valid]
    keep = [i for i in nms(boxes, scores, NMS_IOU) if scores[i] > PERSON_MIN]
    return boxes[keep].reshape(-1, 4).astype(np.float64)


def crop_transform(box: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The affine map from the image to the pose model's (w, h) input around `box`, padded by 1.25 and widened
    to the input's aspect ratio. Returns the 2x3 matrix, the box centre and its (w, h) scale."""
    w, h = size
    center = (box[:2] + box[2:]) / 2
    scale = (box[2:] - box[:2]) * BOX_PADDING
    scale = np.where(scale[0] > scale[1] * w / h, [scale[0], scale[0] * h / w], [scale[1] * w / h, scale[1]])
    src = np.float32([center, center + [0, -scale[0] / 2], center + [-scale[0] / 2, 0]])
    dst = np.float32([[w / 2, h / 2], [w / 2, h / 2 - w / 2], [0, h / 2]])
    return cv2.getAffineTransform(src, dst), center, scale


def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, Wx), (K, Wy) -> (K, 2) locations in model-input pixels and (K,) scores (the weaker axis' peak)."""
    locs = np.stack([simcc_x.argmax(1), simcc_y.argmax(1)], -1).astype(np.float64) / SIMCC_SPLIT
    scores = np.minimum(simcc_x.max(1), simcc_y.max(1))
    locs[scores <= 0] = -1
    return locs, scores


def to_openpose(keypoints: np.ndarray, scores: np.ndarray, height: int, width: int) -> Pose:
    """(N, 133, 2) pixels and (N, 133) scores -> Pose normalised to 0..1, body in OpenPose order."""
    points = np.concatenate([keypoints / (width, height), scores[..., None]], -1)  # (N, 133, 3)
    body = points[:, np.maximum(COCO_FOR_OPENPOSE, 0)]
    shoulders = points[:, [5, 6]]
    neck_seen = (shoulders[..., 2] > 0.3).all(1)
    body[:, 1] = np.concatenate([shoulders[..., :2].mean(1), neck_seen[:, None].astype(float)], -1)
    return Pose(
        bodies=body, faces=points[:, FACE], hands=np.stack([points[:, LEFT_HAND], points[:, RIGHT_HAND]], 1)
    )


class DWPose(PoseAnnotator):
    """VACE's pose annotator; the frame is resized to short side `resolution` (multiples of 64) for detection."""

    def __init__(
        self,
        detector: str = "yolox_l.onnx",
        estimator: str = "dw-ll_ucoco_384.onnx",
        search_dirs=(),
        device=None,
        body: bool = True,
        face: bool = True,
        hands: bool = False,
        resolution: int = 1024,
    ):
        super().__init__(body, face, hands, resolution)
        ort = require("onnxruntime")
        use_cuda = (
            pick_device(device).type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers()
        )
        providers = (
            ["CUDAExecutionProvider", "CPUExecutionProvider"] if use_cuda else ["CPUExecutionProvider"]
        )
        self.detector = ort.InferenceSession(
            str(resolve_weight(detector, "annotators", search_dirs)), providers=providers
        )
        self.estimator = ort.InferenceSession(
            str(resolve_weight(estimator, "annotators", search_dirs)), providers=providers
        )
        h, w = self.estimator.get_inputs()[0].shape[2:]
        self.pose_size = (int(w), int(h))

    def detect(self, frames: np.ndarray) -> list[Pose]:
        return [self.detect_frame(frame) for frame in self.counted(frames, len(frames))]

    def detect_frame(self, frame: np.ndarray) -> Pose:
        h, w = canvas_size(*frame.shape[:2], self.resolution)
        shrink = h * w < frame.shape[0] * frame.shape[1]
        image = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LANCZOS4)
        image = np.ascontiguousarray(image[..., ::-1])  # DWPose's models take BGR
        boxes = self.find_people(image)
        if len(boxes) == 0:  # DWPose then estimates on the whole frame
            boxes = np.array([[0, 0, w, h]], np.float64)
        keypoints, scores = zip(*(self.estimate(image, box) for box in boxes), strict=False)
        return to_openpose(np.stack(keypoints), np.stack(scores), h, w)

    def find_people(self, image: np.ndarray) -> np.ndarray:
        tensor, ratio = letterbox(image)
        raw = self.detector.run(None, {self.detector.get_inputs()[0].name: tensor})[0][0]
        return person_boxes(decode_yolox(raw), ratio)

    def estimate(self, image: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        matrix, center, scale = crop_transform(box, self.pose_size)
        crop = cv2.warpAffine(image, matrix, self.pose_size, flags=cv2.INTER_LINEAR)
        tensor = ((crop - MEAN) / STD).transpose(2, 0, 1)[None].astype(np.float32)
        simcc_x, simcc_y = self.estimator.run(None, {self.estimator.get_inputs()[0].name: tensor})[:2]
        locs, scores = decode_simcc(simcc_x[0], simcc_y[0])
        return locs / self.pose_size * scale + center - scale / 2, scores
