"""MagCache (Ma et al., "MagCache: Fast Video Generation with Magnitude-Aware Cache", Zehong-Ma/MagCache) as a
VACE-aware step cache beside TeaCache (vace_core.step_cache: the residual reuse, forced steps, per-call slots and
per-expert caches are shared).

The residual's magnitude ratio between consecutive steps, ||r_t|| / ||r_(t-1)||, is nearly the same for every
prompt, so it was measured once per model (MAG_RATIOS: the published Wan2.1 T2V values, one per step and CFG branch,
50 steps, conditional first, from MagCache4Wan2.1/magcache_generate.py). The published rule, per CFG branch b at
step i (call index c = 2 i + b of a run of 2 n calls): from c >= int(2 n * retention) on,
    ratio_b *= MAG_RATIOS[c];  steps_b += 1;  err_b += |1 - ratio_b|
    skip (reuse the cached residual) while err_b < threshold and steps_b <= K, else compute and reset
    (ratio_b, err_b, steps_b) = (1, 0, 0)
For a step count other than 50 each branch's ratios are resampled by nearest index, as the reference does.
Defaults: threshold 0.12, retention 0.2, K 2 (the reference script's). One batched forward holds both CFG
branches, so it computes when either branch's rule says compute (then both restart: both residuals are fresh);
guidance 1 runs the conditional branch alone, exactly the published rule. VACE-aware as TeaCache (streams switching,
strengths moving beyond STRENGTH_TOLERANCE, attention hooks changing force a computed step).
"""

from dataclasses import dataclass, field

import numpy as np

from .errors import VaceError
from .settings import check, knob
from .step_cache import CacheStats, DenoiserCache, ResidualCache

LABELS = {"threshold": "the MagCache threshold", "retention": "the MagCache retention", "k": "MagCache K"}

# ||r_t|| / ||r_(t-1)|| per call (conditional, unconditional) of 50 steps, Wan2.1 T2V, by model width
MAG_RATIOS = {
    1536: (1.0, 1.0,
        1.0124, 1.02213, 1.00166, 1.0041, 0.99791, 1.00061, 0.99682, 0.99762, 0.99634, 0.99685, 0.99567, 0.99586,
        0.99416, 0.99422, 0.99578, 0.99575, 0.9957, 0.99563, 0.99511, 0.99506, 0.99535, 0.99531, 0.99552, 0.99549,
        0.99541, 0.99539, 0.9954, 0.99536, 0.99489, 0.99485, 0.99518, 0.99514, 0.99484, 0.99478, 0.99481, 0.99479,
        0.99415, 0.99413, 0.99419, 0.99416, 0.99396, 0.99393, 0.99388, 0.99386, 0.99349, 0.99349, 0.99309, 0.99304,
        0.9927, 0.9927, 0.99228, 0.99226, 0.99171, 0.9917, 0.99137, 0.99135, 0.99068, 0.99063, 0.99005, 0.99003,
        0.98944, 0.98942, 0.98849, 0.98849, 0.98758, 0.98757, 0.98644, 0.98643, 0.98504, 0.98503, 0.9836, 0.98359,
        0.98202, 0.98201, 0.97977, 0.97978, 0.97717, 0.97718, 0.9741, 0.97411, 0.97003, 0.97002, 0.96538, 0.96541,
        0.9593, 0.95933, 0.95086, 0.95089, 0.94013, 0.94019, 0.92402, 0.92414, 0.90241, 0.9026, 0.86821, 0.86868,
        0.81838, 0.81939,),
    5120: (1.0, 1.0,
        1.02504, 1.03017, 1.00025, 1.00251, 0.9985, 0.99962, 0.99779, 0.99771, 0.9966, 0.99658, 0.99482, 0.99476,
        0.99467, 0.99451, 0.99664, 0.99656, 0.99434, 0.99431, 0.99533, 0.99545, 0.99468, 0.99465, 0.99438, 0.99434,
        0.99516, 0.99517, 0.99384, 0.9938, 0.99404, 0.99401, 0.99517, 0.99516, 0.99409, 0.99408, 0.99428, 0.99426,
        0.99347, 0.99343, 0.99418, 0.99416, 0.99271, 0.99269, 0.99313, 0.99311, 0.99215, 0.99215, 0.99218, 0.99215,
        0.99216, 0.99217, 0.99163, 0.99161, 0.99138, 0.99135, 0.98982, 0.9898, 0.98996, 0.98995, 0.9887, 0.98866,
        0.98772, 0.9877, 0.98767, 0.98765, 0.98573, 0.9857, 0.98501, 0.98498, 0.9838, 0.98376, 0.98177, 0.98173,
        0.98037, 0.98035, 0.97678, 0.97677, 0.97546, 0.97543, 0.97184, 0.97183, 0.96711, 0.96708, 0.96349, 0.96345,
        0.95629, 0.95625, 0.94926, 0.94929, 0.93964, 0.93961, 0.92511, 0.92504, 0.90693, 0.90678, 0.8796, 0.87945,
        0.86111, 0.86189,),
}


