"""EasyCache (Zhou et al., "Less is Enough: Training-Free Video Diffusion Acceleration via Runtime-Adaptive Caching",
H-EmbodVis/EasyCache) as a VACE-aware step cache beside TeaCache and MagCache (vace_core.step_cache: the forced steps,
per-call slots, per-expert caches and the decision agreed across processes are shared).

EasyCache needs no fitted coefficients: it measures, at run time, the transformation rate of the whole model
between its last two computed calls of the conditional branch,
    k = mean|v_i - v_j| / mean|x_i - x_j|        (v: the model's output, x: its input latent)
and predicts the output's relative change from the input's:
    acc += k * mean|x_now - x_prev| / mean|v_last|  (x_prev: the input of the previous call, computed or not)
The whole forward (embedding, blocks, head) is skipped while acc < threshold, returning x_now + (v_last - x_last):
the cached difference of the last computed call, per CFG branch (one row each in the batched forward). acc restarts
at 0 when a call computes. Rule and defaults from EasyCache4Wan2.1/easycache_generate.py (`easycache_forward`):
the first 10 steps (`ret_steps = 10 * 2` calls) and the last step (`cutoff_steps = 2 n - 2`) always compute, the
decision is made on the conditional branch and the unconditional one follows it, threshold 0.05 (`--thresh`;
its help: 0.1 for about 2x, 0.2 for about 3x on Wan2.1). ComfyUI's EasyCache node (comfy_extras/nodes_easycache.py)
applies the same rule between sigma percentages (defaults 0.2, 0.15..0.95) instead of step counts.

VACE-aware as TeaCache: a stream switching, a strength moving beyond STRENGTH_TOLERANCE, attention hooks or the
CFG rows changing force a computed call. The decision input and the model's output are the whole latent on every
process (sequence parallelism gathers the output), so every rank decides alike; `agree` makes it certain.
"""

from dataclasses import dataclass, field

import torch

from .settings import check, knob
from .step_cache import CacheStats, DenoiserCache, ResidualCache

LABELS = {"threshold": "the EasyCache threshold", "warmup": "the EasyCache warm-up steps"}


def mean_abs(x: torch.Tensor) -> torch.Tensor:
    """mean |x| in float32, a 0-dim tensor (as the reference keeps it)."""
    return x.float().abs().mean()


@dataclass
class EasyState(DenoiserCache):
    """One denoiser's EasyCache state. prev: the conditional input of the previous call; computed_input and output:
    the conditional input and output of the last computed call; rate: k (None until two calls computed); acc the
    accumulated predicted change (a 0-dim tensor once accumulating); residual: output - input of every row."""

    computed_input: torch.Tensor | None = None
    output: torch.Tensor | None = None
    rate: torch.Tensor | None = None


@dataclass
class EasyCache(ResidualCache):
    """EasyCache settings, and the cache of the run in progress. threshold 0 turns caching off (the plain forward
    runs)."""

    threshold: float = knob(0.05, "How much predicted change of the model's output may pile up before it runs "
                            "again. 0 turns caching off. Published (Wan2.1): 0.05 default; about 0.1 for 2x, 0.2 "
                            "for 3x.", min=0.0, max=1.0, step=0.005)
    warmup: int = knob(10, "Steps always computed at the start (published: 10; the last step is always computed "
                       "too). Runs of warmup + 1 steps or fewer never skip.", min=0, max=200)
    stats: CacheStats = field(default_factory=CacheStats)

    label = "EasyCache"

    def __post_init__(self):
        check(self, LABELS, open_above=("threshold",))  # the node's maximum (1) is the users'
        self._check_threshold("published default 0.05; lower is safer")

    def decide(self, state: EasyState, inp: torch.Tensor, step: int) -> bool:
        """The published decision for the conditional input `inp` at `step` (0 <= step < the run's steps);
        updates the accumulated prediction and the previous input in `state`."""
        if step < self.warmup or step >= self._steps - 1:
            compute = True
        elif state.prev is None or state.output is None or state.rate is None:
            compute = True
        else:
            state.acc = state.acc + state.rate * (mean_abs(inp - state.prev) / mean_abs(state.output))
            compute = bool(state.acc >= self.threshold)
        state.prev = inp
        if compute:
            state.acc = 0.0
        return compute

    def observe(self, state: EasyState, inp: torch.Tensor, out: torch.Tensor) -> None:
        """A computed call's conditional input and output: the transformation rate since the last computed call."""
        if state.output is not None and state.computed_input is not None:
            state.rate = mean_abs(out - state.output) / mean_abs(inp - state.computed_input)
        state.computed_input, state.output = inp, out

    def __call__(self, model, x, t, context, vace_context=(), vace_scale=(), *, step: int, key: tuple = (),
                 strengths: tuple = (), slot: int = 0, self_bias=None, cross_bias=None) -> torch.Tensor:
        """The model's call (same arguments and result), or the input plus the cached difference when the cache
        allows (as ResidualCache.__call__; row 0 is the conditional branch the decision reads)."""
        def forward():
            return model(x, t, context, vace_context, vace_scale, self_bias=self_bias, cross_bias=cross_bias)

        if self.threshold == 0:
            self.stats.computed += x.shape[0]
            return forward()
        model.check(x, vace_context, vace_scale)
        state = self._states.setdefault((id(model), slot), EasyState())
        key, strengths, inp = (tuple(key), x.shape[0]), tuple(strengths), x[:1].float()
        decided = self.decide(state, inp, step)  # always: it records the previous input
        if model.agree(decided or self._forced(state, key, strengths)):
            state.acc, state.key, state.strengths = 0.0, key, strengths
            out = forward()
            self.observe(state, inp, out[:1].float())
            state.residual = out.float() - x.float()
            self.stats.computed += x.shape[0]
            return out
        self.stats.skipped += x.shape[0]
        return (x.float() + state.residual).to(x.dtype)
