"""TeaCache step caching: off at threshold 0 (bit for bit), the published decision rule (hand-computed values
and TeaCache4Wan2.1's own loop on a recorded sequence), VACE stream windows and CFG branches force computed
steps, evaluations counted."""

import numpy as np
import pytest
import torch

from vace_core.config import VaceConfig
from vace_core.errors import VaceError
from vace_core.pipeline import SamplerSettings, sample_latent
from vace_core.sampling import flow_sigmas, sigma_to_timestep
from vace_core.step_cache import COEFFICIENTS, RETENTION, DenoiserCache, TeaCache
from vace_core.transformer import VaceTransformer

IDENTITY = (1.0, 0.0)  # poly(x) = x: the accumulated estimate is the sum of the relative L1 changes
CFG = VaceConfig(dim=24, ffn_dim=32, num_heads=2, num_layers=3, vace_layers=(0, 2), text_dim=32)
LATENT = (3, 4, 4)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return VaceTransformer(CFG).eval().requires_grad_(False)


def run_inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    contexts = [torch.randn(1, 96, *LATENT, generator=g)]
    return contexts, torch.randn(1, 5, 32, generator=g), torch.randn(1, 4, 32, generator=g)


def count_block_runs(model, monkeypatch):
    """Records the timestep of every run_blocks call (one per computed step)."""
    seen = []
    original = model.run_blocks

    def spy(tokens, *args, **kwargs):
        seen.append(tokens.t_emb.shape[0])
        return original(tokens, *args, **kwargs)

    monkeypatch.setattr(model, "run_blocks", spy)
    return seen


def test_threshold_zero_is_the_plain_forward_bit_for_bit(model):
    contexts, pos, neg = run_inputs()
    settings = SamplerSettings(steps=6, shift=3.0, seed=2)
    plain = sample_latent(model, contexts, pos, neg, settings=settings)
    cache = TeaCache(0.0)
    cached = sample_latent(model, contexts, pos, neg, settings=SamplerSettings(steps=6, shift=3.0, seed=2,
                                                                              step_cache=cache))
    torch.testing.assert_close(cached, plain, rtol=0, atol=0)
    assert (cache.stats.computed, cache.stats.skipped) == (12, 0)


def test_computed_steps_through_the_stages_equal_the_forward_bit_for_bit(model):
    # threshold tiny and poly(x) = x + 1: every step computes, but through embed / run_blocks / unpatchify
    contexts, pos, neg = run_inputs()
    plain = sample_latent(model, contexts, pos, neg, settings=SamplerSettings(steps=5, shift=3.0))
    cache = TeaCache(1e-9, coefficients=(1.0, 1.0))
    cached = sample_latent(model, contexts, pos, neg, settings=SamplerSettings(steps=5, shift=3.0, step_cache=cache))
    torch.testing.assert_close(cached, plain, rtol=0, atol=0)
    assert cache.stats.skipped == 0


def decisions(cache, inputs, steps, coefficients=IDENTITY, keys=None):
    state = DenoiserCache(residual=torch.zeros(1))  # as after a computed step
    cache.begin(steps)
    keys = keys or [()] * len(inputs)
    return ["C" if cache.should_compute(state, torch.full((4,), v), i, k, coefficients) else "S"
            for i, (v, k) in enumerate(zip(inputs, keys, strict=True))]


def test_decisions_by_hand():
    # relative L1 changes: .04, .0625, .1111, .025, .10256, .01429, .00725
    # acc:  C(first) .04 S  .1025 C  .1111 C  .025 S  .1276 C  .0143 S  .0215 but the last step is computed
    inputs = [1.0, 0.96, 0.9, 0.8, 0.78, 0.7, 0.69, 0.685]
    assert decisions(TeaCache(0.1), inputs, 8) == list("CSCCSCSC")
    # the "e" mode keeps 5 steps and does not force the last one
    assert decisions(TeaCache(0.1, mode="e"), inputs, 8) == list("CCCCCCSS")


def test_wan_polynomial_by_hand():
    # 2396.76752 x^4 - 1311.10545 x^3 + 201.331979 x^2 - 8.29855975 x + 0.137887774 at x = 0.02, by hand:
    # 0.000383483 - 0.010488844 + 0.080532792 - 0.165971195 + 0.137887774 = 0.04234401
    assert np.polyval(COEFFICIENTS["t_emb", 1536], 0.02) == pytest.approx(0.04234401, abs=1e-7)
    # 1.3B at threshold 0.08: relative changes of 0.02 each accumulate 0.0423 then 0.0847 >= 0.08 -> C S C ...
    inputs = [1.0 * 0.98**k for k in range(6)]
    assert decisions(TeaCache(0.08), inputs, 6, COEFFICIENTS["t_emb", 1536]) == list("CSCSCC")


