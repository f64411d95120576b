"""ComfyUI's "scaled fp8" layout.

Read from ComfyUI's comfy/ops.py (`scaled_fp8_ops`) and comfy/model_detection.py: the file holds a marker key
`scaled_fp8` (an empty tensor whose dtype is the fp8 type; 2 elements = fp8 matmul disabled), and every
Linear layer `X` has an fp8 `X.weight` plus a float32 `X.scale_weight` (shape (), applied as
weight * scale_weight) and, when written with fp8 matmul on, `X.scale_input` (only used by fp8 matmul).
Other tensors (convs, norms, biases, modulation) are stored as ordinary tensors.
"""

import torch
from torch import Tensor

from .keymap import SCALED_FP8_MARKER

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
SCALE_WEIGHT = ".scale_weight"
SCALE_INPUT = ".scale_input"


def is_scaled_fp8(state_dict: dict[str, Tensor]) -> bool:
    return any(k.endswith(SCALE_WEIGHT) for k in state_dict)


def drop_fp8_markers(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Remove the marker and the input scales (weight-only dequantisation never needs them)."""
    return {k: v for k, v in state_dict.items() if k != SCALED_FP8_MARKER and not k.endswith(SCALE_INPUT)}


def dequantize_tensor(key: str, value: Tensor, state_dict: dict[str, Tensor], dtype: torch.dtype) -> Tensor:
    """`value` (the tensor of `key`) as dtype, times its `scale_weight` from state_dict if it has one."""
    scale = state_dict.get(key.removesuffix(".weight") + SCALE_WEIGHT) if key.endswith(".weight") else None
    if scale is not None:
        value = value.float() * scale.to(value.device, torch.float32).reshape(-1, *[1] * (value.ndim - 1))
    return value.to(dtype)


def dequantize(state_dict: dict[str, Tensor], dtype: torch.dtype) -> dict[str, Tensor]:
    """Fold every `scale_weight` into its weight: weight = fp8 weight (as float32) * scale, stored as dtype."""
    return {k: dequantize_tensor(k, v, state_dict, dtype) for k, v in state_dict.items()
            if not k.endswith(SCALE_WEIGHT)}


def quantize_scaled(state_dict: dict[str, Tensor], fp8_dtype: torch.dtype) -> dict[str, Tensor]:
    """Write ComfyUI's layout: every Linear weight (2-D `.weight`) as fp8 with a per-tensor float32 scale
    mapping its absolute maximum to the fp8 maximum; everything else unchanged; plus the marker key."""
    out = {}
    for key, value in state_dict.items():
        if key.endswith(".weight") and value.ndim == 2:
            amax = value.detach().float().abs().amax().clamp(min=1e-12)
            scale = amax / torch.finfo(fp8_dtype).max
            out[key] = (value.float() / scale).to(fp8_dtype)
            out[key.removesuffix(".weight") + SCALE_WEIGHT] = scale.reshape(())
        else:
            out[key] = value
    out[SCALED_FP8_MARKER] = torch.empty(0, dtype=fp8_dtype)
    return out
