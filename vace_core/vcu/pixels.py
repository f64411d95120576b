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


def resize_cover(video: Tensor, size: tuple[int, int]) -> Tensor:
    """The official VACE `resize_crop` (VaceVideoProcessor): scale by max(th/h, tw/w) to
    (round(scale*h), round(scale*w)) with antialiased bicubic, then centre-crop to `size`, clamped to [-1, 1]
    (the official uint8 pixels saturate bicubic overshoot there): (C, T, H, W) -> (C, T, *size)."""
    h, w = video.shape[-2:]
    th, tw = size
    if (h, w) == (th, tw):
        return video
    scale = max(th / h, tw / w)
    rh, rw = round(scale * h), round(scale * w)
    resized = F.interpolate(video, size=(rh, rw), mode="bicubic", antialias=True, align_corners=False)
    top, left = (rh - th) // 2, (rw - tw) // 2
    return resized[..., top:top + th, left:left + tw].clamp(-1, 1)


def resize_masks(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """(T, H, W) binary masks -> (T, *size), resized as the official code resizes its mask video
    (`resize_cover`), then binarised at 0.5 as its encoder does."""
    return (resize_cover(masks[None], size)[0] > 0.5).float()


def letterbox(image: Tensor, size: tuple[int, int], fill: float = 1.0) -> Tensor:
    """The official `prepare_source` for references: scale = min(th/h, tw/w), resize to
    (int(h*scale), int(w*scale)) with bilinear (align_corners=False, no antialias), centred on a canvas
    of `fill` (1 = white): (3, 1, H, W) -> (3, 1, *size)."""
    h, w = image.shape[-2:]
    if (h, w) == tuple(size):
        return image
    scale = min(size[0] / h, size[1] / w)
    nh, nw = max(1, int(h * scale)), max(1, int(w * scale))
    canvas = torch.full((image.shape[0], image.shape[1], *size), fill)
    top, left = (size[0] - nh) // 2, (size[1] - nw) // 2
    canvas[..., top:top + nh, left:left + nw] = F.interpolate(image, size=(nh, nw), mode="bilinear",
                                                              align_corners=False)
    return canvas
