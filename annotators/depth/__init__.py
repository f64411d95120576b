"""Depth control video from users' weights through transformers' model classes, normalised per frame to 0..1
(near is bright: the models predict relative inverse depth), as VACE did.

- Depth-Anything-V2 (VACE's `depth_anything_v2_vitl.pth`, the original layout, converted on load; or a
  transformers folder such as depth-anything/Depth-Anything-V2-Large-hf): input short side 518, multiple of 14.
- MiDaS DPT-hybrid as a transformers folder (Intel/dpt-hybrid-midas): short side up to 1024, multiple of 64.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn.functional as F

from ..base import AnnotatorError, TorchAnnotator, load_weights, pick_device, require
from ..weights import resolve_weight
from .convert import depth_anything_v2_from_original

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def load_depth_model(path: Path):
    """A transformers depth model from a transformers folder or an original Depth-Anything-V2 .pth."""
    transformers = require("transformers")
    if path.is_dir():
        return any_input_size(transformers.AutoModelForDepthEstimation.from_pretrained(path))
    state = load_weights(path)
    if any(k.startswith("pretrained.blocks.") for k in state):
        return depth_anything_v2_from_original(state)
    raise AnnotatorError(
        f"'{path.name}' is not a layout this pack reads: give an original Depth-Anything-V2 .pth or a transformers "
        "model folder (config.json + weights), e.g. Intel/dpt-hybrid-midas for MiDaS DPT-hybrid"
    )


def any_input_size(model):
    """MiDaS DPT-hybrid runs at any multiple of 32 (VACE feeds e.g. 512x832), but transformers' version only
    at its config's square size: its embeddings refuse other sizes unless told `interpolate_pos_encoding`
    (which DPTModel never passes), and its neck assumes a square token grid. Both are given the real grid."""
    if not getattr(model.config, "is_hybrid", False):
        return model
    embeddings = model.dpt.embeddings
    embeddings.forward = functools.partial(embeddings.forward, interpolate_pos_encoding=True)
    grid = {}

    def remember_grid(_, args, kwargs):
        pixels = kwargs.get("pixel_values", args[0] if args else None)
        grid["hw"] = tuple(side // model.config.patch_size for side in pixels.shape[-2:])

    model.register_forward_pre_hook(remember_grid, with_kwargs=True)
    neck_forward = model.neck.forward
    model.neck.forward = lambda hidden_states, *_: neck_forward(hidden_states, *grid["hw"])
    return model


def working_size(h: int, w: int, short: int, multiple: int, lower_bound: bool) -> tuple[int, int]:
    """The model's input size. Depth-Anything-V2 (`lower_bound`): short side `short`, sides rounded to `multiple`
    but never under `short`. VACE's MiDaS: short side min(`short`, frame's), sides rounded to `multiple`."""
    k = (short if lower_bound else min(short, h, w)) / min(h, w)

    def fit(x: float) -> int:
        y = round(x / multiple) * multiple
        return int(-(-x // multiple) * multiple if lower_bound and y < short else max(y, multiple))

    return fit(h * k), fit(w * k)


class Depth(TorchAnnotator):
    KINDS = {  # short side, multiple, lower bound, mean, std
        "depth_anything_v2": (518, 14, True, IMAGENET_MEAN, IMAGENET_STD),
        "midas": (1024, 64, False, (0.5,) * 3, (0.5,) * 3),
    }
    DEFAULT_WEIGHTS = {"depth_anything_v2": "depth_anything_v2_vitl.pth", "midas": "dpt-hybrid-midas"}

    def __init__(
        self,
        kind: str = "depth_anything_v2",
        weight: str | None = None,
        search_dirs=(),
        device=None,
        batch_size: int = 4,
        dtype: torch.dtype = torch.float32,
    ):
        if kind not in self.KINDS:
            raise AnnotatorError(f"depth kind must be one of {sorted(self.KINDS)}, got '{kind}'")
        self.kind, self.device, self.batch_size, self.dtype = kind, pick_device(device), batch_size, dtype
        path = resolve_weight(weight or self.DEFAULT_WEIGHTS[kind], "annotators", search_dirs)
        self.model = load_depth_model(path).eval().requires_grad_(False).to(self.device, dtype)

    @torch.inference_mode()
    def annotate(self, frames: torch.Tensor) -> torch.Tensor:
        short, multiple, lower_bound, mean, std = self.KINDS[self.kind]
        t, h, w, _ = frames.shape
        size = working_size(h, w, short, multiple, lower_bound)
        mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)
        outs = []
        for batch in self.batched(frames, self.batch_size):
            x = batch.to(self.device, torch.float32).permute(0, 3, 1, 2)  # (B, 3, H, W)
            x = F.interpolate(x, size=size, mode="bicubic", align_corners=False).clamp(0, 1)
            depth = self.model(
                pixel_values=((x - mean) / std).to(self.dtype)
            ).predicted_depth.float()  # (B, h, w)
            depth = F.interpolate(depth[:, None], size=(h, w), mode="bilinear", align_corners=True)[:, 0]
            outs.append(normalise(depth).cpu())
        depth = torch.cat(outs)
        return depth[..., None].expand(*depth.shape, 3)


def normalise(depth: torch.Tensor) -> torch.Tensor:
    """Each frame to 0..1 by its own min and max (VACE's per-frame normalisation)."""
    flat = depth.flatten(1)
    lo, hi = flat.amin(1)[:, None, None], flat.amax(1)[:, None, None]
    return (depth - lo) / (hi - lo).clamp_min(1e-8)
