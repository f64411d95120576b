"""Colour anchoring: match frames' colour statistics to a FIXED anchor (the first window of a long video,
or a reference image), so colour drift cannot accumulate window after window.

- "reinhard" (default): per frame, each LAB channel is shifted and scaled so its mean and standard deviation
  equal the anchor's (Reinhard et al. 2001, "Color transfer between images"), in CIELAB (OpenCV's
  conversion: L 0..100, a/b about -127..127).
- "mkl": per frame, the Monge-Kantorovich linear map between the frame's and the anchor's RGB colour
  distributions (mean + 3x3 covariance; Pitie and Kokaram 2007, "The linear Monge-Kantorovitch linear colour
  mapping"): T = S^-1/2 (S^1/2 R S^1/2)^1/2 S^-1/2, the map with the anchor's covariance R that moves colours
  least. It follows cross-channel casts (a tint that is not per channel) better than Reinhard. It is KJNodes'
  ColorMatch `mkl` (the `color-matcher` package), written here with numpy: that package is GPL-3.0 and
  installs a top-level `tests` package into site-packages, which shadows this project's tests.

Images are ComfyUI IMAGE tensors (T, H, W, 3) in 0..1; masks (T, H, W) in {0, 1} restrict statistics and
changes to the generated (mask 1) area.
"""

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor

from .errors import VaceError

METHODS = ("reinhard", "mkl")
METHOD_HELP = ("Colour matching, per frame: reinhard matches LAB mean/std; mkl matches the full RGB colour "
               "covariance (KJNodes' mkl) and removes tints that mix channels better.")
EPS = 1e-6
MIN_VARIANCE = 1e-8


def to_lab(images: np.ndarray) -> np.ndarray:
    """(..., H, W, 3) RGB float 0..1 -> CIELAB (L 0..100)."""
    return np.stack([cv2.cvtColor(np.ascontiguousarray(f, np.float32), cv2.COLOR_RGB2LAB)
                     for f in images.reshape(-1, *images.shape[-3:])]).reshape(images.shape)


def from_lab(lab: np.ndarray) -> np.ndarray:
    """The inverse of to_lab, clipped to 0..1."""
    rgb = np.stack([cv2.cvtColor(np.ascontiguousarray(f, np.float32), cv2.COLOR_LAB2RGB)
                    for f in lab.reshape(-1, *lab.shape[-3:])]).reshape(lab.shape)
    return rgb.clip(0, 1)


