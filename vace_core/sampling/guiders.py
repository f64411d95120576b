"""Variants of classifier-free guidance, each off by default (then the sampler runs plain CFG, bit for bit).

- SLG, skip-layer guidance (Wan2GP's and kijai's WanVideoSLG; ComfyUI's SkipLayerGuidanceDiT): chosen main blocks
  are skipped in one pass during a window of steps. mode "uncond" (Wan2GP, kijai, ComfyUI's
  SkipLayerGuidanceDiTSimple): the unconditional pass skips them, v = v_u' + g (v_c - v_u'). mode "third"
  (ComfyUI's SkipLayerGuidanceDiT, after SD3.5): a third pass, the conditional one with the blocks skipped, on
  the denoised predictions D = x - sigma v:
      D = D_cfg + s (D_c - D_skip);   with rescale r != 0:  D *= r std(D_c) / std(D) + (1 - r)
  A skipped main block leaves the residual stream as it was and adds no VACE hint (as the peers, whose hints
  join inside or right after the block); the context blocks still run, so later hints are unchanged.
  Defaults: block 9, steps 10%-90% (Wan2GP's Wan2.1 defaults), mode "uncond"; third-pass scale 3, rescale 0
  (ComfyUI's defaults).
- CFG-Zero* (Fan et al., WeichenFan/CFG-Zero-star): per sample, the optimised scale
      s* = <v_c, v_u> / (||v_u||^2 + 1e-8)    (over all of a sample's latent values, in float32)
      v = s* v_u + g (v_c - s* v_u)
  and zero-init: v = 0 for the first K steps. The reference zeroes the steps i <= zero_steps, so its
  zero_steps = K - 1; its Wan2.1 T2V setting zero_steps=1 ("first 2 steps, 4% of the total") is K = 2 here.
- APG, adaptive projected guidance (Sadat et al., arXiv 2410.02416, Algorithm 1), on the denoised predictions
  D = x - sigma v, per sample over all of its latent values:
      Delta = D_c - D_u;  momentum beta: m <- Delta + beta m, Delta = m   (beta = 0: no running average)
      norm threshold r > 0: Delta *= min(1, r / ||Delta||)
      Delta = Delta_orth + eta Delta_par      (parallel / orthogonal to D_c)
      D = D_c + (g - 1) Delta
  eta 1 with beta 0 and r 0 is CFG. Defaults: eta 0 and beta -0.5 (the paper's recommendation); r 0 (off: the
  paper tunes r per model and resolution, and a latent's norm grows with its size).
CFG-Zero* and APG both replace the CFG combination: one at a time. Each needs the unconditional pass (guidance
above 1); SLG's third-pass mode also works at guidance 1.
"""

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..errors import VaceError
from .guidance import cfg


def _in_window(start: float, end: float, step: int, steps: int) -> bool:
    return start <= step / steps < end


def _check_window(what: str, start: float, end: float):
    if not 0 <= start <= end <= 1:
        raise VaceError(f"{what} start {start} and end {end} must be fractions of the steps with "
                        "0 <= start <= end <= 1")


def _per_sample_dims(v: Tensor) -> list[int]:
    return list(range(1, v.ndim))


# ---- SLG ----

SLG_MODES = ("uncond", "third")


@dataclass(frozen=True)
class SkipLayerGuidance:
    """SLG settings (module docstring): main block indices, the window of steps (start <= i / n < end), the mode,
    and for the third pass its scale and rescale."""

    blocks: tuple[int, ...] = (9,)
    start: float = 0.1
    end: float = 0.9
    mode: str = "uncond"
    scale: float = 3.0
    rescale: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "blocks", tuple(int(b) for b in self.blocks))
        if not self.blocks or min(self.blocks) < 0:
            raise VaceError(f"SLG blocks are main block indices from 0 (Wan2.1 1.3B has 30, 14B 40), got "
                            f"{self.blocks}")
        if self.mode not in SLG_MODES:
            raise VaceError(f"SLG mode {self.mode!r}: choose 'uncond' (the unconditional pass skips the blocks) or "
                            "'third' (a third pass)")
        _check_window("SLG", self.start, self.end)
        if not self.scale >= 0 or not self.rescale >= 0:
            raise VaceError(f"SLG scale and rescale are 0 or more (ComfyUI: 3 and 0), got {self.scale}, "
                            f"{self.rescale}")

    def check_model(self, num_layers: int):
        if max(self.blocks) >= num_layers:
            raise VaceError(f"SLG block {max(self.blocks)} does not exist: this model has main blocks 0 to "
                            f"{num_layers - 1}")

    def active(self, step: int, steps: int) -> bool:
        return _in_window(self.start, self.end, step, steps)


