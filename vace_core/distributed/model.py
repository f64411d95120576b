"""One VACE DiT forward on several processes, between the transformer's stages.

`embed` runs on every rank (patch embedding is cheap); its tokens (x, x0, every VACE context stream,
the RoPE angles) are cut into this rank's shard; `run_blocks` runs on the shard with self-attention
swapped for the sequence-parallel one (cross-attention to the 512 text tokens needs no communication);
the head runs per shard and its narrow output (16 x patch channels instead of `dim`) is gathered before
`to_video`. With CFG parallel the two halves of the batch (conditional / unconditional) run on the two
CFG groups and are gathered at the end, so every rank returns the whole batch and steps the same latent.
"""

import logging
import math
from contextlib import contextmanager
from dataclasses import replace
from functools import partial

import torch
import torch.distributed as dist
from torch import nn

from ..errors import VaceError
from ..transformer import Tokens, VaceTransformer, token_scale
from .attention import sequence_parallel_attention
from .layout import ParallelLayout

log = logging.getLogger("vace")


def shard(t, dim: int, index: int, parts: int):
    """This shard of `t` along `dim` (length L), zero-padded to ceil(L / parts) tokens; a size-1 (broadcast)
    dim and non-tensors (None, bias objects) stay as they are."""
    if t is None or not isinstance(t, torch.Tensor) or t.shape[dim] == 1:
        return t
    size = math.ceil(t.shape[dim] / parts)
    part = t.narrow(dim, min(index * size, t.shape[dim]), max(0, min(size, t.shape[dim] - index * size)))
    pad = list(part.shape)
    pad[dim] = size - part.shape[dim]
    # a copy, not a view: the whole sequence's storage is freed once the shards are cut
    return torch.cat([part, part.new_zeros(pad)], dim) if pad[dim] else part.clone()


def shard_tokens(tokens: Tokens, index: int, parts: int) -> Tokens:
    """The tokens of shard `index` of `parts`: x, x0, streams and RoPE cut along the token dim."""
    cut = partial(shard, dim=1, index=index, parts=parts)
    x = cut(tokens.x)
    return replace(tokens, x=x, x0=x if tokens.x0 is tokens.x else cut(tokens.x0),
                   streams=[cut(s) for s in tokens.streams], rope=tuple(cut(r) for r in tokens.rope))


def all_gather(x: torch.Tensor, group, dim: int) -> torch.Tensor:
    """Concatenates every rank's x along `dim`, in rank order (a group of one returns x)."""
    if group.size() == 1:
        return x
    x = x.contiguous()
    parts = [torch.empty_like(x) for _ in range(group.size())]
    dist.all_gather(parts, x, group=group)
    return torch.cat(parts, dim)


@contextmanager
def parallel_self_attention(model: VaceTransformer, attend):
    """Every main and context block's self-attention uses `attend` inside the block."""
    layers = [b.self_attn for b in (*model.blocks, *model.vace_blocks)]
    before = [layer.attend for layer in layers]
    try:
        for layer in layers:
            layer.attend = attend
        yield
    finally:
        for layer, fn in zip(layers, before, strict=True):
            layer.attend = fn


class ParallelVace(nn.Module):
    """A VaceTransformer run on the processes of `layout`; same call and result as the model itself,
    so `pipeline.generate` / `sample_latent` take it in place of the model."""

    def __init__(self, model: VaceTransformer, layout: ParallelLayout):
        super().__init__()
        self.model, self.layout, self.warned = model, layout, False

    @property
    def compute_dtype(self):
        return getattr(self.model, "compute_dtype", next(self.model.parameters()).dtype)

    @property
    def config(self):
        return self.model.config

    def _cfg_half(self, batch: int, inputs: list, biases: list):
        """This CFG group's half of the batch: inputs are batch-first (x, t, text, context streams of batch B
        or 1); biases have a batch dim when 4-D. -> (inputs, biases, whether the halves must be gathered)."""
        if self.layout.degrees.cfg == 1:
            return inputs, biases, False
        if batch % 2:  # guidance 1, or long video's guidance-free pass: said once, not every step
            if not self.warned:
                log.warning("VACE: --cfg-parallel needs the conditional and unconditional passes in one batch "
                            "(guidance != 1); both CFG groups compute the whole batch")
                self.warned = True
            return inputs, biases, False
        rank = self.layout.rank("cfg")
        half = slice(rank * batch // 2, (rank + 1) * batch // 2)

        def cut(t, batched=True):
            if isinstance(t, (list, tuple)):
                return [cut(u) for u in t]
            return t[half] if isinstance(t, torch.Tensor) and batched and t.shape[0] == batch else t
        return cut(inputs), [cut(b, isinstance(b, torch.Tensor) and b.ndim == 4) for b in biases], True

    def forward(self, x, t, context, vace_context=(), vace_scale=(), self_bias=None, cross_bias=None, nag=None,
                skip=()):
        """As VaceTransformer.forward. self_bias / cross_bias are whole-sequence (unpadded) biases; nag guides the
        conditional row, so a CFG group holding the unconditional half runs without it."""
        model, layout = self.model, self.layout
        model._check(x, context, vace_context, vace_scale)
        (x_, t, context, vace_context), (self_bias, cross_bias), split = self._cfg_half(
            x.shape[0], [x, t, context, vace_context], [self_bias, cross_bias])
        if split and self.layout.rank("cfg"):
            nag = None
        tokens = model.embed(x_, t, context, vace_context)
        length, parts = tokens.x.shape[1], layout.degrees.sequence
        local = shard_tokens(tokens, layout.shard, parts)
        tokens = replace(tokens, x=None, x0=None, streams=[])  # only the grid and t_emb are needed after this
        if cross_bias is not None and parts > 1:
            if not isinstance(cross_bias, torch.Tensor):
                raise VaceError("sequence parallelism splits the cross-attention bias by query rows and takes "
                                f"only tensors (got {type(cross_bias).__name__})")
            cross_bias = shard(cross_bias, cross_bias.ndim - 2, layout.shard, parts)
        # per-frame strengths as per-token scales, cut like the tokens
        vace_scale = [shard(token_scale(s, tokens.grid), 1, layout.shard, parts) for s in vace_scale]
        attend = partial(sequence_parallel_attention, layout=layout, length=length)
        with parallel_self_attention(model, attend):
            out = model.head(model.run_blocks(local, vace_scale, self_bias, cross_bias, nag, skip), tokens.t_emb)
        for dim in ("ulysses", "ring"):  # shard index = ring * ulysses_degree + ulysses
            out = all_gather(out, layout.group(dim), dim=1)
        video = model.to_video(out[:, :length], tokens.grid, x.dtype)
        return all_gather(video, layout.group("cfg"), dim=0) if split else video
