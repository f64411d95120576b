"""Small preview strips of what the model gets: a VCU's frames with its masks overlaid (generate and keep in
two colours) and its references, as one image per strip (frames side by side) that a viewer scrubs through.

Plain numpy/PIL on (T, H, W, 3) floats in 0..1 (ComfyUI's IMAGE layout), so the nodes, the frontend widget
and the example thumbnails share it.
"""

import numpy as np
import torch
from einops import rearrange
from PIL import Image

from .vcu import VCU, to_images

HEIGHT = 96  # px per preview frame: small enough to send 81 frames in one image
MAX_FRAMES = 81  # longer videos are sampled evenly
GENERATE = np.array([255, 48, 160], np.float32)  # magenta: the model generates these pixels (mask 1)
KEEP = np.array([40, 200, 120], np.float32)  # green: kept as given (mask 0)
GENERATE_ALPHA, KEEP_ALPHA = 0.55, 0.2


def picks(count: int, limit: int = MAX_FRAMES) -> list[int]:
    """At most `limit` frame indices spread evenly over `count` frames (first and last included)."""
    if count <= limit:
        return list(range(count))
    return sorted({round(i * (count - 1) / (limit - 1)) for i in range(limit)})


def thumbnails(frames: torch.Tensor, height: int = HEIGHT) -> np.ndarray:
    """(T, H, W, C) floats 0..1 -> (T, height, w, C) floats, w keeping the aspect ratio."""
    t, h, w, c = frames.shape
    size = (height, max(1, round(w * height / h)))
    x = rearrange(frames.float(), "t h w c -> t c h w")
    x = torch.nn.functional.interpolate(x, size=size, mode="area") if h > height else \
        torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return rearrange(x, "t c h w -> t h w c").clamp(0, 1).numpy()


def overlay(frames: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Frames (T, h, w, 3) 0..1 with masks (T, h, w) 0..1 tinted: GENERATE where 1, KEEP where 0 -> uint8."""
    m = masks[..., None]
    pixels = frames * 255
    tint = m * (GENERATE_ALPHA * GENERATE + (1 - GENERATE_ALPHA) * pixels)
    tint += (1 - m) * (KEEP_ALPHA * KEEP + (1 - KEEP_ALPHA) * pixels)
    return tint.round().clip(0, 255).astype(np.uint8)


def strip(frames: np.ndarray) -> Image.Image:
    """(T, h, w, 3) uint8 -> one image with the frames side by side (frame i at x = i * w)."""
    return Image.fromarray(rearrange(frames, "t h w c -> h (t w) c"))


def to_uint8(frames: np.ndarray) -> np.ndarray:
    return (frames * 255).round().clip(0, 255).astype(np.uint8)


def vcu_strips(vcu: VCU, height: int = HEIGHT) -> dict[str, tuple[Image.Image, list[int]]]:
    """{"frames": (the VCU's frames with masks overlaid, frame indices), "references": (...)} ("references"
    only when the VCU has some)."""
    index = picks(vcu.length)
    frames = thumbnails(to_images(vcu.frames[:, index]), height)
    masks = thumbnails(vcu.masks[index].float()[..., None], height)[..., 0]
    out = {"frames": (strip(overlay(frames, (masks > 0.5).astype(np.float32))), index)}
    if vcu.references:
        refs = thumbnails(to_images(torch.stack(vcu.references, dim=1)), height)
        out["references"] = (strip(to_uint8(refs)), list(range(len(vcu.references))))
    return out


def mask_strips(frames: torch.Tensor, masks: torch.Tensor, height: int = HEIGHT) -> dict:
    """A video (T, H, W, 3) and its masks (T, H, W): {"frames": plain frames, "overlay": masks overlaid}."""
    index = picks(frames.shape[0])
    small = thumbnails(frames[index], height)
    small_masks = thumbnails(masks[index].float()[..., None], height)[..., 0]
    return {"frames": (strip(to_uint8(small)), index),
            "overlay": (strip(overlay(small, (small_masks > 0.5).astype(np.float32))), index)}


def video_strip(frames: torch.Tensor, height: int = HEIGHT) -> dict:
    """A video (T, H, W, 3): {"frames": its frames}."""
    index = picks(frames.shape[0])
    return {"frames": (strip(to_uint8(thumbnails(frames[index], height))), index)}