def slg_third_pass(d_cfg: Tensor, d_cond: Tensor, d_skip: Tensor, scale: float, rescale: float) -> Tensor:
    """SkipLayerGuidanceDiT's update on denoised predictions (B, ...): D_cfg + s (D_c - D_skip), then the rescale
    towards std(D_c) (over the whole tensor, as ComfyUI)."""
    d = d_cfg + (d_cond - d_skip) * scale
    if rescale:
        factor = d_cond.std() / d.std()
        d = d * (rescale * factor + (1 - rescale))
    return d


# ---- CFG-Zero* ----

@dataclass(frozen=True)
class CFGZeroStar:
    """CFG-Zero* settings: zero_init_steps K (module docstring; 0 = the optimised scale alone)."""

    zero_init_steps: int = 2

    def __post_init__(self):
        if isinstance(self.zero_init_steps, bool) or not isinstance(self.zero_init_steps, int) or \
                self.zero_init_steps < 0:
            raise VaceError(f"CFG-Zero* zero_init_steps is a whole number of steps >= 0 (Wan2.1: 2 of 50), got "
                            f"{self.zero_init_steps!r}")


def optimized_scale(v_cond: Tensor, v_uncond: Tensor) -> Tensor:
    """s* = <v_c, v_u> / (||v_u||^2 + 1e-8) per sample, float32 -> (B, 1, ..., 1)."""
    c, u = v_cond.float().flatten(1), v_uncond.float().flatten(1)
    s = (c * u).sum(1) / ((u * u).sum(1) + 1e-8)
    return s.view(-1, *[1] * (v_cond.ndim - 1))


def cfg_zero_star(v_cond: Tensor, v_uncond: Tensor, scale: float, step: int, zero_init_steps: int) -> Tensor:
    """CFG-Zero*'s velocity (module docstring) at `step` (from 0)."""
    if step < zero_init_steps:
        return torch.zeros_like(v_cond)
    s = optimized_scale(v_cond, v_uncond).to(v_cond.dtype)
    return s * v_uncond + scale * (v_cond - s * v_uncond)


# ---- APG ----

@dataclass
class AdaptiveProjectedGuidance:
    """APG settings (module docstring) and the running average of the run in progress (`begin` resets it)."""

    eta: float = 0.0
    norm_threshold: float = 0.0
    momentum: float = -0.5
    _average: Tensor | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        if not self.norm_threshold >= 0:
            raise VaceError(f"APG norm_threshold is 0 (off) or more, got {self.norm_threshold!r}")
        if not -1 < self.momentum < 1:
            raise VaceError(f"APG momentum is a running-average weight above -1 and below 1 (the paper: -0.5), got "
                            f"{self.momentum!r}")
        if not abs(self.eta) < float("inf"):
            raise VaceError(f"APG eta must be a number (0: parallel part removed, 1: kept), got {self.eta!r}")

    def begin(self):
        self._average = None

    def __call__(self, d_cond: Tensor, d_uncond: Tensor, scale: float) -> Tensor:
        """The guided denoised prediction D (B, ...) from D_c and D_u; updates the running average."""
        delta = d_cond - d_uncond
        if self.momentum:
            self._average = delta if self._average is None else delta + self.momentum * self._average
            delta = self._average
        dims = _per_sample_dims(delta)
        if self.norm_threshold > 0:
            norm = delta.norm(p=2, dim=dims, keepdim=True)
            delta = delta * torch.minimum(torch.ones_like(norm), self.norm_threshold / norm)
        unit = torch.nn.functional.normalize(d_cond.double(), dim=dims)  # the projection in float64, as the paper
        parallel = (delta.double() * unit).sum(dims, keepdim=True) * unit
        update = (delta.double() - parallel + self.eta * parallel).to(delta.dtype)
        return d_cond + (scale - 1) * update


# ---- the combination the sampler calls ----

def combine(v_cond: Tensor, v_uncond: Tensor, scale: float, x: Tensor, sigma: float, step: int,
            zero_star: CFGZeroStar | None = None, apg: AdaptiveProjectedGuidance | None = None) -> Tensor:
    """The guided velocity from the two branches: plain CFG unless CFG-Zero* or APG is set. x (B, ...) is what
    the model saw and sigma its noise level (APG works on D = x - sigma v)."""
    if zero_star is not None:
        return cfg_zero_star(v_cond, v_uncond, scale, step, zero_star.zero_init_steps)
    if apg is not None:
        return (x - apg(x - sigma * v_cond, x - sigma * v_uncond, scale)) / sigma
    return cfg(v_cond, v_uncond, scale)
