"""Reference-leak control: how much each output frame attends the reference images' tokens.

VACE puts the reference latents in front of the video; every output token attends them in self-attention, and
users see the reference "pasted" into the first frames. This weights that attention per output latent frame f:

    attention(q, k) = softmax_k(s_qk + r_k · log w_f),      w_f = 1 − (1 − w) · d^f

with s_qk = q·k/√D, r_k = 1 for a reference token's key (else 0), w the weight at the first output frame and d
the decay per latent frame: the reference keys' attention weights are multiplied by w_f before the softmax
renormalises. d = 1 keeps w on every frame (constant); d < 1 recovers to full attention (w_f → 1) further into
the video (d = 0: only the first latent frame is weighted). Reference tokens' own queries are not weighted.
w = 1 is today's attention: the sampler then passes no bias at all (bit for bit). w = 0 removes the
references from the weighted frames (clamped to 1e-6, so the logits stay finite). In long video f counts the
latent frames of each window, references being in front of every window.

It runs in every main and context block's self-attention, through the attention bias hook, without an L x L
bias: the bias is rank one, so q' = [q, √D · log w_f] and k' = [k, r_k] give q'·k'/√D = s_qk + r_k log w_f
in PyTorch SDPA (the extra head dims padded to a multiple of 8 for the fused kernels).
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from .errors import VaceError

FLOOR = 1e-6  # w = 0 in the logits' domain: keeps them finite


def frame_weights(weight: float, decay: float, frames: int) -> Tensor:
    """w_f = 1 − (1 − w) d^f for the output latent frames f = 0..frames−1 (float64)."""
    if not (0 <= weight <= 1 and 0 <= decay <= 1):
        raise VaceError(f"reference weight {weight} and decay {decay} must each be from 0 to 1 (weight 1 = "
                        "today's attention; decay 1 = the same weight on every frame)")
    return 1 - (1 - weight) * torch.full((frames,), float(decay), dtype=torch.float64) ** torch.arange(frames)


@dataclass(frozen=True)
class ReferenceAttention:
    """The `bias` object of `attention.attention` for the weighting above, in every main and context block.
    references: reference latent frames in front; frame_tokens: tokens per latent frame (h·w). The query's
    frame comes from its position, so any window of the latent (fused windows) is weighted by its own frames."""

    weight: float
    decay: float
    references: int
    frame_tokens: int

    @classmethod
    def build(cls, weight: float, decay: float, references: int, frame_tokens: int):
        """None when nothing is weighted (w = 1, or no references): the attention stays exactly today's."""
        frame_weights(weight, decay, 1)  # checks the numbers
        return None if weight == 1 or references == 0 else cls(weight, decay, references, frame_tokens)

    def for_block(self, block):
        return self

    def narrow(self, rows=None, queries=None, keys=None) -> "ReferenceAttention":
        """For part of a call (`denoiser.narrow_bias`): batch rows and whole windows (the same frames as queries
        and keys, references in front: the frames are read from the length) keep it; a shard of the queries alone
        (sequence parallelism) does not."""
        if queries is not None and (keys is None or not torch.equal(queries, keys)):
            raise VaceError("reference_weight and sequence parallelism (--parallel) cannot be combined: the "
                            "weighting reads each query's frame from the whole sequence; run on one GPU or with "
                            "--cfg-parallel only, or set reference_weight to 1")
        return self

    def _columns(self, length: int) -> tuple[Tensor, Tensor]:
        """(log w_f per query token, r_k per key token) for a sequence of `length` tokens."""
        frames = length // self.frame_tokens
        if frames * self.frame_tokens != length or frames <= self.references:
            raise VaceError(f"the reference weighting is for frames of {self.frame_tokens} tokens after "
                            f"{self.references} reference frames, but attention has {length} tokens")
        weights = frame_weights(self.weight, self.decay, frames - self.references).clamp(min=FLOOR)
        per_frame = torch.cat([torch.ones(self.references, dtype=torch.float64), weights]).log()
        is_reference = (torch.arange(frames) < self.references).double()
        return per_frame.repeat_interleave(self.frame_tokens), is_reference.repeat_interleave(self.frame_tokens)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, backend: str = "sdpa") -> Tensor:
        """q (B, L, H, D), k/v (B, L, H, D) (self-attention) -> (B, L, H*D)."""
        log_weight, is_reference = self._columns(q.shape[1])
        dim, pad = q.shape[-1], 8 - 1  # one extra head dim, padded to a multiple of 8
        q, k, v = (rearrange(t, "b l h d -> b h l d") for t in (q, k, v))
        extra_q = (log_weight.to(q) * math.sqrt(dim))[None, None, :, None].expand(*q.shape[:3], 1)
        extra_k = is_reference.to(k)[None, None, :, None].expand(*k.shape[:3], 1)
        q_aug = torch.cat([q, extra_q, q.new_zeros(*q.shape[:3], pad)], -1)
        k_aug = torch.cat([k, extra_k, k.new_zeros(*k.shape[:3], pad)], -1)
        out = F.scaled_dot_product_attention(q_aug, k_aug, F.pad(v, (0, 1 + pad)), scale=dim ** -0.5)[..., :dim]
        return rearrange(out, "b h l d -> b l (h d)")
