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
from dataclasses import dataclass, replace
from functools import partial

import torch
import torch.distributed as dist
from torch import nn

from ..denoiser import narrow_bias, refuse
from ..layer_skip import SkipLayers
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


@dataclass
class ShardTokens(Tokens):
    """This rank's tokens (a shard of this CFG group's half of the batch), and what gathering needs: the
    unpadded sequence length and whether the CFG halves are gathered at the end."""

    length: int = 0
    split: bool = False


class ParallelVace(nn.Module):
    """A VaceTransformer run on the processes of `layout`: a staged `denoiser.Denoiser` with the model's call and
    result, so `pipeline.generate` / `sample_latent` take it in place of the model. Its stages work on this
    rank's shard of tokens (a step cache keeps the residual of its shard), and `agree` makes a decision on
    every rank at once."""

    staged = True

    def __init__(self, model: VaceTransformer, layout: ParallelLayout):
        super().__init__()
        self.model, self.layout, self.warned = model, layout, False

    @property
    def compute_dtype(self):
        return self.model.compute_dtype

    @property
    def device(self):
        return self.layout.device

    @property
    def config(self):
        return self.model.config

    def check(self, x, contexts, strengths) -> None:
        self.model.check(x, contexts, strengths)

    def weights_checked(self) -> None:
        self.model.weights_checked()

    def agree(self, flag: bool) -> bool:
        """True on every rank when it is True on any (one all-reduce of one number)."""
        flag_t = torch.tensor([float(flag)], device=self.layout.device)
        dist.all_reduce(flag_t, op=dist.ReduceOp.MAX)
        return bool(flag_t.item())

    def _cfg_half(self, batch: int) -> slice | None:
        """This CFG group's rows of a batch of `batch`, or None when every group computes the whole batch."""
        if self.layout.degrees.cfg == 1:
            return None
        if batch % 2:  # guidance 1, or long video's guidance-free pass: said once, not every step
            if not self.warned:
                log.warning("VACE: --cfg-parallel needs the conditional and unconditional passes in one batch "
                            "(guidance != 1); both CFG groups compute the whole batch")
                self.warned = True
            return None
        rank = self.layout.rank("cfg")
        return slice(rank * batch // 2, (rank + 1) * batch // 2)

    def embed(self, x, t, context, vace_context=()) -> ShardTokens:
        """This rank's shard of the tokens of its CFG half (embedding runs on every rank: it is cheap)."""
        half = self._cfg_half(x.shape[0])
        if half is not None:
            x, t, context = x[half], t[half], context[half]
            vace_context = [c[half] if c.shape[0] > 1 else c for c in vace_context]
        tokens = self.model.embed(x, t, context, vace_context)
        local = shard_tokens(tokens, self.layout.shard, self.layout.degrees.sequence)
        return ShardTokens(**vars(local), length=tokens.x.shape[1], split=half is not None)

    def _biases(self, tokens: ShardTokens, self_bias, cross_bias) -> tuple:
        """The biases for this rank: its CFG half's rows; cross-attention's query rows of its shard (self-attention
        takes the whole sequence's bias: the parallel attention cuts it)."""
        layout, parts = self.layout, self.layout.degrees.sequence
        hook = self_bias.inner if isinstance(self_bias, SkipLayers) else self_bias  # skipping blocks needs no keys
        if hook is not None and not isinstance(hook, torch.Tensor) and layout.degrees.ring > 1:
            refuse("regional prompts", "ring attention", "the modulation needs each query's whole row of keys; use "
                   "--parallel ulysses (the heads must divide by the processes)")
        rows = self._cfg_half(2 * tokens.x.shape[0]) if tokens.split else None

        def cut(b):  # 4-D tensors have a batch dim; bias objects cut their rows themselves
            return narrow_bias(b, rows=rows) if not isinstance(b, torch.Tensor) or b.ndim == 4 else b
        self_bias, cross_bias = cut(self_bias), cut(cross_bias)
        if cross_bias is not None and parts > 1:
            if isinstance(cross_bias, torch.Tensor):
                cross_bias = shard(cross_bias, cross_bias.ndim - 2, layout.shard, parts)
            else:
                size = tokens.x.shape[1]
                queries = torch.arange(layout.shard * size, (layout.shard + 1) * size)
                cross_bias = narrow_bias(cross_bias, queries=torch.where(queries < tokens.length, queries, -1))
        return self_bias, cross_bias

    def run_blocks(self, tokens: ShardTokens, vace_scale=(), self_bias=None, cross_bias=None, **stages):
        """The blocks on this rank's shard, self-attention across the processes -> the shard's residual stream
        (`stages`: VaceTransformer.run_blocks' main / hints, on the shard)."""
        self_bias, cross_bias = self._biases(tokens, self_bias, cross_bias)
        # per-frame strengths as per-token scales, cut like the tokens
        vace_scale = [shard(token_scale(s, tokens.grid), 1, self.layout.shard, self.layout.degrees.sequence)
                      for s in vace_scale]
        attend = partial(sequence_parallel_attention, layout=self.layout, length=tokens.length)
        with parallel_self_attention(self.model, attend):
            return self.model.run_blocks(tokens, vace_scale, self_bias, cross_bias, **stages)

    def unpatchify(self, x, tokens: ShardTokens, dtype) -> torch.Tensor:
        """The head on this rank's shard; its narrow output gathered (tokens, then CFG halves) -> the video."""
        out = self.model.head(x, tokens.t_emb)
        for dim in ("ulysses", "ring"):  # shard index = ring * ulysses_degree + ulysses
            out = all_gather(out, self.layout.group(dim), dim=1)
        video = self.model.to_video(out[:, :tokens.length], tokens.grid, dtype)
        return all_gather(video, self.layout.group("cfg"), dim=0) if tokens.split else video

    def forward(self, x, t, context, vace_context=(), vace_scale=(), self_bias=None, cross_bias=None):
        """As VaceTransformer.forward. self_bias / cross_bias are whole-sequence (unpadded) biases."""
        self.check(x, vace_context, vace_scale)
        tokens = self.embed(x, t, context, vace_context)
        return self.unpatchify(self.run_blocks(tokens, vace_scale, self_bias, cross_bias), tokens, x.dtype)
