"""ggml block formats (the quantizations of GGUF files) and their dequantization in torch.

A quantized tensor is stored as blocks of `block_size` values in `type_size` bytes, row-major over the tensor's
logical shape (ggml's first dimension is the row, so GGUF lists shapes reversed). Layouts, from ggml's
`block_*` structs (d, dmin, m: float16 scales; q*: packed integers):
  Q4_0  32 values, 18 B: d | qs[16] (value j: low nibble of qs[j], j+16: its high nibble)      y = d * (q - 8)
  Q4_1  32 values, 20 B: d | m | qs[16]                                                          y = d * q + m
  Q5_0  32 values, 22 B: d | qh[4] (bit j: 5th bit of value j) | qs[16]                          y = d * (q - 16)
  Q5_1  32 values, 24 B: d | m | qh[4] | qs[16]                                                  y = d * q + m
  Q8_0  32 values, 34 B: d | qs[32] (int8)                                                       y = d * q
  Q2_K  256 values, 84 B: scales[16] (4-bit scale | 4-bit min) | qs[64] (2 bits) | d | dmin
  Q3_K  256 values, 110 B: hmask[32] (3rd bit, set = no -4 offset) | qs[64] (2 bits) | scales[12] (6 bits) | d
  Q4_K  256 values, 144 B: d | dmin | scales[12] (8 x 6-bit scale and min) | qs[128]           y = d*sc*q - dmin*m
  Q5_K  256 values, 176 B: d | dmin | scales[12] | qh[32] | qs[128]
  Q6_K  256 values, 210 B: ql[128] | qh[64] (2 high bits) | scales[16] (int8) | d               y = d * sc * (q - 32)
Each function takes blocks (n, type_size) uint8 on any device and returns (n, block_size) float32, computed in
the same order as gguf-py's numpy reference (`gguf.quants.dequantize`), so the results agree bit for bit.
"""

from typing import NamedTuple

import torch
from einops import rearrange
from torch import Tensor

from .errors import VaceError


class QuantizedWeight(NamedTuple):
    """A tensor as stored in a GGUF file: `blocks` (uint8, any shape whose last dimension is whole blocks; a
    view of the file's memory map on the CPU), its ggml type name and the logical shape it dequantizes to."""

    blocks: Tensor
    qtype: str
    shape: torch.Size

    def to(self, device) -> "QuantizedWeight":
        return self._replace(blocks=self.blocks.to(device))

    def dequantize(self, device=None, dtype: torch.dtype = torch.float32) -> Tensor:
        return dequantize(self.blocks.to(device), self.qtype, self.shape, dtype)

    @property
    def nbytes(self) -> int:
        return self.blocks.numel()


def _f16(blocks: Tensor, offset: int) -> Tensor:
    """The float16 field at byte `offset` of every block -> (n, 1) float32."""
    return blocks[:, offset:offset + 2].contiguous().view(torch.float16).float()


def _shifts(blocks: Tensor, *values: int) -> Tensor:
    return torch.tensor(values, dtype=torch.uint8, device=blocks.device)


def _nibbles(qs: Tensor) -> Tensor:
    """(n, k) bytes -> (n, 2k): the k low nibbles, then the k high nibbles."""
    return torch.cat([qs & 0x0F, qs >> 4], dim=-1)


def _bits(qh: Tensor) -> Tensor:
    """(n, k) bytes -> (n, 8k) single bits, little-endian (bit j of the k-byte word)."""
    return rearrange((qh[..., None] >> _shifts(qh, *range(8))) & 1, "n k b -> n (k b)")


def q4_0(b: Tensor) -> Tensor:
    return _f16(b, 0) * (_nibbles(b[:, 2:]).to(torch.int8) - 8).float()


def q4_1(b: Tensor) -> Tensor:
    return _f16(b, 0) * _nibbles(b[:, 4:]).float() + _f16(b, 2)


def q5_0(b: Tensor) -> Tensor:
    q = _nibbles(b[:, 6:]) | (_bits(b[:, 2:6]) << 4)
    return _f16(b, 0) * (q.to(torch.int8) - 16).float()


def q5_1(b: Tensor) -> Tensor:
    q = _nibbles(b[:, 8:]) | (_bits(b[:, 4:8]) << 4)
    return _f16(b, 0) * q.float() + _f16(b, 2)


def q8_0(b: Tensor) -> Tensor:
    return b[:, 2:].view(torch.int8).float() * _f16(b, 0)


def _crumbs(qs: Tensor) -> Tensor:
    """2-bit values: (n, 64) bytes -> (n, 16, 16), each 32-byte group read 4 times (bits
    0-1, 2-3, 4-5, 6-7)."""
    q = rearrange(qs, "n (g l) -> n g 1 l", l=32) >> _shifts(qs, 0, 2, 4, 6)[:, None]
    return rearrange(q & 3, "n g s l -> n (g s) l").reshape(qs.shape[0], -1, 16)


def q2_k(b: Tensor) -> Tensor:
    scales, d, dmin = b[:, :16], _f16(b, 80), _f16(b, 82)
    dl = (d * (scales & 0x0F).float())[..., None]
    ml = (dmin * (scales >> 4).float())[..., None]
    return (dl * _crumbs(b[:, 16:80]).float() - ml).flatten(1)


