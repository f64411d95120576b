"""Applying a LoRA to a loaded VaceTransformer without ComfyUI: merged into the weights, or unmerged.

The weight change of each piece follows ComfyUI's weight adapters (comfy/weight_adapter), so the command line,
the Python API and the nodes (which hand the same canonical pieces to ComfyUI's ModelPatcher) agree:
  LoRA  up @ down * alpha / rank;  LoHa  (w1a @ w1b) * (w2a @ w2b) * alpha / rank;
  LoKr  kron(w1, w2), each factor whole or as a @ b (then * alpha / rank);  diff / diff_b  the delta itself.
Each change is scaled by the strength (context blocks may take their own).

Merged: weight += strength * delta, computed in float32 and stored back in the weight's dtype (fp8 rounds; a
scaled-fp8 weight keeps its scale). Unmerged: a parametrization adds the change whenever the layer reads its
weight, from the low-rank pieces (no full-size copy is kept), so `remove_loras` restores the exact weights
and fp8 weights keep their precision. `model.state_dict()` shows `parametrizations.*` keys while a LoRA is
unmerged.
GGUF-quantized weights (vace_core.ops.QuantizedLinear) take LoRAs unmerged only: the change is added to the
weight each time the layer dequantizes it.

Confined to a region (`region=`: a mask, or a Regional Prompts region index): unmerged per token, see
vace_core.lora.region.
"""

from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .. import ops
from ..checkpoints.io import read_file
from ..errors import VaceError
from .keys import DOWN, UP, LoraPlan, plan_lora

CONTEXT_PREFIXES = ("vace_blocks.", "vace_patch_embedding.")


def read_lora(path: str | Path) -> dict[str, Tensor]:
    """A LoRA file (.safetensors, or a pickle read with weights_only) -> its tensors, keys as stored. A damaged,
    unsafe or NaN-holding file is a VaceError naming it (NaN weights would otherwise reach the sampler's NaN
    watch, which cannot tell the LoRA from the model)."""
    path = Path(path)
    tensors = read_file(path)
    for key, value in tensors.items():
        if value.is_floating_point() and not torch.isfinite(torch.sum(value, dtype=torch.float32)):
            raise VaceError(f"the LoRA {path.name} holds NaN or infinite values (in {key}): the file is damaged or "
                            "comes from a diverged training run. Download it again, or leave it out.")
    return tensors


def _alpha(parts: dict[str, Tensor], rank: int) -> float:
    return parts["alpha"].item() / rank if "alpha" in parts else 1.0


def _mm(a: Tensor, b: Tensor) -> Tensor:
    return a.flatten(1).float() @ b.flatten(1).float()


def delta(parts: dict[str, Tensor], shape: torch.Size, device=None) -> Tensor:
    """The float32 change of one weight (shape `shape`) that the pieces describe (strength 1)."""
    parts = {k: v.to(device) for k, v in parts.items()}
    if DOWN in parts:
        change = _mm(parts[UP], parts[DOWN]) * _alpha(parts, parts[DOWN].shape[0])
    elif "hada_w1_a" in parts:
        change = (_mm(parts["hada_w1_a"], parts["hada_w1_b"]) * _mm(parts["hada_w2_a"], parts["hada_w2_b"])
                  * _alpha(parts, parts["hada_w1_b"].shape[0]))
    elif any(k.startswith("lokr") for k in parts):
        factors, scale = [], 1.0
        for i in (1, 2):
            if f"lokr_w{i}" in parts:
                factors.append(parts[f"lokr_w{i}"].float())
            else:
                factors.append(_mm(parts[f"lokr_w{i}_a"], parts[f"lokr_w{i}_b"]))
                scale = _alpha(parts, parts[f"lokr_w{i}_b"].shape[0])  # ComfyUI: the last factored one's rank
        change = torch.kron(*factors) * scale
    else:
        change = parts["diff"].float()
    return change.reshape(shape)


def param_shapes(model: nn.Module) -> dict[str, tuple]:
    """The model's state-dict names -> shapes, with unmerged LoRAs' parametrizations seen through (so LoRAs stack)
    and GGUF-quantized weights at the shape they dequantize to."""
    shapes = {k.replace(".parametrizations.", ".").removesuffix(".original"): tuple(v.shape)
              for k, v in model.state_dict().items()}
    return shapes | {f"{name}.weight": tuple(m.ggml_format[1]) for name, m in model.named_modules()
                     if ops.is_quantized(m)}


