"""Self-attention over a sequence split across processes: Ulysses, ring, and both (USP).

Every process holds one shard of C tokens of the padded sequence (length L padded to a multiple of the
shard count). Padding never takes part: queries and keys past the true length L are cut before any
kernel runs, so the result equals one process's attention exactly (up to float rounding).

- Ulysses (DeepSpeed-Ulysses, arXiv 2309.14509): an all-to-all turns (C tokens, H heads) into
  (u*C tokens, H/u heads), attention runs on whole rows, a second all-to-all turns it back.
- Ring (Ring Attention, arXiv 2310.01889): keys/values travel round the ring, one block per step,
  sent while the current block is computed; block results merge by their log-sum-exp (online softmax).
- USP (xDiT): Ulysses inside groups of u processes, ring across the groups.

`bias` (the regional-prompt hook of `vace_core.attention.attention`) is given for the whole sequence,
(B or 1, H or 1, L, L) over unpadded token indices; each scheme takes its heads (Ulysses) and its
row/column blocks (ring). Other bias objects pass through Ulysses unchanged (they must not depend on the
head) and are refused by ring attention.
"""

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange

from ..attention import attention
from ..errors import VaceError


def _all_to_all(x: torch.Tensor, group) -> torch.Tensor:
    """x (n, ...): slice i goes to rank i of `group`; slice j of the result came from rank j."""
    x = x.contiguous()
    out = torch.empty_like(x)  # after contiguous(): empty_like keeps a view's strides, the collective assumes none
    dist.all_to_all_single(out, x, group=group)
    return out


def tokens_to_heads(x: torch.Tensor, group) -> torch.Tensor:
    """(B, C, H, D) this rank's tokens, all heads -> (B, n*C, H/n, D) the group's tokens, this rank's heads."""
    n = group.size()
    return rearrange(_all_to_all(rearrange(x, "b c (n h) d -> n b c h d", n=n), group), "n b c h d -> b (n c) h d")


def heads_to_tokens(x: torch.Tensor, group, heads: int) -> torch.Tensor:
    """(B, n*C, heads*D) the group's tokens, this rank's heads -> (B, C, n*heads*D) this rank's tokens."""
    n = group.size()
    x = _all_to_all(rearrange(x, "b (n c) (h d) -> n b c h d", n=n, h=heads), group)
    return rearrange(x, "n b c h d -> b c (n h d)")


def _block(bias, rows: slice, cols: slice, heads: slice = slice(None)):
    """The (B, H, rows, cols) block of a whole-sequence bias; broadcast (size-1) dims stay whole."""
    if bias is None:
        return None
    if not isinstance(bias, torch.Tensor):
        raise VaceError("ring attention splits the attention bias per block and takes only tensors "
                        f"(got {type(bias).__name__}): use --parallel ulysses for this bias")
    bias = bias.reshape((1,) * (4 - bias.ndim) + tuple(bias.shape))
    cuts = (slice(None), heads, rows, cols)
    return bias[tuple(s if n > 1 else slice(None) for s, n in zip(cuts, bias.shape, strict=True))]


def head_slice(bias, heads: slice):
    """A whole-sequence bias for this rank's Ulysses heads (tensors only; other objects pass through)."""
    return _block(bias, slice(None), slice(None), heads) if isinstance(bias, torch.Tensor) else bias


def attention_with_lse(q, k, v, bias=None):
    """q (B, Lq, H, D), k/v (B, Lk, H, D) -> out (B, Lq, H, D) fp32, log-sum-exp of the scaled scores
    (B, H, Lq) fp32. The fused SDPA kernels return both (the ones torch's own context parallelism uses)."""
    q, k, v = (rearrange(t, "b l h d -> b h l d") for t in (q, k, v))
    if bias is not None and bias.dtype == torch.bool:
        bias = torch.zeros(bias.shape, dtype=q.dtype, device=q.device).masked_fill(~bias, float("-inf"))
    if q.is_cuda:  # not run here (no GPU in this project's CI); the CPU branch is the tested one
        if bias is not None:  # the kernel wants a full-shape bias with 16-aligned rows, as SDPA prepares it
            shape = (q.shape[0], q.shape[1], q.shape[2], k.shape[2])
            bias = F.pad(bias.to(q.dtype), (0, -k.shape[2] % 16))[..., : k.shape[2]].expand(shape)
        out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, bias, True)[:2]
        lse = lse[:, :, : q.shape[2]]  # the kernel pads the query length to its tile size
    else:
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, attn_mask=bias)
    return rearrange(out.float(), "b h l d -> b l h d"), lse.float()


