"""Step caching with TeaCache (Liu et al., "Timestep Embedding Tells: It's Time to Cache for Video Diffusion
Model", arXiv 2411.19108), made VACE-aware.

TeaCache watches the DiT's modulated input (the timestep embedding) from one model evaluation to the next:
its relative L1 change, rescaled by a polynomial fitted on Wan2.1 T2V, estimates how much the blocks' output
changes. While the accumulated estimate stays below the threshold, an evaluation skips the blocks and adds the
residual (blocks' output - input) of the last evaluation that ran them. Embedding and head still run, so the
saved work is the blocks (main and context), nearly all of a forward.

VACE-aware: the residual includes the context blocks' hints scaled by each VCU stream's strength, so a cached
evaluation never reuses a residual computed under other stream strengths: a stream's start/end window opening
or closing forces a computed step, and so does a strength curve once any stream's strength has moved more than
STRENGTH_TOLERANCE (0.05, absolute) from the strength the residual was computed under. Attention hooks (NAG,
skip-layer guidance, regional prompts) are part of the key: switching one on or off forces a computed step.
Caches are per CFG branch (the residual keeps one row per branch of the batched forward; a change of branches
forces a computed step), per denoiser (Wan2.2's two experts each keep their own), and per call of a step
(`Cached`: the i-th call of every step shares a cache, so fused long-video windows keep one cache per window
position, carry guidance's window-free pass its own, and SLG's third pass its own). A cache is reset at the
start of every sampling run (so per long-video window too). On several processes the decision is agreed
(`Denoiser.agree`): every rank skips or computes together (the decision input, the timestep embedding, is the
same on every rank anyway), and each rank keeps the residual of its own shard of tokens.

The decision rule is the published one (TeaCache4Wan2.1): the first `retention` steps always run, the last
step too in the timestep-embedding mode; otherwise acc += poly(|inp - prev|_1 / |prev|_1) and the blocks are
skipped while acc < threshold, acc restarting at 0 when they run.

TeaCache's `context_every_step` (the approach of vllm-omni's VACE TeaCache, vllm-project/vllm-omni pull request 5223:
"recomputes VACE conditioning blocks on every denoising step; reuses only the expensive main-block residual"): a
computed step stores the main blocks' own residual r = out - x - H (H: the sum of the scaled hints the context
blocks added); a skipped step runs the context blocks alone (they read the patch-embedded latent x0, never the main
stream) and returns x + H_now + r. It therefore differs from plain TeaCache's x + (out - x) by H_now - H exactly.
Cost per skipped step: the context blocks, about (context blocks x streams) / (main + context blocks x streams) of a
forward (1.3B, one stream: 15 of 45 blocks; 14B: 8 of 48). The decision rule is TeaCache's, unchanged.
"""

from dataclasses import dataclass, field

import numpy as np
import torch

from .denoiser import Step, Wrapper, bias_key, require_staged
from .errors import VaceError
from .settings import check, knob

# TeaCache4Wan2.1's rescaling polynomials (highest power first), fitted on Wan2.1 T2V; keyed by (mode, dim).
# "t_emb": the timestep embedding (the default); "e": the 6-way modulation (TeaCache's use_ret_steps).
COEFFICIENTS = {
    ("t_emb", 1536): (2.39676752e03, -1.31110545e03, 2.01331979e02, -8.29855975e00, 1.37887774e-01),
    ("t_emb", 5120): (-5784.54975374, 5449.50911966, -1811.16591783, 256.27178429, -13.02252404),
    ("e", 1536): (-5.21862437e04, 9.23041404e03, -5.28275948e02, 1.36987616e01, -4.99875664e-02),
    ("e", 5120): (-3.03318725e05, 4.90537029e04, -2.65530556e03, 5.87365115e01, -3.15583525e-01),
}
RETENTION = {"t_emb": 1, "e": 5}  # steps always computed at the start
LAST_STEP_COMPUTED = {"t_emb": True, "e": False}
# the published "fast" thresholds (about 1.6-2x on Wan2.1 T2V); "slow" ones are 0.05 (1.3B) and 0.14 (14B)
SUGGESTED_THRESHOLD = {1536: 0.08, 5120: 0.2}
MODES = tuple(RETENTION)
STRENGTH_TOLERANCE = 0.05  # a residual is reused while every stream's strength stays this close to its own


def strengths_moved(now, then, tolerance: float = STRENGTH_TOLERANCE) -> bool:
    """Whether the stream strengths `now` differ from `then` (those a residual was computed under): a stream
    switched on or off, or moved more than `tolerance`."""
    return len(now) != len(then) or any((a == 0) != (b == 0) or abs(a - b) > tolerance
                                        for a, b in zip(now, then, strict=True))


SIZES = {"auto": None, "1.3B": 1536, "14B": 5120}  # which fitted polynomial: the model's width, or a named one
SIZES_HELP = ("Which fitted polynomial rescales the change. auto: the model's size (1.3B or 14B, read from its "
              "weights; Wan2.2 A14B experts use the 14B one).")
