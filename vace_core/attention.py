"""One attention function for every block, with switchable kernels.

`bias` is the hook for space-time attention modulation (regional prompts, VideoGrain): an additive float
bias or a boolean keep-mask, broadcastable to (B, heads, Lq, Lk), or a modulation object with its own
`attend(q, k, v, backend)` (vace_core.regional.STLayoutAttention), which then computes the attention.
Kernels that cannot take a bias (flash-attn, SageAttention) fall back to PyTorch SDPA for that call.
"""

import importlib.util

import torch
import torch.nn.functional as F
from einops import rearrange

from .errors import VaceError

BACKENDS = ("auto", "sdpa", "flash", "sage")


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def resolve_backend(name: str) -> str:
    """Checks a backend name once, when the model is built, so a typo fails before sampling starts."""
    if name not in BACKENDS:
        raise VaceError(f"Unknown attention backend {name!r}: choose one of {', '.join(BACKENDS)}.")
    if name == "flash" and not _installed("flash_attn"):
        raise VaceError("attention backend 'flash' needs the flash-attn package: pip install flash-attn, "
                        "or choose 'sdpa'.")
    if name == "sage" and not _installed("sageattention"):
        raise VaceError("attention backend 'sage' needs the sageattention package: pip install sageattention, "
                        "or choose 'sdpa'.")
    if name == "auto":  # exact kernels only: SageAttention quantises q/k, so it is opt-in
        return "flash" if _installed("flash_attn") else "sdpa"
    return name


def block_bias(bias, block):
    """The bias that `block` (a main block's index, or "context") uses: a modulation object chooses its blocks;
    a plain tensor applies to the main blocks only."""
    if hasattr(bias, "for_block"):
        return bias.for_block(block)
    return None if block == "context" else bias


def attention(q, k, v, backend: str = "sdpa", bias=None):
    """q (B, Lq, H, D), k/v (B, Lk, H, D) -> (B, Lq, H*D)."""
    if hasattr(bias, "attend"):
        return bias.attend(q, k, v, backend)
    fast = bias is None and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16)
    if fast and backend == "flash":
        from flash_attn import flash_attn_func

        return rearrange(flash_attn_func(q, k, v), "b l h d -> b l (h d)")
    if fast and backend == "sage":
        from sageattention import sageattn

        return rearrange(sageattn(q, k, v, tensor_layout="NHD"), "b l h d -> b l (h d)")
    q, k, v = (rearrange(t, "b l h d -> b h l d") for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    return rearrange(out, "b h l d -> b l (h d)")
