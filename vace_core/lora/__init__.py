"""LoRAs for the VACE transformer: every key layout in circulation (ComfyUI / official, kohya, diffusers / PEFT,
LyCORIS LoHa / LoKr, full deltas .diff / .diff_b), checked against the model, merged or unmerged.

- `apply_lora(model, path_or_tensors, strength, context_strength=None, merge=True)`: in place; returns a LoraPlan
  whose `report()` names the keys that did not apply.
- `plan_lora(tensors, param_shapes)`: the canonical pieces and target parameters (the ComfyUI node hands them to
  comfy.lora.load_lora / ModelPatcher.add_patches).
- `remove_loras(model)`: undoes unmerged LoRAs.
"""

from .apply import CONTEXT_PREFIXES, apply_lora, delta, read_lora, remove_loras
from .keys import LoraPlan, plan_lora

__all__ = ["CONTEXT_PREFIXES", "LoraPlan", "apply_lora", "delta", "plan_lora", "read_lora", "remove_loras"]
