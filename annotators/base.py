"""The one interface every annotator follows: frames in, control frames or masks out.

Data crosses in ComfyUI's conventions so nodes stay thin: frames are float tensors (T, H, W, 3) in 0..1
(IMAGE), masks are (T, H, W) in 0..1 (MASK). Inside, an annotator may work per frame on uint8 numpy arrays
(OpenCV, ONNX, MediaPipe) or in batches on the GPU (torch models).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch

# pip extras named in error messages: the file users install them from. MediaPipe has its own opt-in file
# because it pins numpy<2 (see requirements-mediapipe.txt).
EXTRAS_FILE = "requirements-annotators.txt"
EXTRAS_FILES = {"mediapipe": "requirements-mediapipe.txt"}
# (done, total) after each frame or batch: ComfyUI's nodes pass a ProgressBar's update, so annotators stay
# free of comfy
Progress = Callable[[int, int], None]


class AnnotatorError(ValueError):
    """Bad input, a missing weight file or a missing optional package. The message is written for the user."""


def require(module: str, package: str | None = None):
    """Import an optional dependency, or say which package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        package = package or module
        extras = EXTRAS_FILES.get(module.split(".")[0], EXTRAS_FILE)
        raise AnnotatorError(
            f"this annotator needs the optional package '{package}' ({e}). Install the annotator extras: "
            f"pip install -r {extras} (or pip install '{package}')"
        ) from e


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The caller's device, else the GPU when there is one."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_frames(frames: torch.Tensor) -> torch.Tensor:
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[-1] != 3:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise AnnotatorError(f"frames must be an IMAGE tensor (T, H, W, 3) with values in 0..1, got {shape}")
    if frames.shape[0] == 0:
        raise AnnotatorError("frames is empty: give at least one frame")
    return frames


def check_masks(masks: torch.Tensor) -> torch.Tensor:
    if not isinstance(masks, torch.Tensor) or masks.ndim != 3:
        shape = tuple(masks.shape) if isinstance(masks, torch.Tensor) else type(masks).__name__
        raise AnnotatorError(f"masks must be a MASK tensor (T, H, W) with values in 0..1, got {shape}")
    return masks


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """(T, H, W, C) float 0..1 -> uint8 numpy, as the OpenCV / ONNX / MediaPipe backends want."""
    return (frames.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def from_uint8(arrays) -> torch.Tensor:
    """uint8 numpy (T, H, W[, C]) or a list of frames -> float tensor in 0..1."""
    return torch.from_numpy(np.ascontiguousarray(np.stack(list(arrays)))).float() / 255


def batches(x: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    for start in range(0, x.shape[0], batch_size):
        yield x[start : start + batch_size]


def counted(items: Iterable, total: int, progress: Progress | None) -> Iterator:
    """Yields `items`, reporting (done, total) to `progress` once each one is processed."""
    for done, item in enumerate(items, 1):
        yield item
        if progress is not None:
            progress(done, total)


class Annotator:
    """Base of every annotator. Subclasses set `output` and implement `annotate`.

    `output` is "image" for control frames (T, H, W, 3) and "mask" for masks (T, H, W).
    """

    output = "image"
    progress: Progress | None = None

    def __call__(self, frames: torch.Tensor, progress: Progress | None = None) -> torch.Tensor:
        self.progress = progress
        try:
            out = self.annotate(check_frames(frames))
        finally:
            self.progress = None
        return out.clamp(0, 1).float()

    def counted(self, items: Iterable, total: int) -> Iterator:
        return counted(items, total, self.progress)

    def batched(self, frames: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
        """`frames` in batches, each reported to the progress callback."""
        return self.counted(batches(frames, batch_size), -(-frames.shape[0] // batch_size))

    def annotate(self, frames: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class TorchAnnotator(Annotator):
    """An annotator whose weights are one torch module, `self.model`, run on `self.device` (inputs go there).

    Whoever manages memory moves the module between devices and says where it now is with `to` (ComfyUI's nodes
    hand it to model management: loaded on the GPU when it runs, offloaded when another model needs the room);
    a script calls `release` after its job, so the weights stop holding device memory."""

    model: torch.nn.Module
    device: torch.device

    def to(self, device: str | torch.device) -> TorchAnnotator:
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    def release(self) -> None:
        """Moves the weights to the CPU and returns the device's cached memory."""
        on_cuda = self.device.type == "cuda"
        self.to("cpu")
        if on_cuda:
            torch.cuda.empty_cache()


class FrameAnnotator(Annotator):
    """An annotator that works on one uint8 RGB frame at a time (OpenCV, ONNX, MediaPipe)."""

    def annotate(self, frames: torch.Tensor) -> torch.Tensor:
        return from_uint8(self.annotate_frame(frame) for frame in self.counted(to_uint8(frames), len(frames)))

    def annotate_frame(self, frame: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (H, W, 3) uint8 RGB control frame or (H, W) uint8 mask."""
        raise NotImplementedError


def load_weights(path) -> dict:
    """A PyTorch weights pickle, tensors only (`weights_only=True`). Anything else is refused without
    suggesting to lift that protection (torch's own message does)."""
    import pickle

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise AnnotatorError(f"refusing to load {path}: the pickle holds more than tensors (objects that run code "
                             "when loaded). Download the official weight file again.") from None
