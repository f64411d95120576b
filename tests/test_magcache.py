"""MagCache: off at threshold 0 (bit for bit), its decisions equal the published rule (a transcription of
MagCache4Wan2.1's loop) on the published ratios, VACE stream windows force computed steps, per-call caches."""

import numpy as np
import pytest
import torch

from tests.small_dit import sample_small, small_dit
from vace_core.errors import VaceError
from vace_core.magcache import MAG_RATIOS, MagCache, nearest_interp, step_ratios


def reference_decisions(mag_ratios, num_steps, thresh, k, retention):
    """MagCache4Wan2.1's magcache_forward, one call per CFG branch (cnt alternates conditional, unconditional);
    True = computed."""
    mag_ratios = np.array(mag_ratios)
    if len(mag_ratios) != num_steps * 2:
        con = nearest_interp(mag_ratios[0::2], num_steps)
        ucon = nearest_interp(mag_ratios[1::2], num_steps)
        mag_ratios = np.concatenate([con.reshape(-1, 1), ucon.reshape(-1, 1)], axis=1).reshape(-1)
    ratio, err, steps, out = [1.0, 1.0], [0.0, 0.0], [0, 0], []
    for cnt in range(2 * num_steps):
        skip = False
        if cnt >= int(2 * num_steps * retention):
            ratio[cnt % 2] *= mag_ratios[cnt]
            steps[cnt % 2] += 1
            err[cnt % 2] += np.abs(1 - ratio[cnt % 2])
            if err[cnt % 2] < thresh and steps[cnt % 2] <= k:
                skip = True
            else:
                err[cnt % 2], steps[cnt % 2], ratio[cnt % 2] = 0, 0, 1.0
        out.append(not skip)
    return out


@pytest.mark.parametrize("dim", [1536, 5120])
@pytest.mark.parametrize("steps, thresh, k", [(50, 0.12, 2), (50, 0.06, 3), (20, 0.12, 2), (8, 0.3, 4)])
def test_branch_decisions_equal_the_published_rule(dim, steps, thresh, k):
    cache = MagCache(thresh, 0.2, k)
    cache.begin(steps)
    ratios = step_ratios(MAG_RATIOS[dim], steps)
    branches = [[1.0, 0.0, 0], [1.0, 0.0, 0]]
    ours = [cache.branch_decision(branches[b], i, b, ratios) for i in range(steps) for b in (0, 1)]
    expected = reference_decisions(MAG_RATIOS[dim], steps, thresh, k, 0.2)
    assert ours == expected
    assert not all(expected)  # the published ratios do let steps be skipped


RATIOS = MAG_RATIOS[1536]


@pytest.fixture(scope="module")
def model():
    return small_dit()


def run(model, cache=None, streams=None, steps=10, guidance=4.0):
    return sample_small(model, cache, streams, steps, guidance)


def test_threshold_zero_is_no_cache_bit_for_bit(model):
    cache = MagCache(0.0, ratios=RATIOS)
    torch.testing.assert_close(run(model, cache), run(model), rtol=0, atol=0)
    assert (cache.stats.computed, cache.stats.skipped) == (20, 0)


@pytest.mark.parametrize("guidance", [1.0, 4.0])
def test_the_sampler_skips_what_the_rule_skips(model, guidance):
    cache = MagCache(0.12, ratios=RATIOS)
    run(model, cache, guidance=guidance)
    expected = reference_decisions(RATIOS, 10, 0.12, 2, 0.2)
    rows = 1 if guidance == 1 else 2
    # one forward per step: the conditional branch alone at cfg 1; either branch's "compute" with both rows
    per_step = [expected[2 * i] if rows == 1 else expected[2 * i] or expected[2 * i + 1] for i in range(10)]
    if rows == 2:  # both branches restart when either computes: the rule run on that joint sequence
        cache2 = MagCache(0.12, ratios=RATIOS)
        cache2.begin(10)
        ratios, branches, per_step = step_ratios(RATIOS, 10), [[1.0, 0.0, 0], [1.0, 0.0, 0]], []
        for i in range(10):
            decisions = [cache2.branch_decision(branches[b], i, b, ratios) for b in (0, 1)]
            per_step.append(any(decisions))
            if any(decisions):
                branches = [[1.0, 0.0, 0], [1.0, 0.0, 0]]
    assert cache.stats.skipped == rows * per_step.count(False) > 0
    assert cache.stats.computed == rows * per_step.count(True)


def test_a_stream_window_forces_a_computed_step(model):
    lenient = MagCache(1e9, k=100, ratios=RATIOS)  # would skip whenever the retention steps are over
    run(model, lenient, guidance=1.0)
    assert lenient.stats.computed == 2  # int(2 * 10 * 0.2) = 4 calls: steps 0 and 1
    windowed = MagCache(1e9, k=100, ratios=RATIOS)
    run(model, windowed, streams=[(1.0, 0.0, 0.5)], guidance=1.0)
    assert windowed.stats.computed == 3  # and step 5, where the stream closes


def test_bad_settings_are_refused(model):
    for kwargs, message in [({"threshold": -1.0}, "threshold"), ({"retention": 1.5}, "retention"),
                            ({"k": 0}, "K")]:
        with pytest.raises(VaceError, match=message):
            MagCache(**kwargs)
    with pytest.raises(VaceError, match="no published ratios"):
        run(model, MagCache(0.12))