def _pixels(frame: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """(H, W, 3) -> (k, 3): the pixels the statistics are taken over."""
    return frame.reshape(-1, 3) if mask is None else frame[mask > 0.5]


@dataclass(frozen=True)
class ColourAnchor:
    """The anchor's colour statistics: LAB mean/std (Reinhard), RGB mean/covariance (MKL)."""

    lab_mean: np.ndarray  # (3,)
    lab_std: np.ndarray  # (3,)
    rgb_mean: np.ndarray  # (3,)
    rgb_cov: np.ndarray  # (3, 3)

    @classmethod
    def from_images(cls, images: Tensor, masks: Tensor | None = None) -> "ColourAnchor":
        """Statistics over every pixel of `images` (T, H, W, 3) (within masks when given)."""
        rgb = _check_images(images)
        chosen = np.concatenate([_pixels(f, None if masks is None else m)
                                 for f, m in zip(rgb, _mask_list(masks, len(rgb), rgb.shape[1:3]), strict=True)])
        if len(chosen) < 2:
            raise VaceError("the colour anchor has no pixels (its mask is empty): give an anchor image or a mask "
                            "with a generated (white) area")
        lab = to_lab(chosen[:, None])[:, 0]
        return cls(lab.mean(0), lab.std(0), chosen.mean(0, dtype=np.float64), np.cov(chosen.T.astype(np.float64)))


def _check_images(images: Tensor) -> np.ndarray:
    if images.ndim != 4 or images.shape[-1] != 3 or not len(images):
        raise VaceError(f"colour matching needs images (T, H, W, 3), got {tuple(images.shape)}")
    return images.detach().float().cpu().numpy()


def _mask_list(masks: Tensor | None, count: int, size: tuple[int, int]) -> list:
    """(T or 1, H, W) masks -> one (H, W) array per frame, at the images' size (H, W)."""
    if masks is None:
        return [None] * count
    masks = masks.detach().float().cpu().numpy()
    masks = masks[None] if masks.ndim == 2 else masks
    if masks.ndim != 3 or masks.shape[1:] != tuple(size):
        raise VaceError(f"the masks are {'x'.join(map(str, masks.shape[1:][::-1]))} but the images "
                        f"{size[1]}x{size[0]}: give masks at the images' size (e.g. resize them with the images)")
    if masks.shape[0] == 1:
        masks = np.repeat(masks, count, axis=0)
    if masks.shape[0] != count:
        raise VaceError(f"{masks.shape[0]} masks for {count} frames: give one mask, or one per frame")
    return list(masks)


def reinhard(frame: np.ndarray, anchor: ColourAnchor, mask: np.ndarray | None) -> np.ndarray:
    """One frame (H, W, 3) -> its LAB channels shifted/scaled to the anchor's mean and std."""
    lab = to_lab(frame)
    chosen = _pixels(lab, mask)
    scale = anchor.lab_std / np.maximum(chosen.std(0), EPS)
    return from_lab((lab - chosen.mean(0)) * scale + anchor.lab_mean)


def _sqrt_psd(matrix: np.ndarray, inverse: bool = False) -> np.ndarray:
    """The symmetric square root (or inverse square root) of a covariance matrix. The inverse floors the
    variances at 1e-8 (a hundredth of one 8-bit level squared), so a flat frame is not blown up."""
    values, vectors = np.linalg.eigh(matrix)
    values = np.maximum(values, MIN_VARIANCE) ** -0.5 if inverse else np.maximum(values, 0) ** 0.5
    return (vectors * values) @ vectors.T


def mkl_map(cov: np.ndarray, target_cov: np.ndarray) -> np.ndarray:
    """The Monge-Kantorovich linear map T (3, 3), symmetric: T cov T = target_cov."""
    root, inverse_root = _sqrt_psd(cov), _sqrt_psd(cov, inverse=True)
    return inverse_root @ _sqrt_psd(root @ target_cov @ root) @ inverse_root


def mkl(frame: np.ndarray, anchor: ColourAnchor, mask: np.ndarray | None) -> np.ndarray:
    """One frame (H, W, 3) -> its RGB colour distribution mapped onto the anchor's (mean and covariance)."""
    chosen = _pixels(frame, mask).astype(np.float64)
    mean = chosen.mean(0)
    mapped = (chosen - mean) @ mkl_map(np.cov(chosen.T), anchor.rgb_cov) + anchor.rgb_mean
    out = frame.copy()
    if mask is None:
        out = mapped.reshape(frame.shape).astype(frame.dtype)
    else:
        out[mask > 0.5] = mapped
    return out.clip(0, 1)


MATCHERS = {"reinhard": reinhard, "mkl": mkl}


def match_colours(images: Tensor, anchor: ColourAnchor, method: str = "reinhard", strength: float = 1.0,
                  masks: Tensor | None = None) -> Tensor:
    """Each frame of `images` (T, H, W, 3) matched to the anchor, blended with the original by `strength`
    (0 = unchanged, 1 = fully matched); with `masks`, statistics and changes stay in the mask-1 area."""
    if method not in MATCHERS:
        raise VaceError(f"unknown colour matching method {method!r}: choose one of {', '.join(METHODS)}")
    if not 0 <= strength <= 1:
        raise VaceError(f"colour matching strength must be from 0 (off) to 1 (full), got {strength}")
    rgb = _check_images(images)
    if strength == 0:
        return images
    out = []
    for frame, mask in zip(rgb, _mask_list(masks, len(rgb), rgb.shape[1:3]), strict=True):
        if mask is not None and (mask > 0.5).sum() < 2:
            out.append(frame)  # nothing generated in this frame: nothing can drift
            continue
        matched = MATCHERS[method](frame, anchor, mask)
        changed = frame + strength * (matched - frame)
        out.append(changed if mask is None else np.where(mask[..., None] > 0.5, changed, frame))
    return torch.from_numpy(np.stack(out)).to(images)


def delta_e(a: Tensor, b: Tensor) -> float:
    """Mean CIE76 colour difference between two image batches (T, H, W, 3): about 2.3 is just noticeable."""
    return float(np.linalg.norm(to_lab(_check_images(a)) - to_lab(_check_images(b)), axis=-1).mean())
