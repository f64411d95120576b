"""Annotator interface, weight resolution, gray, scribble, layout and mask operations (all offline)."""

import cv2
import numpy as np
import pytest
import torch
from skimage import data

from annotators.base import AnnotatorError, check_frames
from annotators.gray import Gray
from annotators.layout import mask_tracks, moving_box
from annotators.masks import bbox, expand, feather, hull, invert
from annotators.scribble import Canny, InformativeDrawings, XDoG
from annotators.scribble.lineart import LineartGenerator
from annotators.weights import resolve_weight


def photo(name="astronaut", size=(96, 128)) -> torch.Tensor:
    img = cv2.resize(getattr(data, name)(), size[::-1], interpolation=cv2.INTER_AREA)
    return torch.from_numpy(img)[None].float() / 255  # (1, H, W, 3)


# ---------- weights ----------
@pytest.mark.parametrize(
    "relative",
    [
        "yolox_l.onnx",
        "pose/yolox_l.onnx",
        "VACE-Annotators/pose/yolox_l.onnx",
        "ckpts/yzd-v/DWPose/yolox_l.onnx",
    ],
)
def test_resolve_weight_finds_every_layout(tmp_path, relative):
    path = tmp_path / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    assert resolve_weight("yolox_l.onnx", "annotators", [tmp_path / "missing", tmp_path]) == path


def test_missing_weight_names_file_folder_and_source(tmp_path):
    with pytest.raises(AnnotatorError) as e:
        resolve_weight("dw-ll_ucoco_384.onnx", "annotators", [tmp_path])
    msg = str(e.value)
    assert "'dw-ll_ucoco_384.onnx'" in msg and "models/annotators/" in msg and "yzd-v/DWPose" in msg
    assert str(tmp_path) in msg
    with pytest.raises(AnnotatorError, match=r"models/sam2/.*facebook/sam2.1-hiera-large"):
        resolve_weight("sam2.1_hiera_large.pt", None, [])


def test_frames_must_be_image_tensors():
    with pytest.raises(AnnotatorError, match=r"\(T, H, W, 3\)"):
        check_frames(torch.zeros(2, 3, 8, 8))
    with pytest.raises(AnnotatorError, match="empty"):
        check_frames(torch.zeros(0, 8, 8, 3))


# ---------- gray ----------
def test_gray_matches_vace_opencv_conversion():
    frames = photo("coffee")
    ours = Gray()(frames)
    # VACE ran cv2's BGR2GRAY on RGB frames
    ref = cv2.cvtColor((frames[0].numpy() * 255).astype(np.float32), cv2.COLOR_BGR2GRAY) / 255
    assert ours.shape == frames.shape
    assert torch.equal(ours[..., 0], ours[..., 2])
    assert (ours[0, ..., 0] - torch.from_numpy(ref)).abs().max() < 1e-5


# ---------- scribble ----------
@pytest.mark.parametrize("annotator", [Canny(), XDoG()], ids=["canny", "xdog"])
def test_scribble_draws_dark_lines_on_edges(annotator):
    frames = photo("astronaut", (192, 192))
    lines = annotator(frames)[0, ..., 0].numpy()
    assert lines.shape == (192, 192)
    dark = lines < 0.5
    assert 0.01 < dark.mean() < 0.4  # mostly white paper
    gray = cv2.cvtColor((frames[0].numpy() * 255).astype(np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float32)
    gradient = np.hypot(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))
    near_edge = cv2.dilate(gradient, np.ones((5, 5), np.uint8))  # XDoG strokes sit beside the gradient peak
    assert near_edge[dark].mean() > 1.5 * near_edge[~dark].mean()  # lines lie where the photo has edges


def test_informative_drawings_loads_real_layout(tmp_path):
    torch.manual_seed(0)
    net = LineartGenerator(n_residual_blocks=3)
    torch.save(net.state_dict(), tmp_path / "netG_A_latest.pth")
    assert any(k.startswith("model2.2.conv_block.5") for k in net.state_dict())  # the published key layout
    ann = InformativeDrawings(search_dirs=[tmp_path], device="cpu")
    frames = photo(size=(30, 42))  # not a multiple of 4: padded inside and cropped back
    out = ann(frames)
    x = frames.permute(0, 3, 1, 2)
    ref = net.eval()(torch.nn.functional.pad(x, (0, 2, 0, 2), mode="reflect"))[:, 0, :30, :42]
    assert out.shape == (1, 30, 42, 3)
    assert (out[..., 0] - ref).abs().max() < 1e-6


# ---------- layout ----------
def test_moving_box_goes_from_start_to_end():
    frames = moving_box((10, 10, 30, 20), (50, 40, 90, 60), num_frames=5, height=64, width=96)
    assert frames.shape == (5, 64, 96, 3)
    first, last, mid = frames[0, ..., 0], frames[-1, ..., 0], frames[2, ..., 0]
    assert first[10, 20] == 0 and first[15, 10] == 0 and first[15, 20] == 1  # outline, white inside
    assert last[40, 70] == 0 and last[60, 70] == 0 and last[50, 90] == 0
    assert mid[25, 45] == 0  # halfway: box (30, 25, 60, 40)
    assert frames.mean() > 0.9


def test_mask_tracks_outline_masks_on_white():
    masks = torch.zeros(2, 64, 64)
    masks[0, 20:40, 10:30] = 1
    masks[1, 20:40, 30:50] = 1
    out = mask_tracks(masks)[..., 0]
    assert out[0, 20, 20] == 0 and out[0, 30, 20] == 1 and out[0, 5, 5] == 1
    assert out[1, 30, 30] == 0 and out[1, 30, 10] == 1


# ---------- mask operations ----------
def square_mask():
    m = torch.zeros(1, 64, 64)
    m[0, 20:30, 20:30] = 1
    return m


def test_expand_and_shrink():
    grown = expand(square_mask(), 5)
    ys, xs = torch.nonzero(grown[0] > 0.5, as_tuple=True)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (15, 34, 15, 34)
    assert grown[0, 15, 15] == 0  # round kernel: corners stay round
    shrunk = expand(square_mask(), -2)
    assert shrunk.sum() == 36


def test_hull_bbox_invert_feather():
    m = torch.zeros(1, 64, 64)
    m[0, 10:14, 10:14] = 1
    m[0, 40:44, 40:44] = 1
    h = hull(m)
    assert h[0, 27, 27] == 1 and h[0, 10, 43] == 0  # the diagonal between the squares, not the far corner
    b = bbox(m)
    assert b[0, 10:44, 10:44].min() == 1 and b.sum() == 34 * 34
    assert bbox(torch.zeros(1, 8, 8)).sum() == 0
    assert torch.equal(invert(m), 1 - m)
    f = feather(square_mask(), 4)
    assert abs(f.sum() - 100) < 1e-3  # blur keeps the area
    assert 0 < f[0, 20, 25] < 1 and f[0, 25, 25] > 0.9
