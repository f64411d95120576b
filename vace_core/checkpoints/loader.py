"""Loading a VACE transformer from any supported checkpoint, with the user's storage and compute dtypes.

The model is built on the meta device and takes its weights one tensor at a time from the files' memory maps
(`io.map_weights`): a tensor already in the storage dtype on the target device becomes the parameter itself
(no copy: the model holds the mapped file, see io's module doc for the map's lifetime); any other is
converted or moved alone (fp32 -> bf16, fp16 -> fp8, scaled fp8 dequantised, `.to("cuda")`) and the file
pages it was read from are dropped at once, so the host never holds a second copy of the weights. GGUF files'
quantized Linear weights stay ggml blocks (`ggml.QuantizedWeight`; on the CPU the gguf reader's map itself).
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .. import ops
from ..attention import BACKENDS
from ..ggml import QuantizedWeight
from ..settings import knob
from ..transformer import VaceTransformer
from .detect import check_keys, detect_config, merge_vace_module
from .finite import WeightsCheck, check_finite
from .fp8 import FP8_DTYPES, SCALE_WEIGHT, dequantize_tensor, drop_fp8_markers, is_scaled_fp8
from .gguf import is_quantized
from .io import MappedWeights, map_weights, read_config_json
from .keymap import to_official
from .save import convert_tensor


def official_weights(path: str | Path) -> MappedWeights:
    """`path`'s tensors (mapped, not copied) under official Wan keys without prefix, in the file's dtypes;
    keys the model never uses (a full ComfyUI checkpoint's VAE and text encoder, fp8 markers) are left out
    and so never read."""
    weights = map_weights(path)
    return MappedWeights(drop_fp8_markers(to_official(weights.tensors)), weights.maps)


DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16,
          "fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}
COMPUTE_DTYPES = {name: DTYPES[name] for name in ("bf16", "fp16", "fp32")}


@dataclass(frozen=True, kw_only=True)
class LoadSettings:
    """How the DiT and the VAE are loaded (Load VACE Model's and Load VACE VAE's inputs, the command line's flags);
    names map through DTYPES.
    "default" keeps the file's dtypes; "auto" lets the host choose (ComfyUI: bf16 where supported, else fp16,
    fp32 on CPU; the command line: bf16 on CUDA, fp32 on CPU)."""

    weight_dtype: str = knob("default", "How weights are stored in memory. default keeps the file's dtype (GGUF: "
                             "quantized, each layer dequantized when it runs); fp8 halves the memory of fp16 (each "
                             "layer is upcast when it runs). Another choice dequantizes a GGUF file to that dtype.",
                             choices=("default", *DTYPES))
    compute_dtype: str = knob("auto", "Activations' dtype. auto: bf16 where supported, else fp16, fp32 on CPU.",
                              choices=("auto", *COMPUTE_DTYPES))
    attention: str = knob("auto", "Attention kernel. auto uses flash-attn when installed, else PyTorch SDPA. sage "
                          "(SageAttention) is faster but approximate.", choices=BACKENDS)
    vae_dtype: str = knob("auto", "VAE precision. auto: ComfyUI's choice for the device (bf16 on recent GPUs, fp32 "
                          "on CPU, where bf16 convolutions are slow); the command line keeps the file's.",
                          choices=("auto", *COMPUTE_DTYPES))


def load_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A file (.safetensors/.pth/.pt/.ckpt/.bin), a shard index json or a folder (official or diffusers)
    -> official Wan keys without prefix, tensors in the file's dtypes (views of the files' maps). Scaled-fp8
    files keep each `X.scale_weight` next to its fp8 `X.weight` (fold them with `fp8.dequantize`)."""
    return official_weights(path).tensors


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def assign(model: nn.Module, key: str, value: Tensor, convert: Callable[[Tensor], Tensor] = lambda v: v,
           release: Callable[[Tensor], None] = lambda v: None) -> None:
    """Puts one mapped tensor into a model built on the meta device, as its parameter or buffer `key`.

    `convert(value)` is what the model holds (moved, cast, dequantised: one tensor's worth of new memory).
    When it returns `value` itself or a view of it (dtype and device already right), the model holds the
    mapped memory: no copy, the file stays mapped while the model lives. Otherwise `release(value)` (e.g.
    `MappedWeights.release`) drops the file pages the conversion read. Parameters are frozen (inference).
    Any mapped source works the same way (safetensors, pickles, GGUF): `io.map_bytes` maps a file and gives
    the FileMap whose `release` to pass; a quantized tensor kept as is just has an identity `convert`."""
    held = convert(value)
    if _memory(held) != _memory(value):
        release(_data(value))
    module_name, _, name = key.rpartition(".")
    module = model.get_submodule(module_name)
    if isinstance(held, QuantizedWeight):
        module.hold(held)  # an ops.QuantizedLinear takes the blocks as they are
    elif name in module._parameters:
        setattr(module, name, nn.Parameter(held, requires_grad=False))
    elif name in module._buffers:  # includes a cast layer's empty `scale_weight` slot
        setattr(module, name, held)
    else:
        raise KeyError(f"{key} is neither a parameter nor a buffer of {type(module).__name__}")


def _data(value: Tensor | QuantizedWeight) -> Tensor:
    return value.blocks if isinstance(value, QuantizedWeight) else value


def _memory(value: Tensor | QuantizedWeight) -> tuple:
    """Where a tensor's memory lives: equal for a tensor and the views of it."""
    data = _data(value)
    return data.device, data.untyped_storage().data_ptr()


def storage_converter(state_dict: Mapping[str, Tensor], storage_dtype: torch.dtype | None, keep_scales: bool,
                      fallback: torch.dtype, device: torch.device, keep_quantized: set[str] = frozenset(),
                      unchecked: list | None = None) -> tuple[Callable[[str, Tensor], Tensor], set]:
    """(convert, dropped): convert(key, file tensor) is the tensor the model holds, made on `device`. A tensor
    it converts or moves is checked for NaN/inf at once (on the GPU, or from the map pages the conversion just
    read: never a copy of them); one the model holds as the file's map itself is appended to `unchecked` as
    (key, tensor) for a `finite.WeightsCheck` (None: checked at once too). None storage keeps the file's dtypes.
    Scaled fp8 stays fp8 with its scales when the layers can apply them and no other storage is asked for;
    otherwise it is dequantised (to `storage_dtype`, or `fallback` = the compute dtype) and `dropped` names the
    scales, folded into their weights. GGUF blocks of the keys in `keep_quantized` stay blocks (checked at once);
    other GGUF tensors are dequantized to float32 (or `storage_dtype`)."""
    file_fp8 = {v.dtype for v in state_dict.values() if not isinstance(v, QuantizedWeight) and v.dtype in FP8_DTYPES}
    dequant = is_scaled_fp8(state_dict) and not (keep_scales and storage_dtype in (None, *file_fp8))
    as_float = torch.float32 if storage_dtype in FP8_DTYPES else storage_dtype or fallback

    def convert(key: str, value: Tensor) -> Tensor:
        if isinstance(value, QuantizedWeight):
            return _quantized(key, value, key in keep_quantized, storage_dtype, device, unchecked)
        held = moved = value.to(device)  # no copy when already there
        if dequant:
            held = dequantize_tensor(key, held, state_dict, as_float)
        held = convert_tensor(key, held, storage_dtype)
        if unchecked is not None and _memory(held) == _memory(value):
            unchecked.append((key, value))
        else:
            check_finite(key, moved)
        return held

    return convert, {k for k in state_dict if dequant and k.endswith(SCALE_WEIGHT)}


def _quantized(key: str, value: QuantizedWeight, keep: bool, storage_dtype, device,
               unchecked: list | None) -> Tensor | QuantizedWeight:
    """A GGUF tensor as the model holds it: its blocks on `device` (no copy on the CPU: checked later with the
    other mapped tensors when `unchecked` collects them), or dequantized."""
    moved = value.to(device)
    if keep:
        if unchecked is not None and _memory(moved) == _memory(value):
            unchecked.append((key, value))
        else:
            check_finite(key, moved)
        return moved
    value = moved.dequantize()
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
    Weights come from the files' maps one tensor at a time (the module doc): on the CPU in the file's dtype
    the model holds the mapped files themselves. A module + base merge takes each key from one file (the
    module's win); the base's replaced keys are never read.
    NaN/inf: the weights the model holds as the map are checked in the background (`model.weights_check`, a
    finite.WeightsCheck): the load reads none of their pages; `model.weights_checked()` waits for the check and
    raises its VaceError naming the tensor (the sampler calls it before its first step, every call before its
    first output). Converted or moved tensors are checked here, before the load returns.
    """
    weights = official_weights(path)
    config_json = read_config_json(path)
    if base is not None:
        base_weights = official_weights(base)
        weights = MappedWeights(merge_vace_module(base_weights.tensors, weights.tensors),
                                base_weights.maps + weights.maps)
        config_json = config_json or read_config_json(base)
    state_dict = weights.tensors
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
    unchecked = []
    convert, dropped = storage_converter(state_dict, storage_dtype, keep_scales, compute_dtype, device,
                                         quantized_linears(model), unchecked)
    check_keys({k: v.shape for k, v in model.state_dict().items()}, state_dict)
    for key, value in state_dict.items():
        if key not in dropped:
            assign(model, key, value, lambda v, k=key: convert(k, v), weights.release)
    model.eval()
    model.compute_dtype = compute_dtype
    model.weights_check = WeightsCheck(unchecked)
    return model
