"""Anchor guidance: fight long-video drift inside sampling, beside post-hoc colour matching.

At each of the early steps (step / steps < end) the predicted clean latent x̂0 = x − σ v is pulled toward the
anchor's low-frequency statistics: per latent frame f and channel c, with μ_fc / s_fc the mean / std of x̂0 over
the frame's positions and m_c / s*_c those of the anchor (over all its video latent frames),

    x̂0' = x̂0 + w · (m_c + s*_c (x̂0 − μ_fc) / s_fc − x̂0),        v' = (x − x̂0') / σ

so the solver steps toward a latent whose every frame has the anchor's colour and contrast statistics, while
the structure (x̂0 − μ) / s is the model's own. The reference latents in front are left alone. w = 0 is off
(the sampler gets no hook: today's sampling bit for bit). The anchor: the first window's final latent (a fixed
anchor, so drift cannot accumulate), or the frames the window keeps from the previous one.
"""

from dataclasses import dataclass

from torch import Tensor

from .errors import VaceError

SOURCES = ("first", "kept")
EPS = 1e-6


@dataclass(frozen=True)
class AnchorStats:
    """Per-channel mean and std (1, C, 1, 1, 1) of an anchor latent."""

    mean: Tensor
    std: Tensor

    @classmethod
    def of(cls, latent: Tensor) -> "AnchorStats":
        """latent (1, C, T, H, W) (video frames only) -> its statistics over (T, H, W)."""
        return cls(latent.mean((2, 3, 4), keepdim=True), latent.std((2, 3, 4), keepdim=True))


def pull(x0: Tensor, anchor: AnchorStats, weight: float, references: int) -> Tensor:
    """x̂0 (B, C, T, H, W) with each video latent frame's channel statistics moved by `weight` toward the
    anchor's (the formula above)."""
    video = x0[:, :, references:]
    mean, std = video.mean((3, 4), keepdim=True), video.std((3, 4), keepdim=True)
    target = anchor.mean.to(x0) + anchor.std.to(x0) * (video - mean) / (std + EPS)
    out = x0.clone()
    out[:, :, references:] = video + weight * (target - video)
    return out


def anchor_hook(anchor: AnchorStats, weight: float, end: float, references: int):
    """The sampler's x0 hook: (x̂0, step, steps) -> x̂0 pulled toward the anchor during the first `end` of the
    steps; None when w = 0 (no hook at all)."""
    if weight < 0 or not 0 <= end <= 1:
        raise VaceError(f"anchor guidance: weight {weight} must be >= 0 (0 = off) and end {end} a fraction of the "
                        "steps from 0 to 1")
    if weight == 0:
        return None

    def hook(x0: Tensor, step: int, steps: int) -> Tensor:
        return pull(x0, anchor, weight, references) if step / steps < end else x0
    return hook
