"""GGUF transformer files (city96's ComfyUI-GGUF format, as QuantStack and city96 publish Wan2.1/2.2 VACE).

Facts of the format as those files use it (read from ComfyUI-GGUF's loader and convert tools):
- tensors carry the official Wan names (sometimes under `model.diffusion_model.`); `general.architecture` is
  "wan" (absent in files written by other tools);
- ggml lists a tensor's dimensions fastest first, so the torch shape is the reverse; a tensor reshaped before
  quantization (to make rows whole blocks) has its torch shape under `comfy.gguf.orig_shape.<name>`;
- 1-D tensors, small tensors and `modulation` are kept F32; the 5-D patch-embedding convolutions are added as
  F32 by ComfyUI-GGUF's fix_5d_tensors tool.

Reading keeps the data where the file is: F32/F16/BF16 tensors are torch views of the reader's memory map, and
quantized tensors stay ggml blocks (`ggml.QuantizedWeight`, also mapped) for the layers to dequantize per call.
"""

import warnings
from collections import Counter
from pathlib import Path

import torch
from torch import Tensor

from ..errors import VaceError
from ..ggml import FORMATS, QuantizedWeight, check_qtype

WAN_ARCHITECTURES = (None, "wan")
TEXT_ARCHITECTURES = ("t5", "t5encoder", "umt5")
ORIG_SHAPE = "comfy.gguf.orig_shape."
FLOAT_VIEWS = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def _reader(path: Path):
    try:
        import gguf
    except ImportError:
        raise VaceError("Reading GGUF files needs the `gguf` package: pip install gguf (it is in the pack's "
                        "requirements.txt).") from None
    return gguf.GGUFReader(path, mode="c")  # copy-on-write: writable arrays (no torch warning), nothing written


def _string(reader, key: str) -> str | None:
    field = reader.get_field(key)
    return None if field is None else bytes(field.parts[field.data[-1]]).decode("utf-8")


def _orig_shape(reader, name: str) -> torch.Size | None:
    field = reader.get_field(ORIG_SHAPE + name)
    return None if field is None else torch.Size(int(field.parts[i][0]) for i in field.data)


def check_architecture(path: Path, arch: str | None) -> None:
    if arch in WAN_ARCHITECTURES:
        return
    what = "a text encoder (load it with ComfyUI-GGUF's CLIPLoaderGGUF, type wan)" if arch in TEXT_ARCHITECTURES \
        else "not a Wan transformer"
    raise VaceError(f"{path.name} holds a GGUF model of architecture {arch!r}, {what}. The VACE loader reads Wan2.1 / "
                    "Wan2.2 VACE transformers (architecture 'wan'), e.g. Wan2.1_14B_VACE-Q4_K_M.gguf.")


def _tensor(reader, tensor, path: Path) -> Tensor | QuantizedWeight:
    """One tensor of the file, kept in the file's memory map."""
    qtype = tensor.tensor_type.name
    shape = _orig_shape(reader, tensor.name) or torch.Size(int(n) for n in reversed(tensor.shape.tolist()))
    check_qtype(qtype, f"Tensor {tensor.name} of {path.name}")
    with warnings.catch_warnings():  # a read-only map would warn; the map is copy-on-write
        data = torch.from_numpy(tensor.data)
    if qtype in FLOAT_VIEWS:
        return data.view(torch.uint8).view(FLOAT_VIEWS[qtype]).reshape(shape)
    fmt = FORMATS[qtype]
    if shape.numel() * fmt.type_size != data.numel() * fmt.block_size:
        raise VaceError(f"Tensor {tensor.name} of {path.name} holds {data.numel()} bytes of {qtype}, not the "
                        f"{tuple(shape)} its header gives: the file is damaged. Download it again.")
    return QuantizedWeight(data, qtype, shape)


def read_gguf(path: Path) -> dict[str, Tensor | QuantizedWeight]:
    """A GGUF file -> {name: tensor or QuantizedWeight}, names as stored, data mapped from the file."""
    reader = _reader(path)
    check_architecture(path, _string(reader, "general.architecture"))
    return {t.name: _tensor(reader, t, path) for t in reader.tensors}


def is_quantized(state_dict) -> bool:
    return any(isinstance(v, QuantizedWeight) for v in state_dict.values())


def _size(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def storage_types(state_dict) -> str:
    """How the tensors are stored, e.g. 'Q4_K 400 tensors (7.90 GiB), float32 1021 tensors (210.3 MiB)', largest
    share first."""
    count, size = Counter(), Counter()
    for value in state_dict.values():
        name = value.qtype if isinstance(value, QuantizedWeight) else str(value.dtype).removeprefix("torch.")
        count[name] += 1
        size[name] += value.nbytes
    return ", ".join(f"{name} {count[name]} tensors ({_size(size[name])})" for name, _ in size.most_common())


def dequantize_all(state_dict, dtype: torch.dtype = torch.float32) -> dict[str, Tensor]:
    """Every QuantizedWeight as an ordinary tensor of `dtype` (for conversion to other formats)."""
    return {k: v.dequantize(dtype=dtype) if isinstance(v, QuantizedWeight) else v for k, v in state_dict.items()}