LABELS = {"threshold": "the TeaCache threshold", "mode": "the TeaCache mode"}


def relative_l1(inp: torch.Tensor, prev: torch.Tensor) -> float:
    """mean |inp - prev| / mean |prev|, as a Python float (one device sync per step)."""
    return ((inp - prev).abs().mean() / prev.abs().mean()).item()


@dataclass
class CacheStats:
    """Model evaluations of the last run (one per CFG branch per step): how many ran the blocks, how many
    reused the cached residual."""

    computed: int = 0
    skipped: int = 0
    label: str = "the step cache"  # which cache (TeaCache, MagCache): the sampler shows it

    def __add__(self, other: "CacheStats") -> "CacheStats":
        return CacheStats(self.computed + other.computed, self.skipped + other.skipped, other.label)

    def __str__(self):
        total = self.computed + self.skipped
        return f"{self.label} skipped the blocks of {self.skipped} of {total} model evaluations"


@dataclass
class DenoiserCache:
    """The cache of one denoiser: previous modulated input, accumulated estimate, residual and what it was
    computed under (the stream strengths and the CFG branches)."""

    prev: torch.Tensor | None = None
    acc: float = 0.0
    residual: torch.Tensor | None = None
    key: tuple = ()
    strengths: tuple = ()
    branches: list = field(default_factory=list)  # MagCache: per CFG branch [ratio, error, steps] since computed


class ResidualCache:
    """What every step cache shares: one cache per denoiser and call slot, the residual (blocks' output - input)
    reused while `_decide` allows, the VACE-aware forced steps, the decision agreed across processes, the counts.
    Subclasses are dataclasses with `threshold` (0: off, the plain forward) and `stats` fields, and `_decide`."""

    label = "step cache"
    context_every_step = False  # TeaCache's option: the context blocks run on skipped steps too

    def _check_threshold(self, hint: str):
        if not np.isfinite(self.threshold) or self.threshold < 0:
            raise VaceError(f"the {self.label} threshold must be 0 (off) or more, got {self.threshold!r} ({hint})")
        self._states: dict[tuple, DenoiserCache] = {}
        self._steps = 0

    def begin(self, steps: int) -> None:
        """Starts a run of `steps` steps: empty caches, zero counts."""
        self._states, self._steps, self.stats = {}, steps, CacheStats(label=self.label)

    def layer(self, net, step: Step) -> "Cached":
        """The sampler's step cache layer (see vace_core.denoiser): `net` with this cache, for one step."""
        return Cached(net, self, step)

    def _forced(self, state: DenoiserCache, key: tuple, strengths: tuple) -> bool:
        """VACE-aware: no residual yet, other streams / hooks / batch, or strengths moved beyond the tolerance."""
        return state.residual is None or key != state.key or strengths_moved(strengths, state.strengths)

    def _decide(self, state: DenoiserCache, tokens, step: int, key: tuple, model, strengths: tuple) -> bool:
        raise NotImplementedError

    def __call__(self, model, x, t, context, vace_context=(), vace_scale=(), *, step: int, key: tuple = (),
                 strengths: tuple = (), slot: int = 0, self_bias=None, cross_bias=None) -> torch.Tensor:
        """The model's forward (same arguments and result) with the blocks skipped when the cache allows.

        model: a staged denoiser; step: the step index in the run (from 0); key: what else the residual depends
        on besides x and t, compared exactly (the attention hooks in use); strengths: every stream's strength at
        this step, compared within STRENGTH_TOLERANCE; slot: which call of the step this is (each slot has its
        own cache)."""
        if self.threshold == 0:
            self.stats.computed += x.shape[0]
            return model(x, t, context, vace_context, vace_scale, self_bias=self_bias, cross_bias=cross_bias)
        require_staged(model, self.label)
        model.check(x, vace_context, vace_scale)
        tokens = model.embed(x, t, context, vace_context)
        state = self._states.setdefault((id(model), slot), DenoiserCache())
        key, strengths = (tuple(key), x.shape[0]), tuple(strengths)
        fresh = self.context_every_step
        if model.agree(self._decide(state, tokens, step, key, model, strengths)):
            # another rank's decision to compute restarts the estimate here too
            state.acc, state.key, state.strengths, state.branches = 0.0, key, strengths, []
            if fresh:  # the main blocks' own contribution: the hints are added afresh every step
                out, hints = model.run_blocks(tokens, vace_scale, self_bias, cross_bias, hints=True)
                state.residual = out - tokens.x - hints
            else:
                out = model.run_blocks(tokens, vace_scale, self_bias, cross_bias)
                state.residual = out - tokens.x
            self.stats.computed += x.shape[0]
        else:
            base = model.run_blocks(tokens, vace_scale, self_bias, cross_bias, main=False) if fresh else tokens.x
            out = base + state.residual
            self.stats.skipped += x.shape[0]
        return model.unpatchify(out, tokens, x.dtype)