def published_teacache(inputs, steps, threshold, coefficients, use_ret_steps):
    """TeaCache4Wan2.1's loop (teacache_generate.py), written out: one call per CFG branch (cond even, uncond
    odd) with a counter over 2 * steps calls; returns each call's should_calc."""
    ret_steps, cutoff = (5 * 2, steps * 2) if use_ret_steps else (1 * 2, steps * 2 - 2)
    acc, prev, out = {0: 0.0, 1: 0.0}, {0: None, 1: None}, []
    for cnt in range(2 * steps):
        branch, inp = cnt % 2, inputs[cnt // 2]
        if cnt < ret_steps or cnt >= cutoff:
            calc = True
            acc[branch] = 0
        else:
            rel_l1 = ((inp - prev[branch]).abs().mean() / prev[branch].abs().mean()).item()
            acc[branch] += np.poly1d(coefficients)(rel_l1)
            calc = acc[branch] >= threshold
            if calc:
                acc[branch] = 0
        prev[branch] = inp.clone()
        out.append(calc)
    return out


@pytest.mark.parametrize("mode", ["t_emb", "e"])
def test_decisions_equal_the_published_loop_on_a_recorded_sequence(model, mode):
    steps = 20
    sigmas = flow_sigmas(steps, 5.0)[:-1].tolist()
    x, text = torch.randn(2, 16, *LATENT), torch.randn(2, 5, 32)
    ctx = [torch.randn(1, 96, *LATENT)]
    recorded = []
    for sigma in sigmas:  # the modulated inputs a CFG-batched run sees (both rows share the timestep)
        tokens = model.embed(x, torch.full((2,), sigma_to_timestep(sigma)), text, ctx)
        recorded.append(tokens.t_emb if mode == "t_emb" else tokens.e)
    changes = [((b - a).abs().mean() / a.abs().mean()).item() for a, b in zip(recorded, recorded[1:], strict=False)]
    threshold = 2.5 * float(np.median(changes))  # skips some steps, not all
    cache = TeaCache(threshold, mode=mode)
    cache.begin(steps)
    state = DenoiserCache(residual=torch.zeros(1))
    ours = [cache.should_compute(state, inp, i, (), IDENTITY) for i, inp in enumerate(recorded)]
    reference = published_teacache(recorded, steps, threshold, IDENTITY, use_ret_steps=mode == "e")
    assert reference[0::2] == reference[1::2]  # the timestep-only rule decides the same for both branches
    assert ours == reference[0::2]
    assert 0 < ours.count(False) < steps - RETENTION[mode]


def test_a_stream_window_boundary_forces_a_computed_step(model, monkeypatch):
    contexts, pos, neg = run_inputs()
    runs = count_block_runs(model, monkeypatch)
    huge = TeaCache(1e9, coefficients=IDENTITY)  # would skip every step it may
    sample_latent(model, contexts, pos, neg, [(1.0, 0.0, 1.0)], SamplerSettings(steps=8, step_cache=huge))
    assert len(runs) == 2 and (huge.stats.computed, huge.stats.skipped) == (4, 12)  # first and last step
    runs.clear()
    # the stream closes at step 4 (4 / 8 = 0.5): its hints leave the residual, so step 4 runs the blocks
    timesteps = []
    monkeypatch.setattr(huge, "should_compute", _recording(huge.should_compute, timesteps))
    sample_latent(model, contexts, pos, neg, [(1.0, 0.0, 0.5)], SamplerSettings(steps=8, step_cache=huge))
    assert [i for i, computed in timesteps if computed] == [0, 4, 7]
    assert (huge.stats.computed, huge.stats.skipped) == (6, 10)
    # a second stream opening at step 2 forces step 2 as well
    timesteps.clear()
    sample_latent(model, contexts * 2, pos, neg, [(1.0, 0.0, 0.5), (0.7, 0.25, 1.0)],
                  SamplerSettings(steps=8, step_cache=huge))
    assert [i for i, computed in timesteps if computed] == [0, 2, 4, 7]


def _recording(should_compute, log):
    def wrapped(state, inp, step, key, coefficients, strengths=()):
        computed = should_compute(state, inp, step, key, coefficients, strengths)
        log.append((step, computed))
        return computed
    return wrapped


def test_cached_step_adds_each_branchs_own_residual_and_batch_change_recomputes(model):
    contexts, pos, neg = run_inputs()
    text = torch.cat([pos, torch.nn.functional.pad(neg, (0, 0, 0, 1))])
    x = torch.randn(2, 16, *LATENT)
    cache = TeaCache(1e9, coefficients=IDENTITY)
    cache.begin(4)
    first = cache(model, x, torch.tensor([900.0, 900.0]), text, contexts, [1.0], step=0)
    tokens = model.embed(x, torch.tensor([880.0, 880.0]), text, contexts)
    residual = model.run_blocks(model.embed(x, torch.tensor([900.0, 900.0]), text, contexts), [1.0]) - \
        model.embed(x, torch.tensor([900.0, 900.0]), text, contexts).x
    assert not torch.allclose(residual[0], residual[1])  # the branches' residuals differ
    skipped = cache(model, x, torch.tensor([880.0, 880.0]), text, contexts, [1.0], step=1)
    torch.testing.assert_close(skipped, model.unpatchify(tokens.x + residual, tokens, x.dtype))
    assert cache.stats.skipped == 2 and not torch.equal(first, skipped)
    cache(model, x[:1], torch.tensor([860.0]), text[:1], contexts, [1.0], step=2)  # guidance dropped: recompute
    assert cache.stats.computed == 3


def test_bad_settings_are_refused(model):
    with pytest.raises(VaceError, match="threshold"):
        TeaCache(-0.1)
    with pytest.raises(VaceError, match="mode"):
        TeaCache(0.1, mode="magic")
    contexts, pos, _ = run_inputs()
    with pytest.raises(VaceError, match="width 24"):  # the tiny model has no published polynomial
        sample_latent(model, contexts, pos, settings=SamplerSettings(steps=3, step_cache=TeaCache(0.1)))
