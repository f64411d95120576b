"""VCUs for windows of a longer video: the frames at some positions of a VCU, and frames carried over
from what was already generated (kept: mask 0), the LVDM masked-prediction idea expressed as a VCU."""

from collections.abc import Sequence

import torch
from torch import Tensor

from ..errors import VaceError
from .unit import VCU


def select_frames(vcu: VCU, positions: Sequence[int]) -> VCU:
    """The VCU's frames and masks at `positions` (a window, or keyframes spread over the video); the
    references go to every window. -> a VCU of len(positions) frames (4n+1)."""
    if bad := [p for p in positions if not 0 <= p < vcu.length]:
        raise VaceError(f"frame positions {bad[:5]} are outside the {vcu.length}-frame VCU")
    index = torch.as_tensor(list(positions), dtype=torch.long)
    return VCU(vcu.frames[:, index], vcu.masks[index], list(vcu.references), vcu.kind)


def keep_frames(vcu: VCU, indices: Sequence[int], pixels: Tensor) -> VCU:
    """Replaces the frames at `indices` with `pixels` (3, len(indices), H, W) in [-1, 1] and marks them
    kept (mask 0): the model continues from them instead of generating them."""
    index = torch.as_tensor(list(indices), dtype=torch.long)
    if pixels.shape != (3, len(index), *vcu.size):
        raise VaceError(f"carried frames {tuple(pixels.shape)} must be (3, {len(index)}, {vcu.size[0]}, "
                        f"{vcu.size[1]})")
    frames, masks = vcu.frames.clone(), vcu.masks.clone()
    frames[:, index] = pixels.to(frames)
    masks[index] = 0
    return VCU(frames, masks, list(vcu.references), vcu.kind)