def _merge(acc, part):
    """Online softmax: two partial results over disjoint key sets -> the result over their union."""
    if acc is None:
        return part
    (out_a, lse_a), (out_b, lse_b) = acc, part
    lse = torch.logaddexp(lse_a, lse_b)
    weight = lambda lse_x: rearrange(torch.exp(lse_x - lse), "b h l -> b l h 1")  # noqa: E731
    return out_a * weight(lse_a) + out_b * weight(lse_b), lse


def _valid(block: int, size: int, length: int) -> int:
    """How many of block `block`'s `size` tokens are real (not padding) in a sequence of `length`."""
    return max(0, min(size, length - block * size))


def ring_attention(q, k, v, group, length: int, bias=None):
    """q, k, v (B, C, H, D): ring block `rank` of the padded sequence -> (B, C, H*D), padded rows zero.

    Step s computes against the block of rank - s while the next block is in flight.
    """
    n, rank, size = group.size(), group.rank(), q.shape[1]
    rows = slice(rank * size, rank * size + _valid(rank, size, length))
    q_real = q[:, : rows.stop - rows.start]
    kv, acc = torch.stack([k, v]), None
    for step in range(n):
        src = (rank - step) % n
        if step < n - 1:
            incoming = torch.empty_like(kv)
            ops = [dist.P2POp(dist.isend, kv, dist.get_global_rank(group, (rank + 1) % n), group),
                   dist.P2POp(dist.irecv, incoming, dist.get_global_rank(group, (rank - 1) % n), group)]
            pending = dist.batch_isend_irecv(ops)
        keys = _valid(src, size, length)
        if keys and q_real.shape[1]:
            cols = slice(src * size, src * size + keys)
            acc = _merge(acc, attention_with_lse(q_real, kv[0, :, :keys], kv[1, :, :keys],
                                                 _block(bias, rows, cols)))
        if step < n - 1:
            for request in pending:
                request.wait()
            kv = incoming
    out = acc[0].to(q.dtype) if acc is not None else q_real
    return F.pad(rearrange(out, "b l h d -> b l (h d)"), (0, 0, 0, size - q_real.shape[1]))


def _whole(q, k, v, backend: str, length: int, bias):
    """Plain attention over the first `length` (real) tokens of a padded sequence; padded rows are zero."""
    out = attention(q[:, :length], k[:, :length], v[:, :length], backend, bias)
    return F.pad(out, (0, 0, 0, q.shape[1] - out.shape[1]))


def sequence_parallel_attention(q, k, v, backend: str = "sdpa", bias=None, *, layout, length: int):
    """Drop-in for `vace_core.attention.attention` on this rank's shard: q, k, v (B, C, H, D) -> (B, C, H*D).

    length: the true token count L of the whole sequence (the shards hold L padded to a multiple of them).
    """
    heads, ulysses = q.shape[2], layout.degrees.ulysses
    if ulysses > 1:
        group = layout.group("ulysses")
        mine = heads // ulysses
        q, k, v = (tokens_to_heads(t, group) for t in (q, k, v))
        bias = head_slice(bias, slice(group.rank() * mine, (group.rank() + 1) * mine))
    if layout.degrees.ring > 1:
        out = ring_attention(q, k, v, layout.group("ring"), length, bias)
    else:
        out = _whole(q, k, v, backend, length, bias)
    return heads_to_tokens(out, layout.group("ulysses"), heads // ulysses) if ulysses > 1 else out
