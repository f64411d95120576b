"""Writing a VACE transformer in every layout the loader reads (conversion for users, fixtures for tests).

Layouts:
- `official`: one safetensors file, official Wan keys, no prefix. ComfyUI's repackaged
  `diffusion_models/*.safetensors` files are exactly this layout too.
- `official_sharded`: a folder of `diffusion_pytorch_model-0000N-of-0000M.safetensors` shards with
  `diffusion_pytorch_model.safetensors.index.json` (and an official `config.json` when a config is known).
- `pth`: a pickled state dict (official keys), as some official releases ship.
- `comfy`: one safetensors file with every key under `model.diffusion_model.` (ComfyUI's checkpoint saves).
- `diffusers`: a folder with diffusers' `config.json` and `diffusion_pytorch_model.safetensors` (sharded
  beyond `max_shard_bytes`), loadable by `WanVACETransformer3DModel.from_pretrained`.
- `diffusers_single`: one safetensors file with diffusers keys.
- `vace_module`: one safetensors file with only the context blocks and `vace_patch_embedding`, to merge
  onto a T2V base.
`dtype` converts floating tensors (fp8 too); `scaled=True` with an fp8 dtype writes ComfyUI's scaled fp8.
"""

import json
from dataclasses import asdict
from pathlib import Path

import torch
from torch import Tensor

from ..config import VaceConfig
from ..errors import VaceError
from ..outputs import atomic_output, save_safetensors
from .detect import detect_config
from .fp8 import FP8_DTYPES, dequantize, drop_fp8_markers, is_scaled_fp8, quantize_scaled
from .keymap import COMFY_PREFIX, is_vace_module_key, official_to_diffusers, to_official

LAYOUTS = ("official", "official_sharded", "pth", "comfy", "diffusers", "diffusers_single", "vace_module")
WEIGHTS_NAME = "diffusion_pytorch_model"
SAFETENSORS_METADATA = {"format": "pt"}  # what transformers/diffusers expect in the header


def convert_tensor(key: str, value: Tensor, dtype: torch.dtype | None) -> Tensor:
    """A floating tensor to `dtype` (None keeps it). fp8 applies to weight matrices only (Linear and Conv3d
    weights): norms, biases and modulation keep their precision, as in ComfyUI's fp8 files."""
    if dtype is None or not value.is_floating_point():
        return value
    if dtype in FP8_DTYPES and not (key.endswith(".weight") and value.ndim >= 2):
        return value
    return value.to(dtype)


def convert_dtype(state_dict: dict[str, Tensor], dtype: torch.dtype | None, scaled: bool) -> dict[str, Tensor]:
    if scaled and dtype not in FP8_DTYPES:
        raise VaceError(f"scaled=True needs an fp8 dtype ({FP8_DTYPES}), got {dtype}")
    if dtype is None:
        return state_dict
    if is_scaled_fp8(state_dict):  # re-quantise from the true weights, never from fp8 values twice scaled
        state_dict = dequantize(drop_fp8_markers(state_dict), torch.float32 if dtype in FP8_DTYPES else dtype)
    if scaled:
        return quantize_scaled(state_dict, dtype)
    return {k: convert_tensor(k, v, dtype) for k, v in state_dict.items()}


def _save_safetensors(state_dict: dict[str, Tensor], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors({k: v.contiguous() for k, v in state_dict.items()}, path, SAFETENSORS_METADATA)


def _nbytes(state_dict: dict[str, Tensor]) -> int:
    return sum(v.numel() * v.element_size() for v in state_dict.values())


def _save_sharded(state_dict: dict[str, Tensor], folder: Path, max_shard_bytes: int) -> None:
    """Shards filled in key order up to `max_shard_bytes`, plus the `weight_map` index."""
    shards: list[dict[str, Tensor]] = [{}]
    size = 0
    for key, value in state_dict.items():
        nbytes = value.numel() * value.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = value
        size += nbytes
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        name = f"{WEIGHTS_NAME}-{i:05d}-of-{len(shards):05d}.safetensors"
        _save_safetensors(shard, folder / name)
        weight_map |= dict.fromkeys(shard, name)
    index = {"metadata": {"total_size": _nbytes(state_dict)}, "weight_map": weight_map}
    (folder / f"{WEIGHTS_NAME}.safetensors.index.json").write_text(json.dumps(index, indent=2))


def official_config_json(config: VaceConfig) -> dict:
    """config.json as the official Wan2.1-VACE releases write it."""
    return {"_class_name": "VaceWanModel", "model_type": "t2v"} | asdict(config) | {
        "vace_layers": list(config.vace_layers), "patch_size": list(config.patch_size)}


def diffusers_config_json(config: VaceConfig) -> dict:
    """config.json of diffusers' WanVACETransformer3DModel."""
    return {
        "_class_name": "WanVACETransformer3DModel",
        "patch_size": list(config.patch_size),
        "num_attention_heads": config.num_heads,
        "attention_head_dim": config.head_dim,
        "in_channels": config.in_dim,
        "out_channels": config.out_dim,
        "text_dim": config.text_dim,
        "freq_dim": config.freq_dim,
        "ffn_dim": config.ffn_dim,
        "num_layers": config.num_layers,
        "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads",
        "eps": config.eps,
        "image_dim": None,
        "added_kv_proj_dim": None,
        "rope_max_seq_len": 1024,
        "pos_embed_seq_len": None,
        "vace_layers": list(config.vace_layers),
        "vace_in_channels": config.vace_in_dim,
    }


def _write(state_dict: dict[str, Tensor], path: Path, layout: str, config: VaceConfig | None,
           max_shard_bytes: int) -> None:
    if layout == "official":
        _save_safetensors(state_dict, path)
    elif layout == "official_sharded":
        _save_sharded(state_dict, path, max_shard_bytes)
        if config is not None:
            (path / "config.json").write_text(json.dumps(official_config_json(config), indent=2))
    elif layout == "pth":
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state_dict, path)
    elif layout == "comfy":
        _save_safetensors({COMFY_PREFIX + k: v for k, v in state_dict.items()}, path)
    elif layout == "diffusers":
        config = config or detect_config(state_dict)
        state_dict = official_to_diffusers(state_dict)
        if _nbytes(state_dict) > max_shard_bytes:
            _save_sharded(state_dict, path, max_shard_bytes)
        else:
            _save_safetensors(state_dict, path / f"{WEIGHTS_NAME}.safetensors")
        (path / "config.json").write_text(json.dumps(diffusers_config_json(config), indent=2))
    elif layout == "diffusers_single":
        _save_safetensors(official_to_diffusers(state_dict), path)
    elif layout == "vace_module":
        _save_safetensors({k: v for k, v in state_dict.items() if is_vace_module_key(k)}, path)


def save_checkpoint(
    state_dict: dict[str, Tensor],
    path: str | Path,
    layout: str = "official",
    dtype: torch.dtype | None = None,
    *,
    scaled: bool = False,
    config: VaceConfig | None = None,
    max_shard_bytes: int = 5 * 2**30,
) -> Path:
    """Write `state_dict` (any key layout the loader reads) to `path`: a file, or a folder for the sharded
    and diffusers layouts. `config` (detected from the weights when needed and not given) goes into
    config.json. Returns `path`."""
    if layout not in LAYOUTS:
        raise VaceError(f"Unknown checkpoint layout {layout!r}: expected one of {LAYOUTS}")
    path = Path(path)
    state_dict = convert_dtype(to_official(state_dict), dtype, scaled)
    with atomic_output(path) as temp:  # written whole or not at all (disk full), with normal permissions
        _write(state_dict, temp, layout, config, max_shard_bytes)
    return path
