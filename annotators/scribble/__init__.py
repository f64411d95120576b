"""Scribble control video: line drawings. Canny and XDoG work offline; VACE used the informative-drawings
anime_style line model (netG_A_latest.pth), loaded from the user's weight file.

Every backend draws dark lines on white, as VACE's scribble videos look (invert=False gives white on black).
"""

import cv2
import numpy as np
import torch

from ..base import FrameAnnotator, TorchAnnotator, load_weights, pick_device
from ..weights import resolve_weight
from .lineart import LineartGenerator


class Canny(FrameAnnotator):
    def __init__(self, low: int = 100, high: int = 200, invert: bool = True):
        self.low, self.high, self.invert = low, high, invert

    def annotate_frame(self, frame: np.ndarray) -> np.ndarray:
        edges = cv2.Canny(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), self.low, self.high)
        return np.repeat((255 - edges if self.invert else edges)[..., None], 3, axis=2)


class XDoG(FrameAnnotator):
    """Extended difference of Gaussians (Winnemoeller et al. 2012): a thresholded sharpened DoG gives
    pencil-like strokes that follow edges at the scale of `sigma`."""

    def __init__(
        self,
        sigma: float = 0.8,
        k: float = 1.6,
        p: float = 20.0,
        epsilon: float = 0.0,
        phi: float = 10.0,
        invert: bool = True,
    ):
        self.sigma, self.k, self.p, self.epsilon, self.phi, self.invert = sigma, k, p, epsilon, phi, invert

    def annotate_frame(self, frame: np.ndarray) -> np.ndarray:
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
        g1 = cv2.GaussianBlur(gray, (0, 0), self.sigma)
        g2 = cv2.GaussianBlur(gray, (0, 0), self.sigma * self.k)
        sharpened = (1 + self.p) * g1 - self.p * g2
        # soft threshold: white above epsilon, a tanh ramp into black below it
        paper = np.where(sharpened >= self.epsilon, 1.0, 1 + np.tanh(self.phi * (sharpened - self.epsilon)))
        lines = np.clip(paper, 0, 1) if self.invert else 1 - np.clip(paper, 0, 1)
        return np.repeat((lines * 255).round().astype(np.uint8)[..., None], 3, axis=2)


class InformativeDrawings(TorchAnnotator):
    """VACE's scribble model: informative-drawings' anime_style generator (3 residual blocks, sigmoid output),
    input RGB in 0..1, output the line image."""

    def __init__(
        self,
        weight: str = "netG_A_latest.pth",
        search_dirs=(),
        device=None,
        batch_size: int = 4,
        invert: bool = False,
    ):
        self.device = pick_device(device)
        path = resolve_weight(weight, "annotators", search_dirs)
        self.model = LineartGenerator(n_residual_blocks=3)
        self.model.load_state_dict(load_weights(path))
        self.model = self.model.eval().requires_grad_(False).to(self.device)
        self.batch_size, self.invert = batch_size, invert

    @torch.inference_mode()
    def annotate(self, frames: torch.Tensor) -> torch.Tensor:
        outs = []
        for batch in self.batched(frames, self.batch_size):
            x = batch.to(self.device, torch.float32).permute(0, 3, 1, 2)  # (B, 3, H, W)
            lines = self.model(x)[:, 0]  # (B, H, W): the model already draws dark lines on white
            outs.append((1 - lines if self.invert else lines).cpu())
        lines = torch.cat(outs)
        return lines[..., None].expand(*lines.shape, 3)
