"""3D rotary position embedding of the Wan DiT: head_dim split into (time, height, width) axes.

Frequencies are computed in float64 (as the reference does) and applied in float32.
"""

import torch
from einops import rearrange, repeat


def axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Real dims per axis: 128 -> (44, 42, 42)."""
    hw = 2 * (head_dim // 6)
    return head_dim - 2 * hw, hw, hw


def _angles(positions: torch.Tensor, dim: int, theta: float) -> torch.Tensor:
    inv_freq = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    return torch.outer(positions.double(), inv_freq)  # (N, dim/2)


def rope_angles(grid: tuple[int, int, int], head_dim: int, device=None, theta: float = 10000.0):
    """Rotation angles for a (T, H, W) token grid, flattened t-major: (T*H*W, head_dim/2) float64.

    Reference images occupy the first temporal positions, like ordinary frames.
    """
    t, h, w = grid
    dt, dh, dw = axis_dims(head_dim)
    at, ah, aw = (_angles(torch.arange(n, device=device), d, theta) for n, d in ((t, dt), (h, dh), (w, dw)))
    return torch.cat([
        repeat(at, "t f -> t h w f", h=h, w=w),
        repeat(ah, "h f -> t h w f", t=t, w=w),
        repeat(aw, "w f -> t h w f", t=t, h=h),
    ], dim=-1).flatten(0, 2)


def upcast(x: torch.Tensor) -> torch.Tensor:
    """To float32, or keeps a wider float (float64 runs stay float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def rope_cos_sin(angles: torch.Tensor, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """(L, D/2) float64 angles -> cos, sin (1, L, 1, D/2), ready to broadcast over batch and heads."""
    return tuple(rearrange(f(angles).to(dtype), "l f -> 1 l 1 f") for f in (torch.cos, torch.sin))


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotates adjacent channel pairs of x (B, L, H, D); computes in float32, returns x's dtype."""
    pairs = rearrange(upcast(x), "b l h (f two) -> b l h f two", two=2)
    x1, x2 = pairs.unbind(-1)
    out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return rearrange(out, "b l h f two -> b l h (f two)").to(x.dtype)
