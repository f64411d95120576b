"""Reading checkpoint files without copying them: every tensor is a view of the file's memory map.

Layouts: a single .safetensors / .pth / .pt / .ckpt / .bin / .gguf file, a sharded `*.index.json` (official Wan and
diffusers both write `weight_map`), or a folder holding one of these (plus, optionally, `config.json`).

How a file is read. A safetensors file's header is parsed here (8-byte length, JSON of dtype / shape / byte
range per key, then the data section) and the whole file is mapped with `torch.UntypedStorage.from_file`
(a private, copy-on-write `mmap`): each tensor is a view of that map, made without reading its bytes. A zip
`.pth` (torch >= 1.6) is mapped the same way by `torch.load(mmap=True, weights_only=True)`; only a legacy
(pre-zip) pickle is read into memory. Pages are read from the page cache when a tensor is first touched, so
keys nobody uses are never read, and the resident pages belong to the file (reclaimable, shared with every
other process mapping it), not to this process's anonymous memory.

The map's lifetime. The map lives as long as any tensor viewing it (a model holding mapped weights keeps it;
no file handle stays open). Renaming or deleting the file while a model holds it is safe on Linux and macOS:
the map keeps the old contents (the inode) alive (Windows refuses to rename or delete a mapped file).
Overwriting the file in place (writing into the same inode rather than a new file + rename) is not: pages not
read yet would show the new bytes, and touching pages past a truncated end kills the process (SIGBUS). The
pack's own writers (`save_checkpoint`) and downloaders that write a temporary file and rename it are safe.
Writing into a mapped tensor (a LoRA merged in place) copies the touched pages into private memory: the file
never changes.
"""

import ctypes
import ctypes.util
import json
import math
import mmap
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
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
# safetensors' dtype names (the format's spec)
SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "I64": torch.int64, "I32": torch.int32,
    "I16": torch.int16, "I8": torch.int8, "U64": torch.uint64, "U32": torch.uint32, "U16": torch.uint16,
    "U8": torch.uint8, "BOOL": torch.bool, "C64": torch.complex64,
}
HEADER_LIMIT = 100 * 2**20  # safetensors' own bound on the JSON header
PAGE = mmap.PAGESIZE


def _madvise_dontneed(start: int, end: int) -> None:
    """Drops the whole pages in [start, end) from this process (they stay in the page cache)."""
    first, last = -(-start // PAGE) * PAGE, end // PAGE * PAGE
    if last > first and _LIBC is not None:
        _LIBC.madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), mmap.MADV_DONTNEED)


_LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if hasattr(mmap, "MADV_DONTNEED") else None


@dataclass
class FileMap:
    """One mapped file: [start, end) is memory of a private file map kept alive by `keep` (the map's storage,
    or the tensors of a mapped pickle) while this object lives."""

    path: Path
    start: int
    end: int
    keep: object = field(repr=False)

    def holds(self, tensor: Tensor) -> bool:
        ptr = tensor.data_ptr()
        return tensor.device.type == "cpu" and self.start <= ptr and ptr + tensor.nbytes <= self.end

    def release(self, tensor: Tensor) -> bool:
        """Drops the pages that only `tensor` (a view of this map) covers from this process's memory, once its
        values were copied elsewhere (converted, moved to the GPU): the host then holds at most one tensor of
        the file at a time. Safe while nothing wrote into the map (loading): a later read maps the pages again
        from the file. Returns whether the tensor is in this map."""
        if not self.holds(tensor):
            return False
        _madvise_dontneed(tensor.data_ptr(), tensor.data_ptr() + tensor.nbytes)
        return True


@dataclass
class MappedWeights:
    """A state dict read without copying: `tensors` view the memory maps in `maps` (one per file or shard)."""

    tensors: dict[str, Tensor]
    maps: list[FileMap]

    def release(self, tensor: Tensor) -> None:
        """FileMap.release through whichever map holds `tensor` (none: a tensor in ordinary memory, kept)."""
        for file_map in self.maps:
            if file_map.release(tensor):
                return

    def __or__(self, other: "MappedWeights") -> "MappedWeights":
        return MappedWeights(self.tensors | other.tensors, self.maps + other.maps)


