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

How it reaches the DiT (the denoiser contract's attention hooks): the sampler appends the negative prompt's
features after each row's text (`text_with_negative`), so every block projects K- and V- with its own layers,
and passes `NagAttention` as the call's cross-attention bias; it splits the keys and values again and guides.
"""

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from .attention import attention, block_bias
from .denoiser import bias_key, narrow_bias
from .errors import VaceError
from .text import TEXT_LEN

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

    def hook(self, split: int, rows: int) -> "NagAttention":
        """The cross-attention hook for a call whose text is [its own prompt (`split` tokens); the NAG negative
        prompt] and whose first of `rows` batch rows is the conditional one (`text_with_negative`)."""
        return NagAttention(self, split, (True,) + (False,) * (rows - 1))


def text_with_negative(text: Tensor, negative: Tensor) -> tuple[Tensor, int]:
    """A call's text (B, L, D) with the NAG negative prompt's features (1, Ln, D) after every row's own, each part
    zero-padded to at least 512 tokens (the DiT's own padding, so every part is exactly what it would attend
    alone) -> (text (B, split + max(Ln, 512), D), split)."""
    split = max(text.shape[1], TEXT_LEN)
    own = F.pad(text, (0, 0, 0, split - text.shape[1]))
    negative = F.pad(negative, (0, 0, 0, max(0, TEXT_LEN - negative.shape[1]))).to(text)
    return torch.cat([own, negative.expand(text.shape[0], -1, -1)], 1), split


@dataclass(frozen=True)
class NagAttention:
    """NAG as a cross-attention hook (`attention.attention`'s bias object, in every main and context block): the
    keys / values the block projected from the call's text are split at `split` into the row's own prompt
    (K+, V+) and the negative prompt (K-, V-); rows marked in `guided` get NAG, the others plain attention on
    their own prompt. `inner`: the attention modulation of the own prompt (regional prompts), or None."""

    nag: NAG
    split: int
    guided: tuple[bool, ...]
    inner: object = None

    def for_block(self, block):
        return replace(self, inner=block_bias(self.inner, block))

    def around(self, inner) -> "NagAttention":
        return replace(self, inner=inner)

    def narrow(self, rows=None, queries=None, keys=None) -> "NagAttention":
        guided = self.guided if rows is None else self.guided[rows]
        return replace(self, guided=guided, inner=narrow_bias(self.inner, rows, queries, keys))

    @property
    def cache_key(self) -> tuple:
        n = self.nag
        return "nag", n.scale, n.tau, n.alpha, self.guided, bias_key(self.inner)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, backend: str = "sdpa") -> Tensor:
        """q (B, Lq, H, D), k/v (B, split + Ln, H, D) -> (B, Lq, H*D)."""
        z_pos = attention(q, k[:, :self.split], v[:, :self.split], backend, self.inner)
        n = sum(self.guided)  # the guided rows lead the batch (row 0: the conditional row)
        if not n or self.nag.off:
            return z_pos
        z_neg = attention(q[:n], k[:n, self.split:], v[:n, self.split:], backend)
        guided = normalized_attention_guidance(z_pos[:n], z_neg, self.nag.scale, self.nag.tau, self.nag.alpha)
        return torch.cat([guided.to(z_pos.dtype), z_pos[n:]])
