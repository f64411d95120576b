"""Normalized Attention Guidance (NAG; Chen et al., "Normalized Attention Guidance: Universal Negative Guidance for
Diffusion Models", arXiv 2505.21179): negative prompting inside cross-attention, so it works at cfg 1 (speed LoRAs:
CausVid, lightx2v), where classifier-free guidance has no negative pass.

In every cross-attention (main and context blocks), with the block's own projections and one query Q:

    Z+ = attn(Q, K+, V+)                    the positive prompt's attention output (B, L, heads * head_dim)
    Z- = attn(Q, K-, V-)                    the same query on the negative prompt
    Z~ = Z+ + s (Z+ - Z-)                   extrapolation away from the negative (the paper's phi = s)
    Z^ = Z~ * min(|Z~|_1, tau |Z+|_1) / |Z~|_1   L1 normalisation per token (over all heads' channels):
                                            the ratio |Z^|_1 / |Z+|_1 is at most tau
    Z  = alpha Z^ + (1 - alpha) Z+          refinement: blend back towards Z+

then the block's output projection. s = 0 or alpha = 0 gives Z = Z+ (the plain forward, and it runs as one).

The reference code (ChenDarYen/Normalized-Attention-Guidance `src/attention_wan_nag.py`, and kijai's Wan port in
ComfyUI-WanVideoWrapper / KJNodes' WanVideoNAG) writes the extrapolation as nag_scale * Z+ - (nag_scale - 1) * Z-:
its nag_scale is s + 1 (their 11 is our 10; their 1, "off", is our 0). Defaults: s = 10, tau = 2.5, alpha = 0.25,
the values kijai's Wan nodes ship (nag_scale 11, nag_tau 2.5, nag_alpha 0.25; tau and alpha are also the
reference attention processor's defaults).

With CFG (cfg > 1) NAG guides the conditional row only and the unconditional row runs plainly, as the reference
Wan pipeline does (its unconditional pass sees no NAG negative); at cfg 1 the batch is one row and the negative
prompt acts through NAG alone: one forward per step, the extra cost being the negative keys/values and one more
attention per cross-attention layer (512 text tokens: small next to self-attention).
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from .errors import VaceError

SCALE, TAU, ALPHA = 10.0, 2.5, 0.25  # kijai's Wan defaults (nag_scale 11 = s + 1, nag_tau 2.5, nag_alpha 0.25)


def normalized_attention_guidance(z_pos: Tensor, z_neg: Tensor, scale: float, tau: float, alpha: float) -> Tensor:
    """The NAG formula (module docstring) on attention outputs z_pos, z_neg (..., C) -> (..., C) float32; L1 norms
    over C."""
    z_pos, z_neg = z_pos.float(), z_neg.float()  # L1 sums over thousands of channels: fp32 even in bf16 runs
    guided = z_pos + scale * (z_pos - z_neg)
    norm_pos, norm_guided = z_pos.norm(p=1, dim=-1, keepdim=True), guided.norm(p=1, dim=-1, keepdim=True)
    # min(|Z~|, tau |Z+|) / |Z~|, written so a zero Z~ never divides (it then needs no rescaling)
    capped = norm_guided > tau * norm_pos
    factor = torch.where(capped, tau * norm_pos / torch.where(capped, norm_guided, 1), 1)
    return alpha * (guided * factor) + (1 - alpha) * z_pos


@dataclass(frozen=True)
class NAG:
    """NAG settings: scale s, tau, alpha (module docstring) and the steps it acts on, as fractions of the run:
    step i of n is guided when start <= i / n < end (as a VCU stream's window). scale 0 or alpha 0: off."""

    scale: float = SCALE
    tau: float = TAU
    alpha: float = ALPHA
    start: float = 0.0
    end: float = 1.0

    def __post_init__(self):
        if not self.scale >= 0:
            raise VaceError(f"NAG scale must be 0 (off) or more, got {self.scale!r} (kijai's Wan default is 11 in "
                            "their convention = 10 here)")
        if not self.tau >= 1:
            raise VaceError(f"NAG tau caps the guided attention's L1 norm at tau times the positive one: give 1 or "
                            f"more (2.5 by default), got {self.tau!r}")
        if not 0 <= self.alpha <= 1:
            raise VaceError(f"NAG alpha blends the guided attention with the plain one: 0 to 1 (0.25 by default), "
                            f"got {self.alpha!r}")
        if not 0 <= self.start <= self.end <= 1:
            raise VaceError(f"NAG start {self.start} and end {self.end} must be fractions of the steps with "
                            "0 <= start <= end <= 1")

    @property
    def off(self) -> bool:
        return self.scale == 0 or self.alpha == 0

    def active(self, step: int, steps: int) -> bool:
        return not self.off and self.start <= step / steps < self.end

    def at(self, negative: Tensor) -> "NagText":
        """These settings with the negative prompt's features (1, L, text_dim), for one model call."""
        return NagText(self, negative)


@dataclass(frozen=True)
class NagText:
    """What a model call needs for NAG: the settings and the negative prompt's raw text features (1, L, text_dim).
    Row 0 of the batch (the conditional row) is guided; further rows (CFG's negative) run plainly."""

    nag: NAG
    negative: Tensor

    def bind(self, embedded: Tensor) -> "BoundNag":
        return BoundNag(self.nag, embedded)


@dataclass(frozen=True)
class BoundNag:
    """NAG with the negative prompt through the model's text embedding: (1, 512, dim) in the compute dtype."""

    nag: NAG
    text: Tensor

    def guide(self, attention, q: Tensor, z_pos: Tensor, project_kv) -> Tensor:
        """z_pos (B, L, C) from the block's cross-attention; q (B, L, H, D) its query; project_kv(text) -> (k, v)
        with the block's projections; attention(q, k, v) -> (B, L, C). Row 0 guided, the others unchanged."""
        k, v = project_kv(self.text)
        z_neg = attention(q[:1], k, v)
        n = self.nag
        guided = normalized_attention_guidance(z_pos[:1], z_neg, n.scale, n.tau, n.alpha).to(z_pos.dtype)
        return guided if z_pos.shape[0] == 1 else torch.cat([guided, z_pos[1:]])
