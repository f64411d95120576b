"""Gray control video: luma repeated on three channels."""

import torch

from .base import Annotator

# VACE converted RGB frames with OpenCV's BGR2GRAY, so its training videos weight red and blue swapped:
# 0.114 R + 0.587 G + 0.299 B. Kept here so the control video matches what the model saw.
VACE_GRAY_WEIGHTS = (0.114, 0.587, 0.299)


class Gray(Annotator):
    def __init__(self, weights=VACE_GRAY_WEIGHTS):
        self.weights = torch.tensor(weights)

    def annotate(self, frames: torch.Tensor) -> torch.Tensor:
        gray = frames.float() @ self.weights.to(frames.device)  # (T, H, W)
        return gray[..., None].expand(*gray.shape, 3)
