"""Pixel plumbing for VCU builders: IMAGE/MASK tensors in, (C, T, H, W) in [-1, 1] out, and resizing."""

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from ..errors import VaceError


def to_video(images: Tensor, what: str = "video") -> Tensor:
    """(T, H, W, 3|4) or (H, W, 3|4) floats in 0..1 (ComfyUI IMAGE) -> (3, T, H, W) in [-1, 1].
    An alpha channel is composited onto white."""
    try:
        images = torch.as_tensor(images, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError):
        kind = type(images).__name__
        raise VaceError(f"{what} must be an image tensor (H, W, 3) with values 0..1, got {kind}") from None
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] not in (3, 4) or images.shape[0] == 0:
        raise VaceError(f"{what} must be images shaped (T, H, W, 3) or (H, W, 3) (RGBA allowed), "
                        f"got {tuple(images.shape)}")
    if images.shape[-1] == 4:
        rgb, alpha = images[..., :3], images[..., 3:]
        images = rgb * alpha + (1 - alpha)
    return rearrange(images.clamp(0, 1) * 2 - 1, "t h w c -> c t h w")


def to_images(video: Tensor) -> Tensor:
    """The inverse of to_video: (3, T, H, W) in [-1, 1] -> (T, H, W, 3) floats in 0..1 (ComfyUI IMAGE)."""
    return rearrange((video.float() + 1) / 2, "c t h w -> t h w c").clamp(0, 1)


def to_masks(masks: Tensor) -> Tensor:
    """(T, H, W) or (H, W) floats (ComfyUI MASK) -> (T, H, W) binarised at 0.5."""
    masks = torch.as_tensor(masks, dtype=torch.float32)
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3 or masks.shape[0] == 0:
        raise VaceError(f"masks must be shaped (T, H, W) or (H, W), got {tuple(masks.shape)}")
    return (masks > 0.5).float()


def _resize(video: Tensor, size: tuple[int, int], nearest: bool) -> Tensor:
    """(C, T, H, W) -> (C, T, h, w)."""
    if tuple(video.shape[-2:]) == tuple(size):
        return video
    if nearest:
        return F.interpolate(video, size=size, mode="nearest-exact")
    return F.interpolate(video, size=size, mode="bilinear", antialias=True, align_corners=False)


def resize_cover(video: Tensor, size: tuple[int, int], nearest: bool = False) -> Tensor:
    """Centre-crop to the target aspect ratio, then resize: (C, T, H, W) -> (C, T, *size)."""
    h, w = video.shape[-2:]
    th, tw = size
    scale = max(th / h, tw / w)
    ch, cw = min(h, round(th / scale)), min(w, round(tw / scale))
    top, left = (h - ch) // 2, (w - cw) // 2
    return _resize(video[..., top:top + ch, left:left + cw], size, nearest)


def letterbox(image: Tensor, size: tuple[int, int], fill: float = 1.0) -> Tensor:
    """Fit inside `size` keeping the aspect ratio, centred on a canvas of `fill` (1 = white):
    (3, 1, H, W) -> (3, 1, *size). This is how the official VACE code places references."""
    h, w = image.shape[-2:]
    scale = min(size[0] / h, size[1] / w)
    nh, nw = max(1, int(h * scale)), max(1, int(w * scale))
    canvas = torch.full((image.shape[0], image.shape[1], *size), fill)
    top, left = (size[0] - nh) // 2, (size[1] - nw) // 2
    canvas[..., top:top + nh, left:left + nw] = _resize(image, (nh, nw), nearest=False)
    return canvas
