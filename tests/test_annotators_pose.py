"""Pose: OpenPose drawing from known keypoints, MediaPipe on a real photo, DWPose end to end through an ONNX
pair written by the test with DWPose's signatures and planted outputs (a known box and known keypoints)."""

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from skimage import data

from annotators.base import AnnotatorError
from annotators.pose import DWPose, MediaPipePose
from annotators.pose.draw import COLORS, Pose, draw_pose


def rgb(bgr, scale=1.0):
    return [int(c * scale) for c in bgr[::-1]]


def test_draw_pose_from_known_keypoints():
    body = np.zeros((18, 3))
    body[1] = (0.5, 0.3, 1)  # neck
    body[2] = (0.3, 0.3, 1)  # right shoulder
    body[0] = (0.5, 0.15, 1)  # nose
    body[5] = (0.7, 0.3, 0.2)  # left shoulder under the threshold: not drawn
    face = np.zeros((68, 3))
    face[0] = (0.6, 0.1, 1)
    hands = np.zeros((2, 21, 3))
    hands[0, :2] = [(0.1, 0.9, 1), (0.2, 0.9, 1)]
    pose = Pose(bodies=body[None], faces=face[None], hands=hands[None])
    img = draw_pose(pose, 200, 200, resolution=0)
    assert img.shape == (200, 200, 3) and img.dtype == np.uint8
    assert img[60, 80].tolist() == rgb(COLORS[0], 0.6)  # neck-right shoulder limb, dimmed (VACE's BGR table)
    assert img[60, 60].tolist() == rgb(COLORS[2])  # joint 2 at full colour
    assert img[60, 100].tolist() == rgb(COLORS[1])  # the neck
    assert img[60, 140].tolist() == [0, 0, 0]  # invisible left shoulder
    assert img[20, 120].tolist() == [255, 255, 255]  # a face point
    assert img[180, 30].tolist() == [0, 0, 0]  # hands are off by default
    with_hands = draw_pose(pose, 200, 200, hands=True, resolution=0)
    assert with_hands[180, 20].tolist() == [255, 0, 0]  # hand joints red
    only_body = draw_pose(pose, 200, 200, face=False, resolution=0)
    assert only_body[20, 120].tolist() == [0, 0, 0]


def test_draw_pose_at_vace_resolution_then_resized():
    body = np.zeros((18, 3))
    body[[1, 2], :] = [(0.5, 0.5, 1), (0.25, 0.5, 1)]
    img = draw_pose(Pose(bodies=body[None]), 240, 416)  # drawn at 1024x1792, shrunk: thinner limb
    assert img.shape == (240, 416, 3)
    column = img[:, 150, 2]
    assert column.max() > 100 and (column > 50).sum() <= 3


def test_mediapipe_finds_the_astronaut():
    frames = torch.from_numpy(data.astronaut()[None]).float() / 255  # 512 x 512, a woman, upper body
    ann = MediaPipePose(face=True)
    pose = ann.detect((frames * 255).byte().numpy())[0]
    body = pose.bodies[0]
    px = body[:, :2] * 512
    nose, neck, r_sh, l_sh, r_eye, l_eye = px[[0, 1, 2, 5, 14, 15]]
    assert body[[0, 1, 2, 5, 14, 15], 2].min() > 0.9
    assert 190 < nose[0] < 260 and 90 < nose[1] < 160  # her face
    assert r_eye[1] < nose[1] and l_eye[1] < nose[1] and r_eye[0] < l_eye[0]  # her right eye is image-left
    assert 200 < neck[1] < 300 and r_sh[0] < 160 and l_sh[0] > 260  # shoulders of the suit, below the face
    face = pose.faces[0]
    assert (face[:, 2] > 0).all() and 150 < face[:, 0].mean() * 512 < 290 and face[:, 1].mean() * 512 < 200
    out = ann(frames)
    assert out.shape == frames.shape
    x, y = nose.astype(int)
    assert out[0, y - 1 : y + 2, x - 1 : x + 2, 2].max() > 0.8  # the nose joint, drawn blue (VACE's colours)
    assert out[0, :, 400:].max() == 0  # nothing drawn on the right third (the helmet and the shuttle)


# ---------- DWPose through an ONNX pair with DWPose's signatures ----------
ANCHOR = 80 * 80 + 40 * 40 + 8 * 20 + 10  # stride-32 cell (x=10, y=8)
BOX_640 = (236.0, 72.0, 436.0, 472.0)  # what the planted anchor decodes to in the detector's 640 input
KEYPOINTS_INPUT = {0: (144, 96), 5: (200, 150), 6: (88, 150)}  # COCO nose, L / R shoulder in 288x384 input


