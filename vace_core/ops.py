"""Layer namespaces for the DiT's `operations` argument.

`cast` keeps each weight in its storage dtype (fp8, bf16, fp32...) and casts it to the input's dtype and
device inside `forward`, one layer at a time, so a 14B model stored in fp8 never exists upcast in memory.
A Linear loaded from a ComfyUI "scaled fp8" file also keeps its per-weight `scale_weight`
(weight = fp8 weight * scale_weight), applied at the same moment. Constructors match torch.nn's; like
ComfyUI's `comfy.ops`, the layers skip random initialisation: they exist to receive loaded weights (and
random init has no fp8 kernels).

fp8 compute (off by default, switched on per layer by `vace_core.speed`): a Linear whose weight is stored in
fp8 e4m3 multiplies in fp8 with `torch._scaled_mm` (Ada/Hopper GPUs) instead of upcasting the weight: the input
is quantised per tensor on the fly (its absolute maximum mapped to the fp8 maximum), the weight keeps its stored
values and `scale_weight`. Off CUDA the same products (fp8 values are exact in float32) come from a float32 matmul:
torch's CPU `_scaled_mm` is a reference loop, ~1000x slower at 2048x256x1024.

GGUF weights (`quantized(operations)`): a Linear whose weight comes from a GGUF file as ggml blocks keeps those
blocks as its weight (uint8, still mapped from the file on the CPU) and dequantizes them in torch, on the input's
device, each time it runs; unmerged LoRAs (`weight_patches`) are added to the dequantized weight.
"""

import functools
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .ggml import QuantizedWeight, dequantize

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
    products accumulated in float32 (`torch._scaled_mm` on CUDA, a float32 matmul of the fp8 values elsewhere);
    returns x's dtype."""
    rows = x.reshape(-1, x.shape[-1])
    xq, x_scale = quantize_e4m3(rows)
    w_scale = torch.ones((), device=x.device) if weight_scale is None else weight_scale.to(x.device, torch.float32)
    if x.is_cuda:
        out = torch._scaled_mm(xq, weight.t(), scale_a=x_scale, scale_b=w_scale, out_dtype=x.dtype)
    else:
        out = ((xq.float() @ weight.float().t()) * (x_scale * w_scale)).to(x.dtype)
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


class QuantizedLinear:
    """Mixin over a namespace's Linear: its weight may be ggml blocks (`ggml_format` = (type, logical shape)),
    dequantized per call in float32 on the input's device; `weight_patches` (callables taking and returning that
    float32 weight: unmerged LoRAs) are applied before the cast to the input's dtype. ComfyUI's low-VRAM
    `bias_function` patches apply to the bias as in comfy.ops."""

    ggml_format = None

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        weight = state_dict.get(prefix + "weight")
        if not isinstance(weight, QuantizedWeight):
            return super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                                 unexpected_keys, error_msgs)
        self.hold(weight)
        if self.bias is not None:
            if prefix + "bias" in state_dict:
                self.bias = nn.Parameter(state_dict[prefix + "bias"], requires_grad=False)
            else:
                missing_keys.append(prefix + "bias")

    def hold(self, weight: QuantizedWeight) -> None:
        """Takes ggml blocks as this layer's weight (as they are: on the CPU, the file's map)."""
        self.weight = nn.Parameter(weight.blocks, requires_grad=False)
        self.ggml_format, self.weight_patches = (weight.qtype, weight.shape), []

    def dequantized_weight(self, x: Tensor) -> Tensor:
        qtype, shape = self.ggml_format
        weight = dequantize(self.weight.to(x.device, non_blocking=True), qtype, shape)
        for patch in self.weight_patches:
            weight = patch(weight)
        return weight.to(x.dtype)

    def forward(self, x: Tensor) -> Tensor:
        if self.ggml_format is None:
            return super().forward(x)
        bias, patches = cast_like(self.bias, x), getattr(self, "bias_function", ())
        if patches:  # ComfyUI's patches add in place: never into the stored bias
            bias = bias.clone()
        for patch in patches:
            bias = patch(bias)
        return F.linear(x, self.dequantized_weight(x), bias)


def is_quantized(module: nn.Module) -> bool:
    return getattr(module, "ggml_format", None) is not None


@functools.cache
def quantized(operations):
    """`operations` (vace_core.ops.cast, comfy.ops...) whose Linear also takes GGUF-quantized weights."""
    linear = type("Linear", (QuantizedLinear, operations.Linear), {})
    return SimpleNamespace(Linear=linear, Conv3d=operations.Conv3d, LayerNorm=operations.LayerNorm,
                           RMSNorm=operations.RMSNorm)


def dequantize_workspace(model: nn.Module, dtype: torch.dtype) -> int:
    """Bytes a forward needs beyond the stored weights to dequantize its largest GGUF layer (float32 values and
    their copy in the compute dtype `dtype`)."""
    sizes = [m.ggml_format[1].numel() for m in model.modules() if is_quantized(m)]
    return max(sizes, default=0) * (4 + dtype.itemsize)
