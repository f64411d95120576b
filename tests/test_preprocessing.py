"""VCU preprocessing equals the official VACE code's (ali-vilab/VACE), written out here from its math:

- control frames and masks: `VaceVideoProcessor.resize_crop` (vace/models/utils/preprocessor.py) takes the
  decoded uint8 video (T, H, W, C), scales by s = max(ow/iw, oh/ih) to (round(s*ih), round(s*iw)) with
  `F.interpolate(mode='bicubic', antialias=True)`, centre-crops at x1 = (W' - ow) // 2, y1 = (H' - oh) // 2,
  then maps to [-1, 1] with /127.5 - 1; the mask video goes through the same path and its encoder
  binarises it with `torch.where(m > 0.5, 1, 0)` (wan_vace.py `vace_encode_frames`);
- reference images: `WanVace.prepare_source` scales by s = min(ch/rh, cw/rw) to (int(rh*s), int(rw*s)) with
  `F.interpolate(mode='bilinear', align_corners=False)` (no antialias) and pastes the result centred at
  top = (ch - nh) // 2, left = (cw - nw) // 2 on a white canvas (1 in [-1, 1]).
Photos from skimage.data (non-square), shrunk and enlarged.
"""

import pytest
import torch
import torch.nn.functional as F
from skimage import data

from vace_core.vcu import control, inpaint, text_to_video, with_references


def photo(name: str) -> torch.Tensor:
    """uint8 (H, W, 3)."""
    return torch.from_numpy(getattr(data, name)().copy())


def official_resize_crop(video_u8: torch.Tensor, oh: int, ow: int) -> torch.Tensor:
    """(T, H, W, C) uint8 (or floats 0..255) -> (C, T, oh, ow) in [-1, 1], as VaceVideoProcessor.resize_crop."""
    video = video_u8.permute(0, 3, 1, 2)
    ih, iw = video.shape[2:]
    if ih != oh or iw != ow:
        scale = max(ow / iw, oh / ih)
        video = F.interpolate(video, size=(round(scale * ih), round(scale * iw)), mode="bicubic", antialias=True)
        x1, y1 = (video.size(3) - ow) // 2, (video.size(2) - oh) // 2
        video = video[:, :, y1:y1 + oh, x1:x1 + ow]
    return video.transpose(0, 1).float().div_(127.5).sub_(1.0)


def official_letterbox(ref: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(3, 1, rh, rw) in [-1, 1] -> (3, 1, height, width), as WanVace.prepare_source."""
    canvas = torch.ones((3, 1, height, width))
    rh, rw = ref.shape[-2:]
    scale = min(height / rh, width / rw)
    nh, nw = int(rh * scale), int(rw * scale)
    resized = F.interpolate(ref.squeeze(1).unsqueeze(0), size=(nh, nw), mode="bilinear", align_corners=False)
    top, left = (height - nh) // 2, (width - nw) // 2
    canvas[:, :, top:top + nh, left:left + nw] = resized.squeeze(0).unsqueeze(1)
    return canvas


SIZES = {"shrunk": (96, 160), "enlarged": (480, 832), "other aspect": (256, 192)}


@pytest.mark.parametrize("name", ["coffee", "chelsea"])
@pytest.mark.parametrize("size", list(SIZES))
def test_control_frames_resize_as_official_resize_crop(name, size):
    h, w = SIZES[size]
    clip = torch.stack([photo(name), photo(name).flip(1)])  # 2 frames -> 1 (4n+1)
    ours = control(clip.float() / 255, h, w, length=1).frames
    # the formula on float pixels (the uint8 saturation is a clamp to [-1, 1])
    official = official_resize_crop(clip[:1].float(), h, w).clamp(-1, 1)
    assert ours.shape == official.shape == (3, 1, h, w)
    torch.testing.assert_close(ours, official, atol=1e-5, rtol=0)
    # and the official uint8 run itself: on average within one 8-bit level (2/255 in [-1, 1]); torch's uint8
    # bicubic works in fixed point, so single enlarged pixels near sharp edges differ by up to ~12 levels
    official_u8 = official_resize_crop(clip[:1], h, w)
    assert (ours - official_u8).abs().mean() < 2 / 255


@pytest.mark.parametrize("size", list(SIZES))
def test_masks_resize_as_official_then_binarise(size):
    h, w = SIZES[size]
    image = photo("coffee")
    mask_u8 = torch.zeros(image.shape[:2], dtype=torch.uint8)
    mask_u8[100:300, 150:420] = 255  # white = generate
    unit = inpaint(image[None].float() / 255, mask_u8[None].float() / 255, h, w, length=1)
    official = official_resize_crop(mask_u8[None, :, :, None].expand(-1, -1, -1, 3).contiguous(), h, w)
    official = torch.where(((official[:1] + 1) / 2).clamp(0, 1) > 0.5, 1.0, 0.0)[0]
    assert torch.equal(unit.masks, official)
    assert 0 < unit.masks.mean() < 1


@pytest.mark.parametrize("name", ["coffee", "chelsea"])
@pytest.mark.parametrize("size", list(SIZES))
def test_references_letterbox_as_official_prepare_source(name, size):
    h, w = SIZES[size]
    image = photo(name).float() / 255
    ours = with_references(text_to_video(1, h, w), image[None]).references[0]
    official = official_letterbox((image * 2 - 1).permute(2, 0, 1)[:, None], h, w)[:, 0]
    torch.testing.assert_close(ours, official, atol=1e-5, rtol=0)
    assert (ours == 1).any()  # the white canvas shows: the photo's aspect differs from the frame's
