"""Skipping main blocks in some batch rows (skip-layer guidance), as a self-attention hook of the denoiser contract.

`SkipLayers` travels as the call's `self_bias`: for a skipped block, `for_block` returns a `SkipRows` marker
(which rows skip it, and the block's own bias for the rows that run it), and `VaceTransformer.run_blocks` then
runs that block on the other rows only and adds its VACE hint to them only; the context blocks still run on every
row (later hints are unchanged). Being a bias object, it is narrowed with the batch, windows and shards like any
(`narrow`), and wraps the regional prompts' modulation (`around`).
"""

from dataclasses import dataclass, replace

from .attention import block_bias
from .denoiser import bias_key, narrow_bias
from .errors import VaceError


@dataclass(frozen=True)
class SkipRows:
    """A skipped block: rows[r] is True where batch row r skips it; `inner` is the bias of the rows that run it."""

    rows: tuple[bool, ...]
    inner: object = None

    def kept(self, batch: int) -> slice | None:
        """The rows that run the block, as one slice (None: none); the skipped rows lead or trail the batch."""
        kept = [r for r in range(batch) if not self.rows[r]]
        if not kept:
            return None
        if kept != list(range(kept[0], kept[-1] + 1)):
            raise VaceError(f"skip-layer rows {self.rows}: the rows that run a block must be contiguous")
        return slice(kept[0], kept[-1] + 1)


@dataclass(frozen=True)
class SkipLayers:
    """Main blocks `blocks` skipped in the batch rows marked in `rows`; `inner`: the self-attention bias of every
    block otherwise (regional prompts), or None."""

    blocks: frozenset
    rows: tuple[bool, ...]
    inner: object = None

    def for_block(self, block):
        inner = block_bias(self.inner, block)
        return SkipRows(self.rows, inner) if block in self.blocks and any(self.rows) else inner

    def around(self, inner) -> "SkipLayers":
        return replace(self, inner=inner)

    def narrow(self, rows=None, queries=None, keys=None) -> "SkipLayers":
        return replace(self, rows=self.rows if rows is None else self.rows[rows],
                       inner=narrow_bias(self.inner, rows, queries, keys))

    @property
    def cache_key(self) -> tuple:
        return "skip", tuple(sorted(self.blocks)), self.rows, bias_key(self.inner)
