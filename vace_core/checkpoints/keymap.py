"""Key names: prefix stripping and the diffusers <-> official Wan mapping.

Official Wan keys (DESIGN.md section 4) are the canonical form; everything else is converted to them.
diffusers renames modules (attn1/attn2, to_q, ffn.net.0.proj, scale_shift_table, proj_in/proj_out) and
swaps norm2/norm3 (official norm3 is the affine cross-attention norm, diffusers calls it norm2).
"""

import re

from torch import Tensor

# ComfyUI full checkpoints keep the DiT under this prefix next to VAE/text-encoder weights.
COMFY_PREFIX = "model.diffusion_model."
# Prefixes that wrap a whole DiT state dict: ComfyUI, Lightning, DDP, torch.compile, diffusers pipelines.
WRAPPER_PREFIXES = (COMFY_PREFIX, "diffusion_model.", "model.", "module.", "_orig_mod.", "transformer.")
SCALED_FP8_MARKER = "scaled_fp8"  # ComfyUI's marker key (an empty fp8 tensor) in scaled-fp8 files
VACE_MODULE_PREFIXES = ("vace_blocks.", "vace_patch_embedding.")

# official -> diffusers, for keys outside the blocks (prefix of the key, matched on dot boundaries)
TOP_LEVEL = {
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "time_projection.1": "condition_embedder.time_proj",
    "head.head": "proj_out",
    "head.modulation": "scale_shift_table",
    "img_emb.proj.0": "condition_embedder.image_embedder.norm1",  # I2V image embedder
    "img_emb.proj.1": "condition_embedder.image_embedder.ff.net.0.proj",
    "img_emb.proj.3": "condition_embedder.image_embedder.ff.net.2",
    "img_emb.proj.4": "condition_embedder.image_embedder.norm2",
}
# official -> diffusers, inside `blocks.N.` / `vace_blocks.N.`, applied part by part (self_attn.q -> attn1.to_q)
IN_BLOCK = {
    "modulation": "scale_shift_table",
    "self_attn": "attn1",
    "cross_attn": "attn2",
    "q": "to_q",
    "k": "to_k",
    "v": "to_v",
    "o": "to_out.0",
    "k_img": "add_k_proj",
    "v_img": "add_v_proj",
    "norm_k_img": "norm_added_k",
    "norm3": "norm2",
    "norm2": "norm3",
    "ffn.0": "ffn.net.0.proj",
    "ffn.2": "ffn.net.2",
    "before_proj": "proj_in",
    "after_proj": "proj_out",
}
BLOCK_KEY = re.compile(r"^((?:vace_)?blocks\.\d+\.)(.*)$")
DIFFUSERS_MARKERS = ("condition_embedder.", "scale_shift_table", ".attn1.", ".ffn.net.")


def _invert(table: dict[str, str]) -> dict[str, str]:
    return {v: k for k, v in table.items()}


def _rename(name: str, table: dict[str, str], recursive: bool) -> str:
    """Replace the longest table entry that is a dotted prefix of `name`; then the rest, if recursive."""
    for old in sorted(table, key=len, reverse=True):
        if name == old or name.startswith(old + "."):
            rest = name[len(old) + 1 :]
            if recursive and rest:
                rest = _rename(rest, table, recursive)
            return table[old] + ("." + rest if rest else "")
    return name


def _convert_key(key: str, top: dict[str, str], in_block: dict[str, str]) -> str:
    block = BLOCK_KEY.match(key)
    if block:
        return block[1] + _rename(block[2], in_block, recursive=True)
    return _rename(key, top, recursive=False)


def official_to_diffusers(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    return {_convert_key(k, TOP_LEVEL, IN_BLOCK): v for k, v in state_dict.items()}


def diffusers_to_official(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    return {_convert_key(k, _invert(TOP_LEVEL), _invert(IN_BLOCK)): v for k, v in state_dict.items()}


def is_diffusers(state_dict: dict[str, Tensor]) -> bool:
    return any(marker in key for key in state_dict for marker in DIFFUSERS_MARKERS)


def strip_prefixes(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Remove wrapper prefixes shared by every key; from a ComfyUI full checkpoint keep only the DiT."""
    if any(k.startswith(COMFY_PREFIX) for k in state_dict):
        state_dict = {k: v for k, v in state_dict.items() if k.startswith(COMFY_PREFIX) or k == SCALED_FP8_MARKER}
    while True:
        keys = [k for k in state_dict if k != SCALED_FP8_MARKER]
        prefix = next((p for p in WRAPPER_PREFIXES if keys and all(k.startswith(p) for k in keys)), None)
        if prefix is None:
            return state_dict
        state_dict = {k.removeprefix(prefix): v for k, v in state_dict.items()}


def to_official(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Any supported key layout -> official Wan keys without prefix."""
    state_dict = strip_prefixes(state_dict)
    return diffusers_to_official(state_dict) if is_diffusers(state_dict) else state_dict


def is_vace_module_key(key: str) -> bool:
    return key.startswith(VACE_MODULE_PREFIXES)


def split_vace_module(state_dict: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(T2V base, VACE module): the module holds the context blocks and `vace_patch_embedding`."""
    base = {k: v for k, v in state_dict.items() if not is_vace_module_key(k)}
    module = {k: v for k, v in state_dict.items() if is_vace_module_key(k)}
    return base, module


def official_to_diffusers_name(name: str) -> str:
    """One official module or parameter name -> its diffusers name (blocks.0.self_attn.q -> blocks.0.attn1.to_q)."""
    return _convert_key(name, TOP_LEVEL, IN_BLOCK)
