"""Loading a VACE transformer from any supported checkpoint, with the user's storage and compute dtypes."""

from pathlib import Path

import torch
from torch import Tensor, nn

from .. import ops
from ..ggml import QuantizedWeight, scales_finite
from ..transformer import VaceTransformer
from .detect import check_keys, detect_config, merge_vace_module
from .fp8 import FP8_DTYPES, SCALE_WEIGHT, dequantize_tensor, drop_fp8_markers, is_scaled_fp8
from .gguf import is_quantized
from .io import check_finite, read_config_json, read_weights
from .keymap import to_official
from .save import convert_tensor


def load_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A file (.safetensors/.pth/.pt/.ckpt/.bin), a shard index json or a folder (official or diffusers)
    -> official Wan keys without prefix, tensors in the file's dtypes. Scaled-fp8 files keep each
    `X.scale_weight` next to its fp8 `X.weight` (fold them with `fp8.dequantize`)."""
    return drop_fp8_markers(to_official(read_weights(path)))


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def to_storage(state_dict: dict[str, Tensor], storage_dtype: torch.dtype | None, keep_scales: bool,
               fallback: torch.dtype, device: torch.device,
               keep_quantized: set[str] = frozenset()) -> dict[str, Tensor]:
    """The tensors the model will hold, made one at a time on `device` (so a 69 GB fp32 file converted to
    bf16 never exists whole in memory, and the model owns aligned memory, not views of the file).
    None keeps the file's dtypes. Scaled fp8 stays fp8 with its scales when the layers can apply them and
    no other storage is asked for; otherwise it is dequantised (to `storage_dtype`, or `fallback` = the
    compute dtype). GGUF blocks of the keys in `keep_quantized` stay blocks (on the CPU, the file's memory map
    itself); other GGUF tensors are dequantized to float32 (or `storage_dtype`)."""
    file_fp8 = {v.dtype for v in state_dict.values() if not isinstance(v, QuantizedWeight) and v.dtype in FP8_DTYPES}
    dequant = is_scaled_fp8(state_dict) and not (keep_scales and storage_dtype in (None, *file_fp8))
    as_float = torch.float32 if storage_dtype in FP8_DTYPES else storage_dtype or fallback
    out = {}
    for key, value in state_dict.items():
        if dequant and key.endswith(SCALE_WEIGHT):
            continue
        if isinstance(value, QuantizedWeight):
            out[key] = _quantized(key, value, key in keep_quantized, storage_dtype, device)
            continue
        value = value.to(device, copy=True)
        check_finite(key, value)
        if dequant:
            value = dequantize_tensor(key, value, state_dict, as_float)
        out[key] = convert_tensor(key, value, storage_dtype)
    return out


def _quantized(key: str, value: QuantizedWeight, keep: bool, storage_dtype, device) -> Tensor | QuantizedWeight:
    """A GGUF tensor as the model holds it: its blocks on `device` (no copy on the CPU), or dequantized."""
    value = value.to(device)
    if keep:
        if not scales_finite(value.blocks, value.qtype):
            check_finite(key, value.dequantize())  # raises, naming the tensor
        return value
    value = value.dequantize()
    check_finite(key, value)
    return convert_tensor(key, value, storage_dtype)


def quantized_linears(model: nn.Module) -> set[str]:
    """The weights that stay GGUF blocks: those of the Linear layers (the bulk of the model); convolutions,
    norms and modulation tables are small and get dequantized at load."""
    return {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, ops.QuantizedLinear)}


def load_vace_model(
    path: str | Path,
    base: str | Path | None = None,
    *,
    storage_dtype: torch.dtype | None = None,
    compute_dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    operations=None,
    attention_backend: str = "auto",
    num_heads: int | None = None,
    vace_layers: list[int] | tuple[int, ...] | None = None,
) -> VaceTransformer:
    """A ready VaceTransformer (eval mode, no grads) from a VACE checkpoint, or from a VACE module file
    (`path`) merged onto its Wan2.1 T2V base (`base`).

    storage_dtype: how weights are held (default: as in the file; fp8 types keep Linear/Conv weights in fp8; a GGUF
    file's quantized Linear weights stay quantized, each dequantized when its layer runs).
    compute_dtype: the activations' dtype (default bf16 on CUDA, fp32 on CPU), stored as
    `model.compute_dtype` for the sampler. operations: layer namespace (default `vace_core.ops.cast`, which
    upcasts each weight when its layer runs; ComfyUI passes `comfy.ops`; plain `torch.nn` gets fp32 weights
    and needs fp32 compute). num_heads / vace_layers: only for shapes the weights cannot tell (head size
    other than 128, context blocks not evenly spaced) when no config.json comes with the weights.
    The model is built on the meta device and takes the loaded tensors (each copied once onto `device`,
    converted there) as its parameters, so weights are never allocated twice.
    """
    state_dict = load_state_dict(path)
    config_json = read_config_json(path)
    if base is not None:
        state_dict = merge_vace_module(load_state_dict(base), state_dict)
        config_json = config_json or read_config_json(base)
    config = detect_config(state_dict, num_heads, vace_layers, config_json)

    device = torch.device(device) if device is not None else default_device()
    compute_dtype = compute_dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    operations = operations or ops.cast
    if operations is nn:  # plain torch.nn layers cannot cast: they need the fp32 weights the model runs
        storage_dtype = torch.float32
    keep_scales = operations is ops.cast
    if storage_dtype is None and is_quantized(state_dict):  # GGUF: Linear weights stay quantized
        operations = ops.quantized(operations)

    model = VaceTransformer(config, operations, device="meta", attention_backend=attention_backend)
    model.requires_grad_(False)
    state_dict = to_storage(state_dict, storage_dtype, keep_scales, compute_dtype, device, quantized_linears(model))
    check_keys({k: v.shape for k, v in model.state_dict().items()}, state_dict)
    model.load_state_dict(state_dict, strict=True, assign=True)
    model.eval()
    model.compute_dtype = compute_dtype
    return model
