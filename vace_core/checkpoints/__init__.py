"""VACE transformer checkpoints: every on-disk layout, config detection from the weights, clear errors.

- `load_state_dict(path)`: any file/folder layout -> official Wan keys.
- `detect_config(state_dict, ...)`: the VaceConfig the weights describe (or a VaceError saying what is wrong).
- `load_vace_model(path, base=None, ...)`: a ready VaceTransformer (VACE checkpoint, or module + T2V base).
- `save_checkpoint(state_dict, path, layout, dtype=None, ...)`: write any layout (conversion, fixtures).
"""

from .detect import check_keys, check_wan_vace, detect_config, merge_vace_module
from .fp8 import dequantize
from .keymap import diffusers_to_official, official_to_diffusers, split_vace_module, to_official
from .loader import COMPUTE_DTYPES, DTYPES, LoadSettings, load_state_dict, load_vace_model
from .save import LAYOUTS, save_checkpoint

__all__ = [
    "COMPUTE_DTYPES",
    "DTYPES",
    "LAYOUTS",
    "LoadSettings",
    "check_keys",
    "check_wan_vace",
    "dequantize",
    "detect_config",
    "diffusers_to_official",
    "load_state_dict",
    "load_vace_model",
    "merge_vace_module",
    "official_to_diffusers",
    "save_checkpoint",
    "split_vace_module",
    "to_official",
]
