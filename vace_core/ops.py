"""Layer namespaces for the DiT's `operations` argument.

`cast` keeps each weight in its storage dtype (fp8, bf16, fp32...) and casts it to the input's dtype and
device inside `forward`, one layer at a time, so a 14B model stored in fp8 never exists upcast in memory.
A Linear loaded from a ComfyUI "scaled fp8" file also keeps its per-weight `scale_weight`
(weight = fp8 weight * scale_weight), applied at the same moment. Constructors match torch.nn's; like
ComfyUI's `comfy.ops`, the layers skip random initialisation: they exist to receive loaded weights (and
random init has no fp8 kernels).

fp8 compute (off by default, switched on per layer by `vace_core.speed`): a Linear whose weight is stored in
fp8 e4m3 multiplies in fp8 with `torch._scaled_mm` (Ada/Hopper GPUs; CPU too) instead of upcasting the weight:
the input is quantised per tensor on the fly (its absolute maximum mapped to the fp8 maximum), the weight keeps
its stored values and `scale_weight`.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

E4M3 = torch.float8_e4m3fn
E4M3_MAX = torch.finfo(E4M3).max  # 448


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


def quantize_e4m3(x: Tensor) -> tuple[Tensor, Tensor]:
    """x -> (fp8 e4m3 values, float32 scale of shape ()) with x ~ values * scale, the scale mapping x's absolute
    maximum to 448. The scale stays a device tensor: no host sync."""
    scale = (x.detach().abs().amax().float() / E4M3_MAX).clamp(min=torch.finfo(torch.float32).tiny)
    return (x * scale.reciprocal().to(x.dtype)).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3), scale


def fp8_linear(x: Tensor, weight: Tensor, bias: Tensor | None, weight_scale: Tensor | None) -> Tensor:
    """x (..., in) @ (weight * weight_scale).T + bias in fp8: weight (out, in) e4m3, x quantised per tensor,
    products accumulated in float32 by `torch._scaled_mm`; returns x's dtype."""
    rows = x.reshape(-1, x.shape[-1])
    xq, x_scale = quantize_e4m3(rows)
    w_scale = torch.ones((), device=x.device) if weight_scale is None else weight_scale.to(x.device, torch.float32)
    out = torch._scaled_mm(xq, weight.t(), scale_a=x_scale, scale_b=w_scale, out_dtype=x.dtype)
    if bias is not None:
        out = out + cast_like(bias, out)
    return out.reshape(*x.shape[:-1], weight.shape[0])


def fp8_ready(weight: Tensor, x: Tensor) -> bool:
    """fp8 e4m3 weight, and every dimension a multiple of 16 (torch._scaled_mm's rule on CUDA)."""
    rows = x.numel() // x.shape[-1]
    return weight.dtype == E4M3 and rows % 16 == 0 and all(n % 16 == 0 for n in weight.shape)


class Linear(CastWeights, nn.Linear):
    fp8_compute = False  # set by vace_core.speed: multiply fp8 weights in fp8 (torch._scaled_mm)

    def forward(self, x: Tensor) -> Tensor:
        if self.fp8_compute and fp8_ready(self.weight, x):
            return fp8_linear(x, self.weight.to(x.device), self.bias, self.scale_weight)
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