def nearest_interp(ratios: np.ndarray, length: int) -> np.ndarray:
    """The reference's resampling: `length` values at the nearest (rounded) indices of `ratios`."""
    if length == 1:
        return ratios[-1:]
    return ratios[np.round(np.arange(length) * (len(ratios) - 1) / (length - 1)).astype(int)]


def step_ratios(ratios, steps: int) -> np.ndarray:
    """(steps, 2) ratios: conditional and unconditional per step."""
    ratios = np.asarray(ratios, dtype=np.float64)
    if len(ratios) == 2 * steps:
        return ratios.reshape(steps, 2)
    return np.stack([nearest_interp(ratios[0::2], steps), nearest_interp(ratios[1::2], steps)], 1)


@dataclass
class MagCache(ResidualCache):
    """MagCache settings and the cache of the run in progress. threshold 0 turns caching off. ratios: None picks
    the published Wan2.1 ratios for the model's width (Wan2.2 A14B experts use the 14B ones: none are published
    for VACE or Wan2.2 in this form)."""

    threshold: float = knob(0.12, "How much accumulated magnitude error a skipped run may build up (published "
                            "default 0.12; lower is safer). 0 turns caching off.", min=0.0, max=1.0, step=0.005)
    retention: float = knob(0.2, "Fraction of the first steps always computed (published default 0.2).",
                            min=0.0, max=1.0, step=0.01)
    k: int = knob(2, "At most this many steps in a row reuse the cache (published default 2).", min=1, max=10)
    ratios: tuple[float, ...] | None = None
    stats: CacheStats = field(default_factory=CacheStats)

    label = "MagCache"

    def __post_init__(self):
        # the node's and the command line's maxima; a library caller may allow longer skipped runs
        check(self, LABELS, open_above=("threshold", "k"))
        self._check_threshold("published default 0.12; lower is safer")

    def _ratios(self, model) -> np.ndarray:
        if self.ratios is not None:
            return step_ratios(self.ratios, self._steps)
        dim = model.config.dim
        if dim not in MAG_RATIOS:
            raise VaceError(f"MagCache has no published ratios for a model of width {dim} (only Wan2.1 1.3B = 1536 "
                            "and 14B = 5120): pass ratios=")
        return step_ratios(MAG_RATIOS[dim], self._steps)

    def branch_decision(self, branch: list, step: int, b: int, ratios: np.ndarray) -> bool:
        """The published rule for CFG branch b at `step`; `branch` = [ratio, err, steps], updated."""
        if 2 * step + b < int(2 * self._steps * self.retention):
            return True
        branch[0] *= ratios[step, b]
        branch[2] += 1
        branch[1] += abs(1 - branch[0])
        if branch[1] < self.threshold and branch[2] <= self.k:
            return False
        branch[:] = [1.0, 0.0, 0]
        return True

    def _decide(self, state: DenoiserCache, tokens, step, key, model, strengths) -> bool:
        rows = key[-1]
        if not state.branches:
            state.branches = [[1.0, 0.0, 0] for _ in range(min(rows, 2))]
        ratios = self._ratios(model)
        decisions = [self.branch_decision(branch, step, b, ratios) for b, branch in enumerate(state.branches)]
        return self._forced(state, key, strengths) or any(decisions)
