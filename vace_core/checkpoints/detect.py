"""The DiT's shape from its weights (never from file names), and the checks that give bad input a clear error."""

import re
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor

from ..config import WAN_HEAD_DIM, VaceConfig
from ..errors import VaceError
from .fp8 import SCALE_WEIGHT

T2V_IN_DIM = 16
SIZE_NAMES = {1536: "1.3B", 5120: "14B"}  # dim -> release size
EXPECTED_KEYS = ("patch_embedding.weight", "blocks.0.self_attn.q.weight", "head.modulation",
                 "vace_patch_embedding.weight", "vace_blocks.0.before_proj.weight")
SHOWN = 5  # how many keys an error message lists


def size_name(dim: int) -> str:
    return SIZE_NAMES.get(dim, f"dim {dim}")


def release_file(kind: str, dim: int) -> str:
    """The ComfyUI-repackaged release file of the nearest size, e.g. wan2.1_t2v_14B_fp16.safetensors."""
    return f"wan2.1_{kind}_{'14B' if dim >= 5120 else '1.3B'}_fp16.safetensors"


def first_few(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    more = f", ... ({len(keys) - SHOWN} more)" if len(keys) > SHOWN else ""
    return ", ".join(keys[:SHOWN]) + more


def block_count(state_dict: Mapping[str, Tensor], prefix: str) -> int:
    """Number of `prefix.N.` blocks (the largest N + 1, so a gap shows up later as missing keys)."""
    indices = [int(m[1]) for k in state_dict if (m := re.match(rf"{prefix}\.(\d+)\.", k))]
    return max(indices) + 1 if indices else 0


def model_dim(state_dict: Mapping[str, Tensor]) -> int:
    """The hidden size, from whichever part of the model the file holds."""
    for key, axis in (("head.modulation", -1), ("patch_embedding.weight", 0), ("vace_patch_embedding.weight", 0),
                      ("blocks.0.modulation", -1), ("vace_blocks.0.modulation", -1)):
        if key in state_dict:
            return state_dict[key].shape[axis]
    raise VaceError(f"The checkpoint is incomplete: none of head.modulation, patch_embedding.weight, "
                    f"vace_patch_embedding.weight found among {first_few(state_dict)}.")


def check_wan_vace(state_dict: Mapping[str, Tensor]) -> None:
    """Refuse, with what to do instead: non-Wan weights, I2V bases, a lone VACE module, a plain T2V model."""
    has_base = "patch_embedding.weight" in state_dict
    has_vace = "vace_patch_embedding.weight" in state_dict or block_count(state_dict, "vace_blocks") > 0
    if not has_base and not has_vace and not block_count(state_dict, "blocks"):
        raise VaceError(
            "This is not a Wan2.1 / VACE transformer checkpoint: expected keys such as "
            f"{', '.join(EXPECTED_KEYS)} (optionally prefixed by model.diffusion_model.), "
            f"found {len(state_dict)} keys: {first_few(state_dict)}. "
            "Load the VAE and the text encoder with their own loaders."
        )
    in_dim = state_dict["patch_embedding.weight"].shape[1] if has_base else T2V_IN_DIM
    if in_dim != T2V_IN_DIM:
        raise VaceError(
            f"The base model takes {in_dim} input channels: it is an image-to-video (I2V/FLF2V) model. "
            f"VACE needs a T2V (text-to-video) base with {T2V_IN_DIM} input channels, "
            f"e.g. {release_file('t2v', model_dim(state_dict))}."
        )
    dim = model_dim(state_dict)
    if has_vace and not has_base:
        raise VaceError(
            f"This file holds only VACE context blocks (a VACE module for the {size_name(dim)} model), not a "
            f"whole model. Add the Wan2.1 T2V base model it goes with as the base file: "
            f"{release_file('t2v', dim)} (or any other precision of the {size_name(dim)} T2V model)."
        )
    if not has_vace:
        raise VaceError(
            f"This is a Wan2.1 {size_name(dim)} model without VACE context blocks (no vace_blocks.* or "
            "vace_patch_embedding keys). Load a VACE checkpoint (e.g. "
            f"{release_file('vace', dim)}) or add a VACE module file onto this base."
        )


def merge_vace_module(base: dict[str, Tensor], module: dict[str, Tensor]) -> dict[str, Tensor]:
    """A T2V base plus a VACE module file (context blocks); the module's tensors win on shared keys."""
    if base and module:
        base_dim, module_dim = model_dim(base), model_dim(module)
        if base_dim != module_dim:
            raise VaceError(
                f"The VACE module is for the {size_name(module_dim)} model but the base is the "
                f"{size_name(base_dim)} model: use the base of the same size ({release_file('t2v', module_dim)})."
            )
    return base | module


def _shape(state_dict: Mapping[str, Tensor], key: str) -> torch.Size:
    if key not in state_dict:
        raise VaceError(f"The checkpoint is incomplete: missing key {key} (needed to read the model's shape).")
    return state_dict[key].shape


def evenly_spaced(num_layers: int, n_context: int) -> tuple[int, ...]:
    """Where ComfyUI and the official configs put the context blocks: 1.3B 0,2..28; 14B 0,5..35."""
    return tuple(range(0, num_layers, max(num_layers // n_context, 1)))[:n_context]


def detect_config(
    state_dict: Mapping[str, Tensor],
    num_heads: int | None = None,
    vace_layers: Sequence[int] | None = None,
    config_json: Mapping | None = None,
) -> VaceConfig:
    """VaceConfig from official-key weights. `config_json` (official or diffusers config.json) supplies the
    head count and context-block positions when present; explicit arguments win over it."""
    check_wan_vace(state_dict)
    config_json = config_json or {}
    dim = _shape(state_dict, "head.modulation")[-1]
    patch = tuple(_shape(state_dict, "patch_embedding.weight")[2:])
    num_layers = block_count(state_dict, "blocks")
    n_context = block_count(state_dict, "vace_blocks")
    num_heads = num_heads or config_json.get("num_heads") or config_json.get("num_attention_heads")
    if num_heads is None:
        if dim % WAN_HEAD_DIM:
            raise VaceError(f"dim {dim} is not a multiple of Wan's head size {WAN_HEAD_DIM}: pass num_heads.")
        num_heads = dim // WAN_HEAD_DIM
    vace_layers = tuple(vace_layers or config_json.get("vace_layers") or evenly_spaced(num_layers, n_context))
    if len(vace_layers) != n_context:
        raise VaceError(
            f"vace_layers {list(vace_layers)} names {len(vace_layers)} blocks but the checkpoint has "
            f"{n_context} context blocks."
        )
    try:
        return VaceConfig(
            dim=dim,
            ffn_dim=_shape(state_dict, "blocks.0.ffn.0.weight")[0],
            num_heads=num_heads,
            num_layers=num_layers,
            vace_layers=vace_layers,
            in_dim=_shape(state_dict, "patch_embedding.weight")[1],
            out_dim=_shape(state_dict, "head.head.weight")[0] // (patch[0] * patch[1] * patch[2]),
            vace_in_dim=_shape(state_dict, "vace_patch_embedding.weight")[1],
            text_dim=_shape(state_dict, "text_embedding.0.weight")[1],
            freq_dim=_shape(state_dict, "time_embedding.0.weight")[1],
            patch_size=patch,
        )
    except ValueError as e:
        raise VaceError(f"Invalid model configuration: {e}") from e


def check_keys(expected: Mapping[str, torch.Size], state_dict: Mapping[str, Tensor]) -> None:
    """Compare the file with the model built from its detected config: list missing, unexpected and
    wrongly shaped keys (the first few of each, and how many)."""
    scales = {k for k in state_dict if k.endswith(SCALE_WEIGHT) and k.removesuffix(SCALE_WEIGHT) + ".weight"
              in expected}
    missing = expected.keys() - state_dict.keys()
    unexpected = state_dict.keys() - expected.keys() - scales
    wrong = [f"{k} {tuple(state_dict[k].shape)} (model: {tuple(expected[k])})"
             for k in sorted(expected.keys() & state_dict.keys()) if state_dict[k].shape != expected[k]]
    problems = [f"{len(keys)} {what}: {first_few(keys)}"
                for what, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                   ("keys with the wrong shape", wrong)) if keys]
    if problems:
        raise VaceError("The checkpoint does not match a Wan2.1 VACE model: " + "; ".join(problems) + ".")
