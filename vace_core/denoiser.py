"""The denoiser contract: what the sampler, the long-video modes, step caching and multi-process runs may ask of
a model, and how a feature plugs in.

A denoiser (`Denoiser`) is anything with
- `device`, `compute_dtype`, `config` (a `VaceConfig`): where inputs go, their dtype, the model's shape;
- the call `(x, t, text, contexts, strengths, *, self_bias=None, cross_bias=None) -> v` (VaceTransformer.forward:
  x (B, 16, T, H, W) in the compute dtype, t (B,), text (B, L, D), one (B or 1, 96, T, H, W) context per active
  stream and its strength, attention biases for the main blocks);
- `check(x, contexts, strengths)`: the input checks of the call, without running it;
- `staged`: True when `embed` / `run_blocks` / `unpatchify` exist with VaceTransformer's meaning (the call is
  unpatchify(run_blocks(embed(...)))): step caches work between them. A wrapper that changes what the call
  computes (blending windows, adding guidance passes) sets `staged = False`: it "cannot be staged", and a step
  cache then sits inside it, on the model it calls (see `Layer`).
- `agree(flag) -> flag`: a yes/no decision made the same on every process (one process: the flag itself);
- `weights_checked()`: waits for the NaN/inf check of the weights the loader left running in the background
  (vace_core.checkpoints.finite) and raises its error; the sampler calls it before the first step.

VaceTransformer, ParallelVace, Experts (the expert of the timestep), the ComfyUI nodes' `Managed` wrapper and
the long-video wrappers (CarryGuidance, FusedWindows, LatentReplacement) follow it; `Wrapper` passes everything
to `inner`, so a new wrapper overrides only what it changes.

How a feature reaches the sampler: as a `Layer`, `layer(net, step) -> net`, given to `pipeline.sample_latent
(layers=...)`. Every step the sampler takes the expert of the timestep (Wan2.2) and applies the step cache
(innermost: it needs the staged model), then the layers in order (inner first), then the regional-prompt biases
(outermost, so windows and guidance passes cut them with `narrow_bias`). A layer gets the `Step` (index, sigma,
timestep, every stream's strength) and returns a denoiser for this step only; per-run state (a cache's
residuals) lives in an object the caller made for the run, never in the frozen settings. Attention hooks (NAG,
regional prompts) are bias objects passed to the call: they implement `for_block`/`attend` (vace_core.attention)
and `narrow` (below), so every wrapper that cuts rows, windows or shards cuts them too.

A pair that cannot work together is refused when it is built, with `refuse` (both features named, and what to
do instead).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from .errors import VaceError


@dataclass(frozen=True)
class Step:
    """What the sampler knows about this step: index from 0 of `total`, its sigma and the DiT's timestep, and
    every context stream's strength (0: inactive), inactive ones included."""

    index: int
    total: int
    sigma: float
    timestep: float
    strengths: tuple[float, ...] = ()


@runtime_checkable
class Denoiser(Protocol):
    device: torch.device
    compute_dtype: torch.dtype
    config: object
    staged: bool

    def __call__(self, x: Tensor, t: Tensor, text: Tensor, contexts: Sequence[Tensor], strengths: Sequence[float],
                 *, self_bias=None, cross_bias=None) -> Tensor: ...

    def check(self, x: Tensor, contexts: Sequence[Tensor], strengths: Sequence[float]) -> None: ...

    def agree(self, flag: bool) -> bool: ...

    def weights_checked(self) -> None: ...


Layer = Callable[[Denoiser, Step], Denoiser]


class Wrapper:
    """A denoiser around `inner` that passes everything through; subclasses override what they change (and set
    `staged = False` when their call is not unpatchify(run_blocks(embed(...))))."""

    def __init__(self, inner):
        self.inner = inner

    @property
    def device(self) -> torch.device:
        return self.inner.device

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.inner.compute_dtype

    @property
    def config(self):
        return self.inner.config

    @property
    def staged(self) -> bool:
        return self.inner.staged

    def __call__(self, x, t, text, contexts, strengths, *, self_bias=None, cross_bias=None):
        return self.inner(x, t, text, contexts, strengths, self_bias=self_bias, cross_bias=cross_bias)

    def check(self, x, contexts, strengths) -> None:
        self.inner.check(x, contexts, strengths)

    def agree(self, flag: bool) -> bool:
        return self.inner.agree(flag)

    def weights_checked(self) -> None:
        self.inner.weights_checked()

    def embed(self, x, t, text, contexts):
        return self.inner.embed(x, t, text, contexts)

    def run_blocks(self, tokens, strengths=(), self_bias=None, cross_bias=None, **stages):
        return self.inner.run_blocks(tokens, strengths, self_bias, cross_bias, **stages)

    def unpatchify(self, x, tokens, dtype):
        return self.inner.unpatchify(x, tokens, dtype)


def refuse(first: str, second: str, instead: str):
    """The error for a pair of features that cannot run together: both named, and what to do instead."""
    raise VaceError(f"{first} and {second} cannot be combined: {instead}")


def require_staged(net, feature: str) -> None:
    """`feature` works between the stages: refuses a denoiser that cannot be staged, naming both."""
    if not getattr(net, "staged", False):
        refuse(feature, type(net).__name__, f"{type(net).__name__} cannot be staged; apply {feature} to the model "
               "it wraps (pipeline.sample_latent puts the step cache innermost)")


def narrow_bias(bias, rows=None, queries=None, keys=None):
    """An attention bias for part of the call: batch `rows` (a slice), query tokens `queries` and key tokens
    `keys` (index tensors; None: all). Tensors (broadcastable to (B, heads, Lq, Lk)) are indexed (size-1 dims
    stay); bias objects narrow themselves (`narrow(rows, queries, keys)`); None stays None."""
    if bias is None or (rows is None and queries is None and keys is None):
        return bias
    if not isinstance(bias, Tensor):
        return bias.narrow(rows, queries, keys)
    bias = bias.reshape((1,) * (4 - bias.ndim) + tuple(bias.shape))
    if rows is not None and bias.shape[0] > 1:
        bias = bias[rows]
    if queries is not None and bias.shape[2] > 1:
        bias = bias.index_select(2, queries.to(bias.device))
    if keys is not None and bias.shape[3] > 1:
        bias = bias.index_select(3, keys.to(bias.device))
    return bias



def compose_bias(hook, inner):
    """An attention hook that wraps another (NAG and skip-layer guidance around regional prompts' modulation):
    `hook.around(inner)`; either alone when the other is None. Two modulations that cannot nest are refused."""
    if hook is None or inner is None:
        return inner if hook is None else hook
    if not hasattr(hook, "around"):
        refuse(type(hook).__name__, type(inner).__name__, "drop one of the two attention modulations")
    return hook.around(inner)


def bias_key(bias):
    """What a step cache compares of an attention bias: the hook's own `cache_key` (NAG and skip-layer guidance
    say what they change), True for any other modulation, None for none."""
    if bias is None:
        return None
    return getattr(bias, "cache_key", True)