def read_safetensors_header(path: Path) -> tuple[dict, int]:
    """(header without `__metadata__`, offset of the data section). Checks what a truncated or foreign file
    breaks: the header's length and JSON, each entry's dtype, shape and byte range, and that the data
    section holds every byte the header lists."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 0 < length <= min(HEADER_LIMIT, size - 8):
            raise ValueError(f"header length {length} does not fit the file's {size} bytes: not a safetensors "
                             "file, or truncated")
        header = json.loads(f.read(length))
    header.pop("__metadata__", None)
    data_start, data_len = 8 + length, size - 8 - length
    end = 0
    for key, entry in header.items():
        if entry["dtype"] not in SAFETENSORS_DTYPES:
            raise ValueError(f"tensor {key} has dtype {entry['dtype']}, which this loader does not read")
        dtype, shape, (begin, stop) = SAFETENSORS_DTYPES[entry["dtype"]], entry["shape"], entry["data_offsets"]
        if not 0 <= begin <= stop or stop - begin != math.prod(shape) * dtype.itemsize:
            raise ValueError(f"tensor {key}: byte range {begin}..{stop} does not hold {entry['dtype']} {shape}")
        end = max(end, stop)
    if end > data_len:
        raise ValueError(f"the header lists {end} bytes of tensors but the file holds {data_len}: truncated "
                         f"(expected {data_start + end} bytes, found {size})")
    return header, data_start


def map_bytes(path: Path) -> tuple[Tensor, FileMap]:
    """The whole file as a uint8 tensor over a private (copy-on-write) map, nothing read yet, and its FileMap.
    Any format whose tensors are byte ranges (safetensors here, GGUF) slices its tensors from it."""
    storage = torch.UntypedStorage.from_file(str(path), shared=False, nbytes=path.stat().st_size)
    start = storage.data_ptr()
    return torch.empty(0, dtype=torch.uint8).set_(storage), FileMap(path, start, start + storage.nbytes(), storage)


def map_safetensors(path: Path) -> MappedWeights:
    header, data_start = read_safetensors_header(path)
    whole, file_map = map_bytes(path)
    tensors = {}
    for key, entry in header.items():
        begin, stop = (data_start + offset for offset in entry["data_offsets"])
        tensors[key] = _view(whole[begin:stop], SAFETENSORS_DTYPES[entry["dtype"]], entry["shape"])
    return MappedWeights(tensors, [file_map])


def _view(raw: Tensor, dtype: torch.dtype, shape: list[int]) -> Tensor:
    """Bytes of the map as a tensor: a view when they sit at a multiple of the element size (every file the
    safetensors library writes), else a copy (a view there would be misaligned)."""
    if raw.storage_offset() % dtype.itemsize:
        raw = raw.clone()
    return raw.view(dtype).reshape(shape)


def map_pickle(path: Path) -> MappedWeights:
    """A zip pickle mapped by torch.load (tensors view one private map of the file); a legacy pickle read."""
    mapped = zipfile.is_zipfile(path)
    tensors = _unwrap(torch.load(path, map_location="cpu", weights_only=True, mmap=mapped))
    spans = [(t.data_ptr(), t.data_ptr() + t.nbytes) for t in tensors.values() if t.nbytes]
    if not mapped or not spans:
        return MappedWeights(tensors, [])
    return MappedWeights(tensors, [FileMap(path, min(s for s, _ in spans), max(e for _, e in spans),
                                           list(tensors.values()))])


def map_file(path: Path) -> MappedWeights:
    """One weights file, mapped. Corrupt or truncated files raise a VaceError naming it."""
    if not path.is_file():
        raise VaceError(f"Checkpoint file not found: {path}")
    try:
        if path.name.endswith(SAFETENSORS):
            return map_safetensors(path)
        if path.name.endswith(PICKLES):
            return map_pickle(path)
        if path.name.endswith(GGUF):
            return MappedWeights(read_gguf(path), [])  # the gguf reader maps the file itself
    except pickle.UnpicklingError:  # torch's own message suggests weights_only=False: never do that
        raise VaceError(
            f"Refusing to load {path}: the pickle holds more than tensors (objects that run code when loaded), so "
            "it is unsafe or not a weights file. Use the model's .safetensors release instead."
        ) from None
    except VaceError:
        raise
    except Exception as e:  # JSON/pickle/zip/mmap errors differ by version: all mean a broken file
        raise VaceError(
            f"Could not read checkpoint file {path} ({type(e).__name__}: {e}). "
            "The file is corrupt, incomplete (an interrupted download?) or not a weights file: download it again."
        ) from e
    raise VaceError(f"Unsupported checkpoint file type {path.name!r}: expected {SAFETENSORS + PICKLES + GGUF}")


def read_file(path: Path) -> dict[str, Tensor]:
    """One weights file -> {key: tensor} on the CPU, viewing the file's map (see the module doc)."""
    return map_file(path).tensors


def _unwrap(obj) -> dict[str, Tensor]:
    while isinstance(obj, dict):
        tensors = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
        if tensors:
            return tensors
        obj = next((obj[k] for k in PICKLE_WRAPPERS if k in obj), None)
    raise VaceError("The pickle holds no tensors (expected a state dict of the Wan transformer)")


def map_index(path: Path) -> MappedWeights:
    """A sharded checkpoint: `weight_map` names, for each key, the shard file next to the index."""
    try:
        weight_map = json.loads(path.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise VaceError(f"Could not read shard index {path} ({type(e).__name__}: {e})") from e
    weights = MappedWeights({}, [])
    for shard in sorted(set(weight_map.values())):
        shard_path = path.parent / shard
        if not shard_path.is_file():
            raise VaceError(f"Shard {shard_path} listed in {path.name} is missing: download all shards.")
        weights |= map_file(shard_path)
    return weights


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


def map_weights(path: str | Path) -> MappedWeights:
    """File, shard index or folder -> its tensors (keys as stored) viewing the files' maps, and the maps."""
    path = weights_path(path)
    return map_index(path) if path.name.endswith(".index.json") else map_file(path)


def read_weights(path: str | Path) -> dict[str, Tensor]:
    """File, shard index or folder -> flat state dict, keys as stored, tensors viewing the files' maps."""
    return map_weights(path).tensors


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
