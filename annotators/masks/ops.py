"""Mask operations VACE applies before compositing (its mask augmentations without the randomness):
expand, convex hull, bounding box, invert, feather. MASK (T, H, W) in 0..1 in and out."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from ..base import AnnotatorError, check_masks

THRESHOLD = 0.5  # a pixel belongs to the mask region at or above this


def _per_frame(masks: torch.Tensor, fn) -> torch.Tensor:
    frames = [fn(m) for m in check_masks(masks).detach().float().cpu().numpy()]
    return torch.from_numpy(np.stack(frames)).float().to(masks.device)


def invert(masks: torch.Tensor) -> torch.Tensor:
    return 1 - check_masks(masks)


def expand(masks: torch.Tensor, pixels: int) -> torch.Tensor:
    """Grow the mask by `pixels` with a round kernel (shrink it when negative); soft edges stay soft."""
    if pixels == 0:
        return check_masks(masks).clone()
    size = 2 * abs(pixels) + 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    op = cv2.dilate if pixels > 0 else cv2.erode
    return _per_frame(masks, lambda m: op(m, kernel, borderType=cv2.BORDER_REPLICATE))


def _hull(mask: np.ndarray) -> np.ndarray:
    region = (mask >= THRESHOLD).astype(np.uint8)
    out = np.zeros_like(mask)
    contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if contours:  # one hull around every region, as VACE merges all contours
        cv2.fillPoly(out, [cv2.convexHull(np.concatenate(contours))], 1.0)
    return out


def hull(masks: torch.Tensor) -> torch.Tensor:
    """The convex hull of each frame's mask regions, filled."""
    return _per_frame(masks, _hull)


def bbox(masks: torch.Tensor, pad: int = 0) -> torch.Tensor:
    """Each frame's mask replaced by its bounding box (grown by `pad` pixels, clipped to the frame)."""
    masks = check_masks(masks)
    region = masks >= THRESHOLD
    t, h, w = masks.shape
    rows, cols = region.any(2), region.any(1)  # (T, H), (T, W)
    ys, xs = torch.arange(h, device=masks.device), torch.arange(w, device=masks.device)
    big = torch.iinfo(torch.long).max

    def span(hit, idx, size):
        lo = torch.where(hit, idx, big).amin(1) - pad  # (T,)
        hi = torch.where(hit, idx, -1).amax(1) + pad
        return (idx >= lo[:, None]) & (idx <= hi[:, None])  # (T, size): empty frames give no span

    inside = span(rows, ys, h)[:, :, None] & span(cols, xs, w)[:, None, :]
    return inside.float()


def feather(masks: torch.Tensor, radius: float) -> torch.Tensor:
    """Soften the mask edge with a Gaussian of standard deviation `radius / 2` pixels (about `radius` wide)."""
    if radius < 0:
        raise AnnotatorError(f"feather radius must be >= 0, got {radius}")
    if radius == 0:
        return check_masks(masks).clone()
    return _per_frame(
        masks, lambda m: cv2.GaussianBlur(m, (0, 0), radius / 2, borderType=cv2.BORDER_REPLICATE)
    )