def q3_k(b: Tensor) -> Tensor:
    hmask, qs, scales, d = b[:, :32], b[:, 32:96], b[:, 96:108], _f16(b, 108)
    low = rearrange(scales[:, None, :8] >> _shifts(b, 0, 4)[:, None], "n s k -> n (s k)") & 0x0F
    high = rearrange(scales[:, None, 8:] >> _shifts(b, 0, 2, 4, 6)[:, None], "n s k -> n (s k)") & 0x03
    dl = (d * ((low | (high << 4)).to(torch.int8) - 32).float())[..., None]
    qh = rearrange(hmask[:, None] >> _shifts(b, *range(8))[:, None], "n s l -> n (s l)").reshape(-1, 16, 16)
    q = _crumbs(qs).to(torch.int8) - (((qh & 1) ^ 1) << 2).to(torch.int8)
    return (dl * q.float()).flatten(1)


def _k_scales(scales: Tensor) -> tuple[Tensor, Tensor]:
    """Q4_K/Q5_K's 12 bytes -> 8 six-bit scales and 8 six-bit mins, (n, 8) each."""
    d, m, md = scales[:, 0:4], scales[:, 4:8], scales[:, 8:12]
    sc = torch.cat([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], dim=-1)
    mins = torch.cat([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], dim=-1)
    return sc, mins


def _k_low(qs: Tensor) -> Tensor:
    """Q4_K/Q5_K's 128 bytes -> (n, 8, 32) nibbles: each 32-byte group gives 32 low, then 32 high nibbles."""
    q = rearrange(qs, "n (g l) -> n g l", l=32)
    return rearrange(torch.stack([q & 0x0F, q >> 4], dim=2), "n g s l -> n (g s) l")


def _k_affine(b: Tensor, q: Tensor) -> Tensor:
    sc, mins = _k_scales(b[:, 4:16])
    d = (_f16(b, 0) * sc.float())[..., None]
    dm = (_f16(b, 2) * mins.float())[..., None]
    return (d * q.float() - dm).flatten(1)


def q4_k(b: Tensor) -> Tensor:
    return _k_affine(b, _k_low(b[:, 16:144]))


def q5_k(b: Tensor) -> Tensor:
    qh = (b[:, None, 16:48] >> _shifts(b, *range(8))[:, None]) & 1  # (n, 8, 32): bit s of byte l
    return _k_affine(b, _k_low(b[:, 48:176]) | (qh << 4))


def q6_k(b: Tensor) -> Tensor:
    ql = rearrange(b[:, :128], "n (g l) -> n g 1 l", l=64) >> _shifts(b, 0, 4)[:, None]
    ql = rearrange(ql & 0x0F, "n g s (h l) -> n (g s h) l", l=32)
    qh = rearrange(b[:, 128:192], "n (g l) -> n g 1 l", l=32) >> _shifts(b, 0, 2, 4, 6)[:, None]
    qh = rearrange(qh & 0x03, "n g s l -> n (g s) l")
    d = (_f16(b, 208) * b[:, 192:208].view(torch.int8).float())[..., None]
    q = ((ql | (qh << 4)).to(torch.int8) - 32).reshape(-1, 16, 16)
    return (d * q.float()).flatten(1)


def _float(dtype: torch.dtype):
    return lambda b: b.view(dtype).float()


class Format(NamedTuple):
    block_size: int
    type_size: int
    dequantize: object  # (n, type_size) uint8 -> (n, block_size) float32
    scale_offsets: tuple[int, ...]  # bytes of each block's float16 scales (the only fields that can be NaN)


FORMATS = {
    "F32": Format(1, 4, _float(torch.float32), ()),
    "F16": Format(1, 2, _float(torch.float16), ()),
    "BF16": Format(1, 2, _float(torch.bfloat16), ()),
    "Q4_0": Format(32, 18, q4_0, (0,)),
    "Q4_1": Format(32, 20, q4_1, (0, 2)),
    "Q5_0": Format(32, 22, q5_0, (0,)),
    "Q5_1": Format(32, 24, q5_1, (0, 2)),
    "Q8_0": Format(32, 34, q8_0, (0,)),
    "Q2_K": Format(256, 84, q2_k, (80, 82)),
    "Q3_K": Format(256, 110, q3_k, (108,)),
    "Q4_K": Format(256, 144, q4_k, (0, 2)),
    "Q5_K": Format(256, 176, q5_k, (0, 2)),
    "Q6_K": Format(256, 210, q6_k, (208,)),
}
QUANTIZED = tuple(name for name, f in FORMATS.items() if f.block_size > 1)


def check_qtype(qtype: str, what: str) -> Format:
    if qtype not in FORMATS:
        raise VaceError(f"{what} is stored as ggml type {qtype}, which the pack cannot dequantize (it reads "
                        f"{', '.join(FORMATS)}). Use a GGUF file of another quantization, e.g. Q8_0, Q6_K, Q5_K_M or "
                        "Q4_K_M.")
    return FORMATS[qtype]


def _blocks(data: Tensor, fmt: Format) -> Tensor:
    return data.reshape(-1, fmt.type_size)


def dequantize(data: Tensor, qtype: str, shape, dtype: torch.dtype = torch.float32) -> Tensor:
    """ggml blocks (uint8, their bytes contiguous) -> the tensor of `shape`, computed in float32 on data's device
    and returned as `dtype`."""
    fmt = FORMATS[qtype]
    return fmt.dequantize(_blocks(data, fmt)).reshape(shape).to(dtype)


def scales_finite(data: Tensor, qtype: str) -> bool:
    """Whether every block's float16 scales are finite (the integers cannot be NaN, so then the whole tensor is):
    one float32 sum over 2 of every type_size bytes."""
    fmt = FORMATS[qtype]
    if not fmt.scale_offsets:
        return bool(torch.isfinite(torch.sum(dequantize(data, qtype, (-1,)), dtype=torch.float32)))
    blocks = _blocks(data, fmt)
    return all(bool(torch.isfinite(torch.sum(_f16(blocks, o), dtype=torch.float32))) for o in fmt.scale_offsets)