@dataclass
class TeaCache(ResidualCache):
    """TeaCache settings, and the cache of the run in progress. threshold 0 turns caching off (the plain
    forward runs). coefficients: None picks TeaCache's Wan2.1 polynomial for the model's size (1.3B or 14B,
    from its width; Wan2.2 A14B experts use the 14B one, as no Wan2.2 fit is published)."""

    threshold: float = knob(0.08, "How much estimated change may pile up before the blocks run again. 0 turns "
                            "caching off. Published: 1.3B 0.05 (safe) to 0.08 (about 2x); 14B 0.14 to 0.2.",
                            min=0.0, max=1.0, step=0.005)
    mode: str = knob("t_emb", "What TeaCache watches. t_emb, the timestep embedding: the published default (first "
                     "and last steps always computed). e, the modulation: TeaCache's 'retention steps' variant "
                     "(first 5 steps always computed; allows higher thresholds).", choices=MODES)
    coefficients: tuple[float, ...] | None = None
    context_every_step: bool = knob(False, "Run the VACE context blocks on every step, skipped ones too, and reuse "
                                    "only the main blocks' residual (vllm-omni's VACE TeaCache): the hints follow the "
                                    "current latent and strengths, at the cost of the context blocks on skipped steps "
                                    "(1.3B: 15 of 45 blocks per VCU stream; 14B: 8 of 48).")
    stats: CacheStats = field(default_factory=CacheStats)

    label = "TeaCache"

    def __post_init__(self):
        # the node's and the command line's maximum (1) suits the published polynomials; custom coefficients have
        # their own scale
        check(self, LABELS, open_above=("threshold",))
        if self.coefficients is not None and (len(self.coefficients) < 2 or not np.isfinite(self.coefficients).all()):
            raise VaceError(f"TeaCache coefficients {tuple(self.coefficients)!r} are not a polynomial (at least two "
                            "finite numbers, highest power first, as TeaCache publishes them): without one the "
                            "estimate of how much a step changes means nothing. Leave coefficients out to use "
                            "TeaCache's Wan2.1 ones.")
        self.begin(0)

    def _coefficients(self, model) -> tuple[float, ...]:
        if self.coefficients is not None:
            return self.coefficients
        dim = model.config.dim
        if (self.mode, dim) not in COEFFICIENTS:
            raise VaceError(f"TeaCache has no published coefficients for a model of width {dim} (only Wan2.1 "
                            "1.3B = 1536 and 14B = 5120): pass coefficients=")
        return COEFFICIENTS[self.mode, dim]

    def should_compute(self, state: DenoiserCache, inp: torch.Tensor, step: int, key: tuple,
                       coefficients: tuple[float, ...]) -> bool:
        """The published decision for this step (0 <= step < the run's steps); updates the accumulated estimate
        and the previous input in `state`."""
        forced = (step < RETENTION[self.mode] or (LAST_STEP_COMPUTED[self.mode] and step >= self._steps - 1)
                  or state.residual is None or key != state.key)
        if forced:
            compute = True
        else:
            state.acc += float(np.polyval(coefficients, relative_l1(inp, state.prev)))
            compute = state.acc >= self.threshold
        if compute:
            state.acc = 0.0
        state.prev = inp
        return compute

    def decide(self, state: DenoiserCache, inp: torch.Tensor, step: int, key: tuple, coefficients: tuple[float, ...],
               strengths: tuple = ()) -> bool:
        """`should_compute`, and a computed step whenever a stream's strength moved beyond STRENGTH_TOLERANCE from
        the strengths of the cached residual (recorded here when the step computes)."""
        moved = state.residual is not None and strengths_moved(strengths, state.strengths)
        compute = self.should_compute(state, inp, step, key, coefficients) or moved
        if compute:
            state.acc, state.strengths = 0.0, strengths
        return compute

    def _decide(self, state, tokens, step, key, model, strengths) -> bool:
        inp = tokens.t_emb if self.mode == "t_emb" else tokens.e
        return self.decide(state, inp, step, key, self._coefficients(model), strengths)


class Cached(Wrapper):
    """One step's denoiser with a step cache (TeaCache, MagCache, EasyCache): the work of `inner` (a staged denoiser)
    skipped when the cache allows. The i-th call within the step uses cache slot i; the key is which streams are on
    and the attention hooks in use (`denoiser.bias_key`: NAG, skip-layer guidance, regional prompts' first steps);
    the strengths themselves are compared within STRENGTH_TOLERANCE."""

    staged = False

    def __init__(self, inner, cache: ResidualCache, step: Step):
        if cache.threshold:
            require_staged(inner, cache.label)
        super().__init__(inner)
        self.cache, self.step, self.calls = cache, step, 0

    def __call__(self, x, t, text, contexts, strengths, *, self_bias=None, cross_bias=None):
        slot, self.calls = self.calls, self.calls + 1
        return self.cache(self.inner, x, t, text, contexts, strengths, step=self.step.index, slot=slot,
                          key=(tuple(s != 0 for s in self.step.strengths), bias_key(self_bias), bias_key(cross_bias)),
                          strengths=self.step.strengths,
                          self_bias=self_bias, cross_bias=cross_bias)
