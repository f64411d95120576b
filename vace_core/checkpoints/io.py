"""Reading checkpoint files into one flat state dict; any failure names the file.

Layouts: a single .safetensors / .pth / .pt / .ckpt / .bin / .gguf file, a sharded `*.index.json` (official Wan and
diffusers both write `weight_map`), or a folder holding one of these (plus, optionally, `config.json`).
"""

import json
import pickle
import zipfile
from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor

from ..errors import VaceError
from .gguf import read_gguf

SAFETENSORS = (".safetensors", ".sft")
PICKLES = (".pth", ".pt", ".ckpt", ".bin")
GGUF = (".gguf",)  # quantized tensors come back as ggml.QuantizedWeight (see checkpoints/gguf.py)
# Official Wan and diffusers folders use these names; other folders must hold exactly one weights file.
FOLDER_FILES = (
    "diffusion_pytorch_model.safetensors.index.json",
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.bin",
)
# Training scripts wrap the weights in a dict under one of these keys.
PICKLE_WRAPPERS = ("state_dict", "model", "module", "ema")


def check_finite(key: str, value: Tensor) -> None:
    """Refuses a tensor holding NaN or inf: one float32 sum (NaN and inf survive a sum), cheaper than an
    isfinite mask, done while the tensor is being copied anyway."""
    if value.is_floating_point() and not torch.isfinite(torch.sum(value, dtype=torch.float32)):
        raise VaceError(f"the checkpoint's tensor {key} holds NaN or infinite values: the file is damaged (or was "
                        "saved from a diverged training run). Download it again.")


def read_file(path: Path) -> dict[str, Tensor]:
    """One weights file -> {key: tensor} on the CPU (GGUF: or QuantizedWeight). Corrupt or truncated files raise a
    VaceError naming it."""
    if not path.is_file():
        raise VaceError(f"Checkpoint file not found: {path}")
    try:
        if path.name.endswith(SAFETENSORS):
            with safe_open(str(path), framework="pt", device="cpu") as f:
                return {k: f.get_tensor(k) for k in f.keys()}
        if path.name.endswith(PICKLES):
            # mmap keeps a 69 GB pickle out of RAM; only the zip format (torch >= 1.6) supports it
            mmap = zipfile.is_zipfile(path)
            return _unwrap(torch.load(path, map_location="cpu", weights_only=True, mmap=mmap))
        if path.name.endswith(GGUF):
            return read_gguf(path)
    except VaceError:
        raise
    except pickle.UnpicklingError:  # torch's own message suggests weights_only=False: never do that
        raise VaceError(
            f"Refusing to load {path}: the pickle holds more than tensors (objects that run code when loaded), so "
            "it is unsafe or not a weights file. Use the model's .safetensors release instead."
        ) from None
    except Exception as e:  # safetensors/pickle/zip errors differ by version: all mean a broken file
        raise VaceError(
            f"Could not read checkpoint file {path} ({type(e).__name__}: {e}). "
            "The file is corrupt, incomplete (an interrupted download?) or not a weights file: download it again."
        ) from e
    raise VaceError(f"Unsupported checkpoint file type {path.name!r}: expected {SAFETENSORS + PICKLES + GGUF}")


def _unwrap(obj) -> dict[str, Tensor]:
    while isinstance(obj, dict):
        tensors = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
        if tensors:
            return tensors
        obj = next((obj[k] for k in PICKLE_WRAPPERS if k in obj), None)
    raise VaceError("The pickle holds no tensors (expected a state dict of the Wan transformer)")


def read_index(path: Path) -> dict[str, Tensor]:
    """A sharded checkpoint: `weight_map` names, for each key, the shard file next to the index."""
    try:
        weight_map = json.loads(path.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise VaceError(f"Could not read shard index {path} ({type(e).__name__}: {e})") from e
    state_dict = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = path.parent / shard
        if not shard_path.is_file():
            raise VaceError(f"Shard {shard_path} listed in {path.name} is missing: download all shards.")
        state_dict.update(read_file(shard_path))
    return state_dict


def weights_path(path: str | Path) -> Path:
    """The file to read for `path`: the file itself, or the weights file of a folder."""
    path = Path(path)
    if not path.is_dir():
        return path
    for name in FOLDER_FILES:
        if (path / name).is_file():
            return path / name
    candidates = [p for p in sorted(path.iterdir()) if p.name.endswith(SAFETENSORS + PICKLES + GGUF + (".index.json",))]
    indexes = [p for p in candidates if p.name.endswith(".index.json")]
    if len(indexes) == 1:
        return indexes[0]
    if len(candidates) == 1:
        return candidates[0]
    raise VaceError(
        f"Folder {path} holds {len(candidates)} weights files ({[p.name for p in candidates][:5]}): "
        "expected one file, or shards with an .index.json. Pass the file itself."
    )


def read_weights(path: str | Path) -> dict[str, Tensor]:
    """File, shard index or folder -> flat state dict, keys as stored."""
    path = weights_path(path)
    return read_index(path) if path.name.endswith(".index.json") else read_file(path)


def read_config_json(path: str | Path) -> dict | None:
    """`config.json` of a model folder (official Wan or diffusers), or None. Single files carry no config."""
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    config = folder / "config.json"
    if not (Path(path).is_dir() or Path(path).name.endswith(".index.json")) or not config.is_file():
        return None
    try:
        return json.loads(config.read_text())
    except ValueError as e:
        raise VaceError(f"Could not parse {config}: {e}") from e
