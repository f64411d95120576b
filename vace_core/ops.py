"""Layer namespaces for the DiT's `operations` argument.

`cast` keeps each weight in its storage dtype (fp8, bf16, fp32...) and casts it to the input's dtype and
device inside `forward`, one layer at a time, so a 14B model stored in fp8 never exists upcast in memory.
A Linear loaded from a ComfyUI "scaled fp8" file also keeps its per-weight `scale_weight`
(weight = fp8 weight * scale_weight), applied at the same moment. Constructors match torch.nn's; like
ComfyUI's `comfy.ops`, the layers skip random initialisation: they exist to receive loaded weights (and
random init has no fp8 kernels).
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def cast_like(tensor: Tensor | None, x: Tensor) -> Tensor | None:
    """`tensor` in x's dtype and on x's device (None stays None)."""
    return None if tensor is None else tensor.to(device=x.device, dtype=x.dtype)


class CastWeights:
    """Mixin: weight and bias cast to the input at call time; optional ComfyUI-style `scale_weight`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("scale_weight", None)

    def reset_parameters(self):
        pass

    def cast_weight_bias(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        weight = cast_like(self.weight, x)
        if weight is not None and self.scale_weight is not None:
            weight = weight * cast_like(self.scale_weight, x).reshape(-1, *[1] * (weight.ndim - 1))
        return weight, cast_like(self.bias, x)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A scaled-fp8 file carries `<layer>.scale_weight`: make room for it so loading (copy or
        # assign) takes it instead of reporting an unexpected key.
        if prefix + "scale_weight" in state_dict and self.scale_weight is None and self.weight is not None:
            self.register_buffer("scale_weight", torch.empty((), dtype=torch.float32, device=self.weight.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class Linear(CastWeights, nn.Linear):
    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, *self.cast_weight_bias(x))


class Conv3d(CastWeights, nn.Conv3d):
    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, *self.cast_weight_bias(x))


class LayerNorm(CastWeights, nn.LayerNorm):
    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.normalized_shape, *self.cast_weight_bias(x), self.eps)


class RMSNorm(CastWeights, nn.RMSNorm):
    bias = None

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, self.normalized_shape, self.cast_weight_bias(x)[0], self.eps)


class cast:  # noqa: N801  (a namespace used like `torch.nn` or `comfy.ops.manual_cast`)
    Linear = Linear
    Conv3d = Conv3d
    LayerNorm = LayerNorm
    RMSNorm = RMSNorm
