"""The Video Condition Unit V = [T; F; M]: context frames, masks and reference images (text travels
separately, as conditioning). Pixels are in [-1, 1], where 0 is the "empty" gray; masks are 0/1 with
1 = generate (the opposite of Wan I2V's convention)."""

import logging
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..errors import VaceError
from ..vae.model import SPATIAL_STRIDE, TEMPORAL_STRIDE, check_frame_count
from ..vae.tiling import free_memory

log = logging.getLogger("vace")

SPATIAL_MULTIPLE = 16  # VAE stride 8 x patch 2
KINDS = ("control", "repaint", "extension")  # how a VCU composes with another (VACE's composition rules)


@dataclass
class VCU:
    frames: Tensor  # (3, T, H, W) in [-1, 1]; 0 (gray) where nothing is given
    masks: Tensor  # (T, H, W) in {0, 1}; 1 = the model generates this pixel
    references: list[Tensor] = field(default_factory=list)  # each (3, H, W) in [-1, 1], fitted to the frame size
    kind: str = "control"

    def __post_init__(self):
        if self.frames.ndim != 4 or self.frames.shape[0] != 3:
            raise VaceError(f"VCU frames must be (3, T, H, W), got {tuple(self.frames.shape)}")
        if self.masks.shape != self.frames.shape[1:]:
            raise VaceError(f"VCU masks {tuple(self.masks.shape)} must match the frames' (T, H, W) "
                            f"{tuple(self.frames.shape[1:])}: give one mask per frame, at the frames' size.")
        for i, ref in enumerate(self.references):
            if ref.shape != (3, *self.size):
                raise VaceError(f"reference {i} is {tuple(ref.shape)}; fit it to (3, {self.size[0]}, {self.size[1]}) "
                                "with vcu.with_references")
        if self.kind not in KINDS:
            raise VaceError(f"VCU kind {self.kind!r} is not one of {KINDS}")
        check_size(*self.size)
        check_frame_count(self.length)

    @property
    def length(self) -> int:
        return self.frames.shape[1]

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.frames.shape[2:])

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(T_lat incl. references, H/8, W/8) of the latent this VCU conditions."""
        return (len(self.references) + (self.length - 1) // TEMPORAL_STRIDE + 1,
                self.size[0] // SPATIAL_STRIDE, self.size[1] // SPATIAL_STRIDE)


def check_size(height: int, width: int):
    if height % SPATIAL_MULTIPLE or width % SPATIAL_MULTIPLE or height <= 0 or width <= 0:
        raise VaceError(f"frame size {height}x{width} must be positive multiples of {SPATIAL_MULTIPLE}")


# the largest frames VACE was trained at: 1280x720 (14B; the 1.3B: 832x480). Beyond four times that area the
# model has never seen anything near it, and the memory and time grow with the square of the tokens
TRAINED_PIXELS = 1280 * 720
MAX_PIXELS = 4 * TRAINED_PIXELS


def check_trained_size(height: int, width: int, what: str) -> None:
    """Refuses a frame size far beyond what VACE was trained at (`what` names it for the user)."""
    if height * width > MAX_PIXELS:
        raise VaceError(f"{what} makes {width}x{height} frames, {height * width / TRAINED_PIXELS:.0f}x the pixels of "
                        f"the largest size VACE was trained at (1280x720 for the 14B, 832x480 for the 1.3B): it has "
                        f"never seen frames near that size, and attention memory grows with the square of the pixels. "
                        f"Stay within {MAX_PIXELS / 1e6:.1f} megapixels (e.g. 2560x1440), ideally 1280x720 or "
                        "832x480.")


def fit_size(height: int, width: int) -> tuple[int, int]:
    """Rounds a size down to multiples of 16 (at least 16), saying so when it changes."""
    fitted = tuple(max(SPATIAL_MULTIPLE, v // SPATIAL_MULTIPLE * SPATIAL_MULTIPLE) for v in (height, width))
    if fitted != (height, width):
        log.warning("VACE: size %dx%d is not a multiple of 16; using %dx%d", height, width, *fitted)
    return fitted


def fit_length(length: int) -> int:
    """Rounds a frame count down to 4n+1 (never below 1), saying so when it changes."""
    if length < 1:
        raise VaceError(f"a VCU needs at least 1 frame, got {length}")
    fitted = (length - 1) // TEMPORAL_STRIDE * TEMPORAL_STRIDE + 1
    if fitted != length:
        log.warning("VACE: %d frames is not 4n+1; using the first %d", length, fitted)
    return fitted


# bytes per frame pixel while a VCU is built: 3 frame + 1 mask channels in float32, about 3 such sets alive at
# once (the input as [-1, 1] video, the resized frames, the masked frames)
BUILD_BYTES_PER_PIXEL = 4 * 4 * 3


def check_memory(length: int, height: int, width: int) -> None:
    """Refuses, before allocating, a VCU whose pixels cannot fit in the free RAM."""
    needed, free = BUILD_BYTES_PER_PIXEL * length * height * width, free_memory(torch.device("cpu"))
    if needed > free:
        raise VaceError(f"a VCU of {length} frames at {height}x{width} needs about {needed / 2**30:.1f} GiB of RAM, "
                        f"but {free / 2**30:.1f} GiB are free. Use fewer frames (or long-video windows) or a "
                        "smaller size (VACE was trained at 832x480 and 1280x720, 81 frames).")
