"""Optical flow: DIS on a clip panned over a real photo recovers the known motion; the colour wheel from known
flows; VACE's first-frame handling; RAFT's missing-torchvision path."""

import importlib.util

import cv2
import numpy as np
import pytest
import torch
from skimage import data

from annotators.base import AnnotatorError
from annotators.flow import DISFlow, RAFTFlow, vace_flow_frames
from annotators.flow.colorwheel import color_wheel, flow_to_color

PAN = (3, -2)  # pixels per frame (x, y)
DIS_MAX_MEDIAN_ERROR = 0.15  # px: the median end-point error of DIS on this clip (measured 0.02)


def panned_clip(frames=4, size=(120, 160)) -> torch.Tensor:
    """Crops of chelsea moving by PAN per frame: the scene content moves by -PAN across the crop window."""
    img = data.chelsea()  # 300 x 451
    h, w = size
    crops = [
        img[40 + i * PAN[1] + 20 : 40 + i * PAN[1] + 20 + h, 60 + i * PAN[0] : 60 + i * PAN[0] + w]
        for i in range(frames)
    ]
    return torch.from_numpy(np.stack(crops)).float() / 255


def test_dis_recovers_pan():
    clip = panned_clip()
    flows = DISFlow().flows(clip)
    assert flows.shape == (3, 120, 160, 2)
    inner = flows[:, 16:-16, 16:-16]  # away from borders where content leaves the frame
    error = (inner - torch.tensor([-PAN[0], -PAN[1]], dtype=torch.float32)).norm(dim=-1)
    assert error.median() < DIS_MAX_MEDIAN_ERROR
    assert (error < 0.5).float().mean() > 0.9


def test_flow_video_repeats_first_flow_like_vace():
    clip = panned_clip()
    out = DISFlow()(clip)
    assert out.shape == clip.shape
    assert torch.equal(out[0], out[1])
    assert DISFlow()(clip[:1]).eq(1).all()  # one frame: no motion, white


def test_color_wheel_known_values():
    wheel = color_wheel()
    assert wheel.shape == (55, 3)
    assert wheel[0].tolist() == [255, 0, 0] and wheel[15].tolist() == [255, 255, 0]
    assert wheel[21].tolist() == [0, 255, 0] and wheel[25].tolist() == [0, 255, 255]
    flows = torch.zeros(1, 2, 4, 2)
    flows[0, 0, 0] = torch.tensor([-5.0, 0.0])  # leftwards, the fastest: full saturation at wheel position 27
    flows[0, 0, 1] = torch.tensor([5.0, 0.0])  # rightwards
    flows[0, 1, 0] = torch.tensor([0.0, 2.5])  # downwards at half speed: half saturated
    color = (flow_to_color(flows)[0] * 255).round()
    assert color[1, 1].tolist() == [255, 255, 255]  # no motion is white
    assert color[0, 0].tolist() == [0, 209, 255]  # wheel[27] = (0, 255 - floor(255*2/11), 255)
    assert color[0, 1].tolist() == [255, 0, 0]  # atan2(-0.0, -u) = -pi: wheel[0], pure red
    k = (np.arctan2(-1, 0) / np.pi + 1) / 2 * 54  # downwards: position 40.5 on the wheel
    ref = ((1 - (k % 1)) * wheel[int(k)] + (k % 1) * wheel[int(k) + 1]).numpy() / 255
    expected = np.floor(255 * (1 - 0.5 * (1 - ref)))
    assert np.abs(color[1, 0].numpy() - expected).max() <= 1


def test_flow_colors_of_pan_match_direction():
    out = vace_flow_frames(DISFlow().flows(panned_clip()))
    expected = flow_to_color(torch.tensor([-PAN[0], -PAN[1]], dtype=torch.float32).expand(1, 4, 4, 2))[
        0, 0, 0
    ]
    hue_hits = (out[:, 20:-20, 20:-20] - expected).abs().amax(-1) < 0.1
    assert hue_hits.float().mean() > 0.8


@pytest.mark.skipif(
    importlib.util.find_spec("torchvision") is not None, reason="tests the path without torchvision"
)
def test_raft_without_torchvision_says_what_to_install():
    with pytest.raises(AnnotatorError, match="torchvision.*pip install"):
        RAFTFlow()


def test_dis_on_real_photo_pair_is_fast_enough():
    clip = torch.from_numpy(cv2.resize(data.astronaut(), (832, 480))[None].repeat(2, 0)).float() / 255
    assert DISFlow().flows(clip).abs().max() < 0.5  # identical frames: no motion
