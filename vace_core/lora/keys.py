"""LoRA files in every key layout that circulates for Wan2.1 -> one canonical form, checked against the model.

Canonical keys are `<target>.<part>`: `<target>` a module or parameter of this model under its official Wan name
(`blocks.0.self_attn.q`, `vace_blocks.1.ffn.0`, `blocks.0.modulation`), `<part>` ComfyUI's name for the piece
(`lora_up.weight`, `lora_down.weight`, `alpha`, `diff`, `diff_b`, LyCORIS `hada_*` / `lokr_*`). Layouts read:

- ComfyUI / official: `diffusion_model.blocks.0.self_attn.q.lora_up.weight` (+ `.alpha`, full deltas `.diff`,
  bias deltas `.diff_b`, as CausVid / lightx2v carry for norms, biases and modulation)
- kohya / musubi-tuner: `lora_unet_blocks_0_self_attn_q.lora_up.weight` (Wan Fun: `lora_unet__blocks_...`)
- diffusers / PEFT: `transformer.blocks.0.attn1.to_q.lora_B.weight` (lora_A = down, lora_B = up; `lora_B.bias`
  is diffusers' name for a bias delta)
- LyCORIS LoHa / LoKr under any of these names.

Keys that do not apply are kept by reason (I2V-only image cross-attention, parts we do not read, layers this
model lacks), so callers can report them; a LoRA where nothing applies, or whose shapes belong to another
model size, is refused with a VaceError.
"""

import math
from dataclasses import dataclass, field

from torch import Tensor

from ..checkpoints.keymap import official_to_diffusers_name
from ..errors import VaceError

# Wrappers around the module name; stripped repeatedly (training tools nest them).
PREFIXES = ("model.diffusion_model.", "diffusion_model.", "base_model.model.", "transformer.", "unet.",
            "lora_unet_", "lora_transformer_", "lycoris_")
UP, DOWN = "lora_up.weight", "lora_down.weight"
PARTS = {
    "lora_up.weight": UP, "lora_B.weight": UP, "lora.up.weight": UP, "lora_B.default.weight": UP,
    "lora_down.weight": DOWN, "lora_A.weight": DOWN, "lora.down.weight": DOWN, "lora_A.default.weight": DOWN,
    "lora_B.bias": "diff_b", "alpha": "alpha", "diff": "diff", "diff_b": "diff_b",
    **{p: p for p in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b",
                      "lokr_w1", "lokr_w2", "lokr_w1_a", "lokr_w1_b", "lokr_w2_a", "lokr_w2_b")},
}
# Pieces some LoRAs carry that we do not apply (the ComfyUI node path reports them the same way).
UNSUPPORTED_PARTS = ("lora_mid.weight", "hada_t1", "hada_t2", "lokr_t2", "dora_scale", "lora_A.bias",
                     "reshape_weight", "set_weight", "w_norm", "b_norm")
I2V_ONLY = ("k_img", "v_img", "norm_k_img", "img_emb", "add_k_proj", "add_v_proj", "norm_added_k", "image_embedder")
# Module names of other model families, for the refusal message.
FAMILIES = {"double_blocks": "Flux / HunyuanVideo", "single_blocks": "Flux / HunyuanVideo",
            "transformer_blocks": "a DiT of another family (LTX-Video, Mochi, CogVideoX, SD3, ...)",
            "down_blocks": "Stable Diffusion (UNet)", "input_blocks": "Stable Diffusion (UNet)",
            "lora_te": "Stable Diffusion (text encoder)", "joint_blocks": "SD3"}

SKIP_I2V = "I2V-only image cross-attention (this is a text-to-video model)"
SKIP_PART = "pieces not applied (LoCon mid, Tucker, DoRA, reshape)"
SKIP_MISSING = "layers this model does not have"


@dataclass
class LoraPlan:
    """A LoRA resolved against one model.

    weights: canonical `<target>.<part>` -> tensor (for comfy.lora.load_lora); targets: `<target>` -> the model
    parameter its weight pieces change (the `to_load` map of comfy.lora.load_lora); skipped: reason -> the file's
    keys that do not apply; name: where the LoRA came from, for messages."""

    weights: dict[str, Tensor]
    targets: dict[str, str]
    skipped: dict[str, list[str]] = field(default_factory=dict)
    name: str = "LoRA"

    def parts(self, target: str) -> dict[str, Tensor]:
        prefix = target + "."
        return {k[len(prefix):]: v for k, v in self.weights.items() if k.startswith(prefix)}

    def patches(self) -> dict[str, dict[str, Tensor]]:
        """model parameter -> its pieces; a bias delta is its own patch {"diff": delta} on `<module>.bias`."""
        out = {}
        for target, param in self.targets.items():
            parts = self.parts(target)
            bias = parts.pop("diff_b", None)
            if parts:
                out[param] = parts
            if bias is not None:
                out[param.removesuffix(".weight") + ".bias"] = {"diff": bias}
        return out

    def report(self) -> str:
        """One line for the log / the node: what was applied and, by reason, what was not (names and counts)."""
        text = f"{self.name}: {len(self.targets)} layers changed"
        for reason, keys in self.skipped.items():
            shown = ", ".join(keys[:4]) + (f", ... ({len(keys) - 4} more)" if len(keys) > 4 else "")
            text += f"; {len(keys)} keys skipped, {reason}: {shown}"
        return text