def _owner(model: nn.Module, param: str) -> tuple[nn.Module, str]:
    path, _, attr = param.rpartition(".")
    return model.get_submodule(path), attr


def _scale(module: nn.Module, attr: str) -> Tensor | None:
    """ComfyUI scaled fp8: the weight is stored divided by this (vace_core.ops applies it at run time)."""
    return getattr(module, "scale_weight", None) if attr == "weight" else None


class AddDelta(nn.Module):
    """Unmerged LoRA: weight -> weight + strength * delta, recomputed from the pieces at every read. The
    result is float32 for fp8 weights (so the change is not rounded to fp8) and the weight's dtype otherwise."""

    def __init__(self, parts: dict[str, Tensor], strength: float, scale: Tensor | None, device):
        super().__init__()
        self.parts = {k: v.to(device) for k, v in parts.items()}
        self.strength, self.scale = strength, scale

    def forward(self, weight: Tensor) -> Tensor:
        change = self.strength * delta(self.parts, weight.shape, weight.device)
        if self.scale is not None:
            change = change / self.scale.to(change)
        out_dtype = weight.dtype if weight.dtype.itemsize >= 2 else torch.float32
        return (weight.float() + change).to(out_dtype)


def apply_lora(model: nn.Module, lora: dict[str, Tensor] | str | Path, strength: float = 1.0,
               context_strength: float | None = None, merge: bool = True, name: str | None = None,
               region=None) -> LoraPlan:
    """Applies a LoRA (a file or its tensors, any key layout) to a loaded VaceTransformer, in place.

    strength scales the change of the main blocks (and everything outside the context blocks);
    context_strength that of the context blocks (default: strength). merge=True folds it into the weights;
    False keeps it separate (see the module doc; undo with remove_loras). region: a mask (T, H, W) / (H, W) in the
video's pixels or a Regional Prompts region index (1..n): the LoRA changes only that region's tokens
(vace_core.lora.region; never merged). Returns the LoraPlan: its
    `report()` names the keys that did not apply. Raises VaceError for a LoRA of another model family or size.
    """
    if not isinstance(lora, dict):
        name = name or Path(lora).name
        lora = read_lora(lora)
    if region is not None:
        from .region import attach_region_lora, region_lora

        scoped = region_lora(model, lora, strength, context_strength, region, name or "LoRA")
        attach_region_lora(model, scoped)
        return scoped.plan
    context_strength = strength if context_strength is None else context_strength
    plan = plan_lora(lora, param_shapes(model), name or "LoRA")
    if merge:
        _refuse_merge_into_quantized(model, plan.patches())
    with torch.no_grad():
        for param, parts in plan.patches().items():
            s = context_strength if param.startswith(CONTEXT_PREFIXES) else strength
            if s == 0:
                continue
            module, attr = _owner(model, param)
            weight, scale = getattr(module, attr), _scale(module, attr)
            if ops.is_quantized(module) and attr == "weight":  # unmerged (merge=True was refused above)
                module.weight_patches.append(AddDelta(parts, s, None, weight.device))
                continue
            if not merge:
                parametrize.register_parametrization(module, attr, AddDelta(parts, s, scale, weight.device),
                                                     unsafe=True)
                continue
            change = s * delta(parts, weight.shape, weight.device)
            if scale is not None:
                change = change / scale.to(change)
            weight.copy_((weight.float() + change).to(weight.dtype))
    return plan


def _refuse_merge_into_quantized(model: nn.Module, params) -> None:
    quantized = [p for p in params if p.endswith(".weight") and ops.is_quantized(_owner(model, p)[0])]
    if quantized:
        raise VaceError(f"The LoRA changes {len(quantized)} GGUF-quantized weights (e.g. {quantized[0]}): it cannot be "
                        "merged into them without quantizing the sums again. Apply it unmerged (merge=False), as the "
                        "command line and the nodes do.")


def remove_loras(model: nn.Module) -> None:
    """Takes every unmerged LoRA (region LoRAs too) off the model (merged ones are part of the weights: reload
    the model)."""
    model.region_loras = ()
    for module in model.modules():
        if ops.is_quantized(module):
            module.weight_patches = []
        if parametrize.is_parametrized(module):
            for attr in list(module.parametrizations):
                parametrize.remove_parametrizations(module, attr, leave_parametrized=False)