def onnx_model(name, inputs, outputs, nodes, inits, path):
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, path)


def linear_head(name, shape, planted, rng):
    """out = mean(input) * W + planted: depends on the image (tiny random W), dominated by the plant."""
    w = numpy_helper.from_array((rng.standard_normal(shape) * 1e-6).astype(np.float32), f"{name}_w")
    b = numpy_helper.from_array(planted.astype(np.float32), f"{name}_b")
    nodes = [
        helper.make_node("Mul", ["mean", f"{name}_w"], [f"{name}_m"]),
        helper.make_node("Add", [f"{name}_m", f"{name}_b"], [name]),
    ]
    return nodes, [w, b]


def write_dwpose_pair(folder):
    rng = np.random.default_rng(0)
    mean = helper.make_node("ReduceMean", ["images"], ["mean"], axes=[1, 2, 3], keepdims=0)
    det = np.zeros((1, 8400, 85))
    det[0, ANCHOR, :4] = (0.5, 0.5, np.log(200 / 32), np.log(400 / 32))  # cx, cy = (10.5, 8.5) * 32
    det[0, ANCHOR, 4:6] = 0.9  # objectness, person
    nodes, inits = linear_head("output", (1, 8400, 85), det, rng)
    onnx_model(
        "yolox",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 640, 640])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 8400, 85])],
        [mean, *nodes],
        inits,
        folder / "yolox_l.onnx",
    )
    sx, sy = np.zeros((1, 133, 576)), np.zeros((1, 133, 768))
    for k, (x, y) in KEYPOINTS_INPUT.items():
        sx[0, k, 2 * x] = sy[0, k, 2 * y] = 0.9  # SimCC split ratio 2
    mean = helper.make_node("ReduceMean", ["input"], ["mean"], axes=[1, 2, 3], keepdims=0)
    nx, ix = linear_head("simcc_x", sx.shape, sx, rng)
    ny, iy = linear_head("simcc_y", sy.shape, sy, rng)
    onnx_model(
        "rtmpose",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 384, 288])],
        [
            helper.make_tensor_value_info("simcc_x", TensorProto.FLOAT, [1, 133, 576]),
            helper.make_tensor_value_info("simcc_y", TensorProto.FLOAT, [1, 133, 768]),
        ],
        [mean, *nx, *ny],
        ix + iy,
        folder / "dw-ll_ucoco_384.onnx",
    )


def expected_points(size=1024):
    """The planted keypoints mapped back to the 1024x1024 working image, normalised."""
    ratio = 640 / size
    x1, y1, x2, y2 = np.array(BOX_640) / ratio
    center = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
    h = (y2 - y1) * 1.25
    scale = np.array([h * 288 / 384, h])  # the box padded 1.25, widened to the input's 3:4
    return {
        k: (np.array(p) / (288, 384) * scale + center - scale / 2) / size for k, p in KEYPOINTS_INPUT.items()
    }


def test_dwpose_onnx_pair_end_to_end(tmp_path):
    write_dwpose_pair(tmp_path)
    ann = DWPose(search_dirs=[tmp_path], device="cpu")
    frames = torch.from_numpy(data.astronaut()[None]).float() / 255
    pose = ann.detect_frame((frames[0] * 255).byte().numpy())
    expected = expected_points()
    assert (
        pose.bodies.shape == (1, 18, 3)
        and pose.faces.shape == (1, 68, 3)
        and pose.hands.shape == (1, 2, 21, 3)
    )
    body = pose.bodies[0]
    np.testing.assert_allclose(body[0, :2], expected[0], atol=1e-3)  # nose
    np.testing.assert_allclose(body[2, :2], expected[6], atol=1e-3)  # OpenPose R shoulder = COCO 6
    np.testing.assert_allclose(body[5, :2], expected[5], atol=1e-3)
    np.testing.assert_allclose(body[1], [*(expected[5] + expected[6]) / 2, 1.0], atol=1e-3)  # neck
    assert body[[0, 1, 2, 5], 2].min() > 0.85 and np.delete(body[:, 2], [0, 1, 2, 5]).max() < 0.01
    out = ann(frames)
    assert out.shape == frames.shape
    x, y = (expected[0] * 512).astype(int)
    assert out[0, y - 1 : y + 2, x - 1 : x + 2, 2].max() > 0.8  # the nose joint, blue


def test_dwpose_missing_files_say_where_to_get_them(tmp_path):
    with pytest.raises(AnnotatorError, match=r"yolox_l.onnx.*models/annotators/.*yzd-v/DWPose"):
        DWPose(search_dirs=[tmp_path])
