"""GGUF files of a Wan state dict, written with the `gguf` package's own writer (tests and benchmarks only).

Per tensor, the rules of ComfyUI-GGUF's convert tool (tools/convert.py, ModelWan) and its fix_5d_tensors step:
1-D tensors, tensors of at most 1024 values and `modulation` stay F32; the 5-D patch embeddings are written as
F32 with their 5 dimensions; every other tensor gets the asked type, falling back to F16 when its rows are not
whole blocks. Types with a quantizer in gguf-py (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, BF16) are quantized by it; the
K-quants have none there, so their blocks are random bytes with float16 scales set to give values of about the
tensor's size (valid blocks of the type: the file then holds exactly what it says, only not a fit of the weights).
"""

from pathlib import Path

import gguf
import numpy as np
import torch

from vace_core.ggml import FORMATS

F32 = gguf.GGMLQuantizationType.F32
QUANTIZERS = ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "BF16", "F16", "F32")
# mean |sub-scale x integer| of random K blocks: the float16 scale that gives values of a wanted size
K_SPREAD = {"Q2_K": 11, "Q3_K": 32, "Q4_K": 236, "Q5_K": 488, "Q6_K": 1024}


def random_blocks(rows: int, cols: int, qtype: str, rng: np.random.Generator, size: float) -> np.ndarray:
    """(rows, cols) values of type `qtype` as random valid blocks: (rows, bytes per row) uint8, the float16 scales
    chosen so that the values are about `size`."""
    fmt = FORMATS[qtype]
    raw = rng.integers(0, 256, (rows * cols // fmt.block_size, fmt.type_size), dtype=np.uint8)
    for offset in fmt.scale_offsets:
        scale = rng.uniform(0.5, 1.5, (raw.shape[0], 1)) * size / K_SPREAD.get(qtype, 8)
        raw[:, offset:offset + 2] = scale.astype(np.float16).view(np.uint8)
    return raw.reshape(rows, -1)


def tensor_type(key: str, value: torch.Tensor, qtype: str) -> str:
    if value.ndim == 1 or value.numel() <= 1024 or ".modulation" in key or key == "head.modulation" \
            or value.ndim > 4:
        return "F32"
    return qtype if value.shape[-1] % FORMATS[qtype].block_size == 0 else "F16"


def encode(key: str, value: torch.Tensor, qtype: str, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """One tensor -> (the array the writer stores, its type)."""
    qtype = tensor_type(key, value, qtype)
    data = value.detach().float().numpy()
    if qtype in QUANTIZERS:
        return gguf.quants.quantize(data, gguf.GGMLQuantizationType[qtype]), qtype
    rows = data.reshape(-1, data.shape[-1])
    return random_blocks(*rows.shape, qtype, rng, float(np.abs(data).mean()) * 2).reshape(
        *data.shape[:-1], -1), qtype


def write_gguf(state_dict: dict[str, torch.Tensor], path: str | Path, qtype: str = "Q8_0", arch: str | None = "wan",
               prefix: str = "", seed: int = 0) -> Path:
    """The state dict as a GGUF file (tensor names `prefix + key`), as the files in circulation are laid out."""
    rng = np.random.default_rng(seed)
    return _write(((prefix + k, *encode(k, v, qtype, rng)) for k, v in state_dict.items()), path, arch)


def write_random_gguf(shapes: dict[str, torch.Size], path: str | Path, qtype: str, seed: int = 0) -> Path:
    """A model of these shapes as a GGUF file of type `qtype` without its weights ever existing in float32 (the
    quantized tensors are random blocks of values about 1/sqrt(fan-in)): real-size files for benchmarks."""
    rng = np.random.default_rng(seed)

    def tensors():
        for key, shape in shapes.items():
            stored = tensor_type(key, torch.empty(shape, device="meta"), qtype)
            if stored in FORMATS and FORMATS[stored].block_size > 1 and stored not in QUANTIZERS:
                rows = int(np.prod(shape[:-1]))
                yield key, random_blocks(rows, shape[-1], stored, rng, shape[-1] ** -0.5), stored
            else:
                values = torch.from_numpy(rng.standard_normal(tuple(shape), dtype=np.float32)) / shape[-1] ** 0.5
                yield (key, *encode(key, values, stored, rng))
    return _write(tensors(), path, "wan")


def _write(tensors, path: str | Path, arch: str | None) -> Path:
    """(name, array, type name) triples -> a GGUF file written by gguf-py's GGUFWriter."""
    writer = gguf.GGUFWriter(path=None, arch=arch or "x")
    if arch is None:  # files of other tools carry no architecture
        writer.kv_data[0].pop(gguf.Keys.General.ARCHITECTURE)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for name, data, stored in tensors:
        writer.add_tensor(name, data, raw_dtype=gguf.GGMLQuantizationType[stored])
    writer.write_header_to_file(path=Path(path))
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def read_numpy(path: str | Path) -> dict[str, torch.Tensor]:
    """The file's tensors dequantized by gguf-py's numpy code (the reference), torch shapes, float32."""
    out = {}
    for t in gguf.GGUFReader(path).tensors:
        values = gguf.quants.dequantize(t.data, t.tensor_type)
        out[t.name] = torch.from_numpy(np.array(values, dtype=np.float32)).reshape(
            tuple(int(n) for n in reversed(t.shape.tolist())))
    return out


def stored_types(path: str | Path) -> dict[str, str]:
    return {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors}
