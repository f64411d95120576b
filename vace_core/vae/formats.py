"""Wan2.1 VAE files: the official `Wan2.1_VAE.pth`, ComfyUI's `wan_2.1_vae.safetensors` (same keys), and
diffusers' `AutoencoderKLWan` (folder, pipeline folder or single file; its own key names).

The format is told from the keys, the shape from the weights; file names are never trusted.
"""

import re
from pathlib import Path

import torch
from torch import Tensor, nn

from ..checkpoints.finite import check_finite
from ..checkpoints.io import read_weights
from ..errors import VaceError
from .model import WanVAE

# Full checkpoints (ComfyUI's all-in-one files) hold the VAE under a prefix.
PREFIXES = ("first_stage_model.", "vae.")
# diffusers -> official, applied in order; `{per_level}` is the official flat index step of a decoder level.
TOP_LEVEL = [
    (r"^quant_conv\.", "conv1."),
    (r"^post_quant_conv\.", "conv2."),
    (r"^(encoder|decoder)\.conv_in\.", r"\1.conv1."),
    (r"^(encoder|decoder)\.norm_out\.", r"\1.head.0."),
    (r"^(encoder|decoder)\.conv_out\.", r"\1.head.2."),
    (r"\.mid_block\.resnets\.0\.", ".middle.0."),
    (r"\.mid_block\.attentions\.0\.", ".middle.1."),
    (r"\.mid_block\.resnets\.1\.", ".middle.2."),
    (r"^encoder\.down_blocks\.", "encoder.downsamples."),
]
# inside a residual block: diffusers names its layers, the official code indexes an nn.Sequential
IN_RESIDUAL = {"norm1": "residual.0", "conv1": "residual.2", "norm2": "residual.3", "conv2": "residual.6",
               "conv_shortcut": "shortcut"}
RESIDUAL_KEY = re.compile(r"^(.*\.(?:middle|downsamples|upsamples)\.\d+\.)(\w+)\.(\w+)$")
UP_BLOCK_KEY = re.compile(r"^decoder\.up_blocks\.(\d+)\.(resnets\.(\d+)|upsamplers\.0)\.")


def diffusers_to_official(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename diffusers `AutoencoderKLWan` keys to the official Wan2.1 layout (the inverse of diffusers'
    `convert_wan_vae_to_diffusers`, for any depth and number of residual blocks)."""
    resnets_per_level = 1 + max(int(m[3]) for k in state_dict if (m := UP_BLOCK_KEY.match(k)) and m[3])
    per_level = resnets_per_level + 1  # the official decoder lists each level's resnets, then its upsampler

    def up_block(m: re.Match) -> str:
        offset = int(m[3]) if m[3] else resnets_per_level
        return f"decoder.upsamples.{int(m[1]) * per_level + offset}."

    def rename(key: str) -> str:
        for pattern, repl in TOP_LEVEL:
            key = re.sub(pattern, repl, key)
        key = UP_BLOCK_KEY.sub(up_block, key)
        m = RESIDUAL_KEY.match(key)
        return f"{m[1]}{IN_RESIDUAL[m[2]]}.{m[3]}" if m and m[2] in IN_RESIDUAL else key

    return {rename(k): v for k, v in state_dict.items()}


def vae_config(state_dict: dict[str, Tensor]) -> dict:
    """WanVAE constructor arguments read from official-layout weights."""
    conv_in = state_dict["encoder.conv1.weight"]
    if conv_in.shape[1] != 3:
        raise VaceError(f"This VAE's encoder takes {conv_in.shape[1]} input channels, not 3 (RGB): it is not the "
                        "Wan2.1 VAE (the Wan2.2 VAE takes 12). VACE needs Wan2.1's `wan_2.1_vae.safetensors`.")
    dim = conv_in.shape[0]
    levels: list[list[int]] = [[]]  # out channels of each residual block, per level
    temporal = []
    index = sorted({int(k.split(".")[2]) for k in state_dict if k.startswith("encoder.downsamples.")})
    for i in index:
        key = f"encoder.downsamples.{i}"
        if f"{key}.resample.1.weight" in state_dict:
            temporal.append(f"{key}.time_conv.weight" in state_dict)
            levels.append([])
        else:
            levels[-1].append(state_dict[f"{key}.residual.2.weight"].shape[0])
    return dict(dim=dim, z_dim=state_dict["conv2.weight"].shape[0], dim_mult=tuple(c[0] // dim for c in levels),
                num_res_blocks=len(levels[0]), temporal_downsample=tuple(temporal))


def official_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read any supported file or folder and return its weights under official key names."""
    path = Path(path)
    if (path / "vae").is_dir():  # a diffusers pipeline folder
        path = path / "vae"
    state_dict = read_weights(path)
    for prefix in PREFIXES:
        if any(k.startswith(prefix) for k in state_dict):
            state_dict = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    conv_in = state_dict.get("encoder.conv_in.weight", state_dict.get("encoder.conv1.weight"))
    if conv_in is not None and conv_in.ndim != 5:
        raise VaceError(f"{path.name} is an image VAE (2D convolutions: SD / SDXL / Flux and the like), not the "
                        "Wan2.1 video VAE. VACE needs `wan_2.1_vae.safetensors` (or the official Wan2.1_VAE.pth).")
    if "encoder.conv_in.weight" in state_dict:
        state_dict = diffusers_to_official(state_dict)
    if "encoder.conv1.weight" not in state_dict or "decoder.conv1.weight" not in state_dict:
        raise VaceError(f"{path} is not a Wan2.1 VAE (no encoder/decoder weights; first keys: "
                        f"{list(state_dict)[:4]}). Load `wan_2.1_vae.safetensors` or `Wan2.1_VAE.pth`.")
    return state_dict


def load_vae(path: str | Path, dtype: torch.dtype | None = None, device: torch.device | str | None = None,
             operations=nn) -> WanVAE:
    """A WanVAE from a file or folder; dtype None keeps the file's. `operations` as in ComfyUI (comfy.ops)."""
    state_dict = official_state_dict(path)
    for key, value in state_dict.items():
        check_finite(key, value)
    with torch.device("meta"):  # no init work: every weight comes from the file
        vae = WanVAE(**vae_config(state_dict), operations=operations)
    try:
        vae.load_state_dict(state_dict, strict=True, assign=True)
    except RuntimeError as e:
        raise VaceError(f"{path}: the weights do not match a Wan2.1 VAE of the shape they imply "
                        f"({vae.config}): {str(e)[:500]}") from e
    return vae.to(device=device, dtype=dtype or state_dict["conv2.weight"].dtype).eval()
