"""Spatial tiles with linear blending, and the automatic tile choice from free memory.

Tiles cut space only. Time needs no tiles: the causal chunk loop already bounds memory by one chunk (plus the
cache of the last frames), and it is exact, where blended temporal tiles would not be.
Tiles are laid out in units of 8 px (one latent pixel), so encode and decode cut at the same places.
"""

import math
import os
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import VaceError

UNIT = 8  # px per latent pixel
MIN_TILE = 64
# Peak working memory per output pixel of a tile, in units of (first-level channels x bytes per element):
# activations of one causal chunk (4 frames at full resolution) plus every temporal conv's cache. Measured on
# the real architecture, fp32 CPU, 240x416 (benchmarks/bench_vae.py: 62.7 and 48.4), rounded up.
WORK_PER_PIXEL = {"decode": 64, "encode": 50}


@dataclass(frozen=True)
class Tiling:
    """Tiles of at most `tile` x `tile` px; neighbours overlap by `overlap` px and are blended linearly.

    Tiles are resized evenly to cover the frame, so a frame is cut into equal tiles (never a thin last one).
    """

    tile: int = 256
    overlap: int = 64

    def __post_init__(self):
        if self.tile % UNIT or self.overlap % UNIT or self.tile < 2 * UNIT:
            raise VaceError(f"Tile size {self.tile} and overlap {self.overlap} must be multiples of {UNIT} px "
                            f"(tile at least {2 * UNIT}).")
        if not 0 <= self.overlap <= self.tile // 2:
            raise VaceError(f"Tile overlap {self.overlap} px must be between 0 and half the tile ({self.tile // 2}).")


def spans(size: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) windows of equal length <= tile covering 0..size, neighbours sharing >= overlap."""
    if size <= tile:
        return [(0, size)]
    n = math.ceil((size - overlap) / (tile - overlap))
    length = math.ceil((size + (n - 1) * overlap) / n)
    return [(s, s + length) for s in (round(i * (size - length) / (n - 1)) for i in range(n))]


def ramp(length: int, before: int, after: int) -> Tensor:
    """1D blend weight: rises over the `before` samples shared with the previous tile, falls over `after`."""
    w = torch.ones(length)
    if before:
        w[:before] = torch.minimum(w[:before], (torch.arange(before) + 0.5) / before)
    if after:
        w[length - after:] = torch.minimum(w[length - after:], (torch.arange(after, 0, -1) - 0.5) / after)
    return w


@dataclass(frozen=True)
class Window:
    rows: tuple[int, int]  # [start, end) in units of 8 px
    cols: tuple[int, int]
    shared: tuple[int, int, int, int]  # units shared with the tile above, below, left, right

    def weight(self, scale: int) -> Tensor:
        """(h, w) blend weights at `scale` samples per unit."""
        top, bottom, left, right = (s * scale for s in self.shared)
        h, w = (scale * (e - s) for s, e in (self.rows, self.cols))
        return ramp(h, top, bottom)[:, None] * ramp(w, left, right)[None, :]


def neighbours_shared(spans_: list[tuple[int, int]], i: int) -> tuple[int, int]:
    before = spans_[i - 1][1] - spans_[i][0] if i > 0 else 0
    after = spans_[i][1] - spans_[i + 1][0] if i + 1 < len(spans_) else 0
    return before, after


def tile_windows(height: int, width: int, tiling: Tiling | None) -> list[Window]:
    """Windows over a (height, width) grid of 8 px units; one window when tiling is None."""
    tile, overlap = (tiling.tile // UNIT, tiling.overlap // UNIT) if tiling else (max(height, width), 0)
    row_spans, col_spans = spans(height, tile, overlap), spans(width, tile, overlap)
    return [Window(r, c, (*neighbours_shared(row_spans, i), *neighbours_shared(col_spans, j)))
            for i, r in enumerate(row_spans) for j, c in enumerate(col_spans)]


def free_memory(device: torch.device) -> int:
    """Bytes the next allocations can take on `device`."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def auto_tiling(config: dict, frame_px: tuple[int, int], out_bytes: int, dtype: torch.dtype,
                device: torch.device, mode: str) -> Tiling | None:
    """The largest square tile whose working memory fits half the free memory; None when the frame fits whole.

    frame_px: (height, width) of the video; out_bytes: the output tensor, allocated before the tiles run.
    """
    per_pixel = WORK_PER_PIXEL[mode] * config["dim"] * config["dim_mult"][0] * dtype.itemsize
    budget = free_memory(device) // 2 - out_bytes
    if frame_px[0] * frame_px[1] * per_pixel <= budget:
        return None
    side = math.isqrt(max(budget, 0) // per_pixel) // UNIT * UNIT
    tile = max(side, MIN_TILE)
    return Tiling(tile=tile, overlap=min(64, tile // 4 // UNIT * UNIT))