def name_table(param_names) -> dict[str, str]:
    """Every spelling of each module / parameter (official, diffusers, kohya underscores) -> its official name."""
    table = {}
    for param in param_names:
        for module in {param, param.removesuffix(".weight").removesuffix(".bias")}:
            for spelling in (module, official_to_diffusers_name(module)):
                table[spelling] = table[spelling.replace(".", "_")] = module
    return table


def split_key(key: str) -> tuple[str, str | None]:
    """`<name>.<part>` -> (name, part) with the longest known part; (key, None) when no part matches."""
    for part in sorted([*PARTS, *UNSUPPORTED_PARTS], key=len, reverse=True):
        if key.endswith("." + part):
            return key[: -len(part) - 1], part
    return key, None


def strip_prefixes(name: str) -> str:
    while True:
        prefix = next((p for p in PREFIXES if name.startswith(p)), None)
        if prefix is None:
            return name.lstrip("_")  # Wan Fun's kohya names have a doubled underscore
        name = name[len(prefix):]


def skip_reason(name: str, part: str | None) -> str:
    if any(marker in name for marker in I2V_ONLY):
        return SKIP_I2V
    return SKIP_PART if part in UNSUPPORTED_PARTS else SKIP_MISSING


def plan_lora(state_dict: dict[str, Tensor], param_shapes: dict[str, tuple], name: str = "LoRA") -> LoraPlan:
    """Resolve a LoRA's keys against a model (param_shapes: the model's state-dict names -> shapes)."""
    table = name_table(param_shapes)
    plan = LoraPlan({}, {}, {}, name)
    for key, value in state_dict.items():
        raw, part = split_key(key)
        module = table.get(strip_prefixes(raw))
        if module is None or part not in PARTS:
            plan.skipped.setdefault(skip_reason(raw, part), []).append(key)
            continue
        plan.weights[f"{module}.{PARTS[part]}"] = value
        plan.targets[module] = module + ".weight" if module + ".weight" in param_shapes else module
    if not plan.targets:
        raise VaceError(refusal(state_dict, name))
    for target, param in plan.targets.items():
        check_shapes(plan, target, param, param_shapes)
    return plan


def refusal(state_dict: dict[str, Tensor], name: str) -> str:
    keys = list(state_dict)
    family = next((fam for marker, fam in FAMILIES.items() if any(marker in k for k in keys)), None)
    guess = f" It looks like a LoRA for {family}." if family else ""
    return (f"{name} is not a LoRA for Wan2.1: none of its {len(keys)} keys names a layer of this model "
            f"(first: {keys[0] if keys else 'none'}).{guess} Use a Wan2.1 (T2V or VACE) LoRA of the same size.")


def flat(shape) -> tuple[int, int]:
    """A weight shape as (out, everything else): how LoRA factors see convolutions and 1-D norms alike."""
    shape = tuple(shape)
    return (shape[0], math.prod(shape[1:])) if shape else (1, 1)


def delta_shape(parts: dict[str, Tensor]) -> tuple[int, int] | None:
    """flat() of the weight change the pieces make, or None without weight pieces."""
    if DOWN in parts:
        return parts[UP].shape[0], math.prod(parts[DOWN].shape[1:])
    if "hada_w1_a" in parts:
        return parts["hada_w1_a"].shape[0], parts["hada_w1_b"].shape[1]
    if any(k.startswith("lokr") for k in parts):
        (a, b), (c, d) = (flat(parts[f"lokr_w{i}"].shape) if f"lokr_w{i}" in parts else
                          (parts[f"lokr_w{i}_a"].shape[0], parts[f"lokr_w{i}_b"].shape[1]) for i in (1, 2))
        return a * c, b * d
    return flat(parts["diff"].shape) if "diff" in parts else None


REQUIRED = ((UP, DOWN), (DOWN, UP), ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"),
            ("lokr_w1_a", "lokr_w1_b"), ("lokr_w2_a", "lokr_w2_b"))


def check_shapes(plan: LoraPlan, target: str, param: str, param_shapes: dict[str, tuple]):
    parts = plan.parts(target)
    for group in REQUIRED:
        if group[0] in parts and not all(p in parts for p in group):
            missing = [p for p in group if p not in parts]
            raise VaceError(f"{plan.name}: layer {target} has {group[0]} but no {', '.join(missing)}: "
                            "the file is incomplete or damaged.")
    weight = {k: v for k, v in parts.items() if k != "diff_b"}
    pairs = [(delta_shape(weight), param)] if weight else []
    if "diff_b" in parts:
        pairs.append((flat(parts["diff_b"].shape), param.removesuffix(".weight") + ".bias"))
    for got, where in pairs:
        want = param_shapes.get(where)
        if want is None or got != flat(want):
            raise VaceError(
                f"{plan.name} changes {where} with shape {got}, but this model's is "
                f"{flat(want) if want is not None else 'absent'}: the LoRA was made for another model size "
                "(a Wan 14B LoRA on 1.3B, or the reverse). Use a LoRA made for this model.")
