"""TeaCache step caching: off at threshold 0 (bit for bit), the published decision rule (hand-computed values
and TeaCache4Wan2.1's own loop on a recorded sequence), VACE stream windows and CFG branches force computed
steps, evaluations counted."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.small_dit import LATENT, sampler_inputs, small_dit
from vace_core.config import VaceConfig
from vace_core.errors import VaceError
from vace_core.pipeline import SamplerSettings, sample_latent
from vace_core.sampling import flow_sigmas, sigma_to_timestep
from vace_core.step_cache import COEFFICIENTS, RETENTION, DenoiserCache, TeaCache

IDENTITY = (1.0, 0.0)  # poly(x) = x: the accumulated estimate is the sum of the relative L1 changes


@pytest.fixture(scope="module")
def model():
    return small_dit()


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
    contexts, pos, neg = sampler_inputs()
    settings = SamplerSettings(steps=6, shift=3.0, seed=2)
    plain = sample_latent(model, contexts, pos, neg, settings=settings)
    cache = TeaCache(0.0)
    cached = sample_latent(model, contexts, pos, neg, settings=SamplerSettings(steps=6, shift=3.0, seed=2,
                                                                              step_cache=cache))
    torch.testing.assert_close(cached, plain, rtol=0, atol=0)
    assert (cache.stats.computed, cache.stats.skipped) == (12, 0)


def test_computed_steps_through_the_stages_equal_the_forward_bit_for_bit(model):
    # threshold tiny and poly(x) = x + 1: every step computes, but through embed / run_blocks / unpatchify
    contexts, pos, neg = sampler_inputs()
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


# TeaCache4Wan2.1's polynomials as teacache_generate.py sets them: by its use_ret_steps flag (our "e" mode) and the
# checkpoint's size (1.3B: width 1536; 14B: 5120), highest power first
PUBLISHED = {("t_emb", 1536): (2.39676752e03, -1.31110545e03, 2.01331979e02, -8.29855975e00, 1.37887774e-01),
             ("t_emb", 5120): (-5784.54975374, 5449.50911966, -1811.16591783, 256.27178429, -13.02252404),
             ("e", 1536): (-5.21862437e04, 9.23041404e03, -5.28275948e02, 1.36987616e01, -4.99875664e-02),
             ("e", 5120): (-3.03318725e05, 4.90537029e04, -2.65530556e03, 5.87365115e01, -3.15583525e-01)}
# each at x = 0.02, term by term (x^4 ... x^0), by hand
BY_HAND = {("t_emb", 1536): 0.000383483 - 0.010488844 + 0.080532792 - 0.165971195 + 0.137887774,  # 0.042344010
           ("t_emb", 5120): -0.000925528 + 0.043596073 - 0.724466367 + 5.125435686 - 13.022524040,  # -8.578884176
           ("e", 1536): -0.008349799 + 0.073843312 - 0.211310379 + 0.273975232 - 0.049987566,  # 0.078170800
           ("e", 5120): -0.048530996 + 0.392429623 - 1.062122224 + 1.174730230 - 0.315583525}  # 0.140923108


def width(dim: int):
    """What TeaCache reads of a model to pick its polynomial."""
    return SimpleNamespace(config=SimpleNamespace(dim=dim))


@pytest.mark.parametrize("mode, dim", list(PUBLISHED))
def test_wan_polynomials_by_hand(mode, dim):
    """The polynomial TeaCache picks for a mode and model width is the published one for that pair, and it
    evaluates to the hand-computed value."""
    coefficients = TeaCache(0.1, mode=mode)._coefficients(width(dim))
    assert coefficients == PUBLISHED[mode, dim]
    assert np.polyval(coefficients, 0.02) == pytest.approx(BY_HAND[mode, dim], abs=2e-9)


def test_wan_threshold_decisions_by_hand():
    # 1.3B at threshold 0.08: relative changes of 0.02 each accumulate 0.0423 then 0.0847 >= 0.08 -> C S C ...
    inputs = [1.0 * 0.98**k for k in range(6)]
    assert decisions(TeaCache(0.08), inputs, 6, COEFFICIENTS["t_emb", 1536]) == list("CSCSCC")


def published_teacache(cond, uncond, steps, threshold, coefficients, use_ret_steps):
    """TeaCache4Wan2.1's loop (teacache_generate.py), written out: one call per CFG branch (cond even, uncond
    odd), each with its own modulated input, accumulated estimate and previous input, and a counter over
    2 * steps calls; returns each call's should_calc."""
    ret_steps, cutoff = (5 * 2, steps * 2) if use_ret_steps else (1 * 2, steps * 2 - 2)
    acc, prev, out = {0: 0.0, 1: 0.0}, {0: None, 1: None}, []
    for cnt in range(2 * steps):
        branch = cnt % 2
        inp = (cond, uncond)[branch][cnt // 2]
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


# the 1.3B model's width (its published polynomials apply), tiny otherwise: only the embedding runs here
WIDE = VaceConfig(dim=1536, ffn_dim=64, num_heads=12, num_layers=1, vace_layers=(0,), text_dim=32)


@pytest.mark.parametrize("mode", ["t_emb", "e"])
def test_decisions_equal_the_published_loop_on_a_recorded_sequence(mode):
    """The modulated inputs of a CFG-batched run (cond and uncond text, 20 steps), decided by our cache with the
    polynomial it picks for the mode and width, and by the published per-branch loop on each branch's own rows
    with the published polynomial: the same decisions, for both branches."""
    model = small_dit(WIDE)
    model.time_embedding[2].bias += 5  # the inputs then change 1.6-2.8 % per step, as a real Wan's (random: ~80 %)
    steps = 20
    sigmas = flow_sigmas(steps, 5.0)[:-1].tolist()
    x, text = torch.randn(2, 16, *LATENT), torch.randn(2, 5, 32)  # row 0: cond, row 1: uncond
    ctx = [torch.randn(1, 96, *LATENT)]
    recorded = []
    for sigma in sigmas:  # the modulated inputs a CFG-batched run sees (both rows share the timestep)
        tokens = model.embed(x, torch.full((2,), sigma_to_timestep(sigma)), text, ctx)
        recorded.append(tokens.t_emb if mode == "t_emb" else tokens.e)
    poly = np.poly1d(PUBLISHED[mode, 1536])
    changes = [poly(((b - a).abs().mean() / a.abs().mean()).item()) for a, b in zip(recorded, recorded[1:],
                                                                                    strict=False)]
    threshold = 2.5 * float(np.median(changes))  # skips some steps, not all
    cache = TeaCache(threshold, mode=mode)  # no coefficients given: it picks them by mode and width
    cache.begin(steps)
    state = DenoiserCache(residual=torch.zeros(1))
    ours = [cache.should_compute(state, inp, i, (), cache._coefficients(model)) for i, inp in enumerate(recorded)]
    reference = published_teacache([r[:1] for r in recorded], [r[1:] for r in recorded], steps, threshold,
                                   PUBLISHED[mode, 1536], use_ret_steps=mode == "e")
    assert ours == reference[0::2] == reference[1::2]
    assert 0 < ours.count(False) < steps - RETENTION[mode]


def test_a_stream_window_boundary_forces_a_computed_step(model, monkeypatch):
    contexts, pos, neg = sampler_inputs()
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
    def wrapped(state, inp, step, key, coefficients):
        computed = should_compute(state, inp, step, key, coefficients)
        log.append((step, computed))
        return computed
    return wrapped


def test_cached_step_adds_each_branchs_own_residual_and_batch_change_recomputes(model):
    contexts, pos, neg = sampler_inputs()
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
    contexts, pos, _ = sampler_inputs()
    with pytest.raises(VaceError, match="width 24"):  # the tiny model has no published polynomial
        sample_latent(model, contexts, pos, settings=SamplerSettings(steps=3, step_cache=TeaCache(0.1)))


# TeaCache's context_every_step (vllm-omni's VACE TeaCache): context blocks every step, main blocks' residual reused


def test_run_blocks_stages_split_the_residual_into_main_blocks_and_hints(model):
    contexts, pos, _ = sampler_inputs()
    x = torch.randn(1, 16, *LATENT)
    tokens = model.embed(x, torch.tensor([900.0]), pos, contexts * 2)
    full = model.run_blocks(tokens, [1.0, 0.6])
    with_hints, hints = model.run_blocks(tokens, [1.0, 0.6], hints=True)
    torch.testing.assert_close(with_hints, full, rtol=0, atol=0)  # the default path is untouched
    context_only = model.run_blocks(tokens, [1.0, 0.6], main=False)
    torch.testing.assert_close(context_only, tokens.x + hints)  # the same hints, without any main block
    assert hints.abs().sum() > 0


def count_context_block_runs(model, monkeypatch):
    """Records the step (by timestep) of every context-block call."""
    seen = []
    for block in model.vace_blocks:
        original = block.forward

        def spy(c, x0, e, *args, original=original, **kwargs):
            seen.append(round(float(e[0, 0, 0]), 6))
            return original(c, x0, e, *args, **kwargs)

        monkeypatch.setattr(block, "forward", spy)
    return seen


@pytest.mark.parametrize("fresh", [False, True])
def test_context_blocks_run_on_skipped_steps_only_with_the_option(model, monkeypatch, fresh):
    contexts, pos, neg = sampler_inputs()
    calls = count_context_block_runs(model, monkeypatch)
    cache = TeaCache(1e9, coefficients=IDENTITY, context_every_step=fresh)
    sample_latent(model, contexts, pos, neg, settings=SamplerSettings(steps=8, shift=3.0, step_cache=cache))
    computed, skipped = cache.stats.computed // 2, cache.stats.skipped // 2  # steps (2 CFG rows each)
    assert skipped > 0
    blocks = len(model.vace_blocks)
    assert len(calls) == blocks * (computed + (skipped if fresh else 0))  # one stream, both rows in one call
    assert len(set(calls)) == (8 if fresh else computed)  # with the option: every step's embedding


def test_the_option_differs_from_plain_teacache_only_through_the_fresh_hints(model, monkeypatch):
    contexts, pos, _ = sampler_inputs()
    x = torch.randn(1, 16, *LATENT)
    seen = {}
    original = model.unpatchify
    monkeypatch.setattr(model, "unpatchify", lambda out, tokens, dtype: seen.setdefault("out", []).append(out)
                        or original(out, tokens, dtype))

    def residual_streams(fresh):
        cache = TeaCache(1e9, coefficients=IDENTITY, context_every_step=fresh)
        cache.begin(4)
        seen["out"] = []
        cache(model, x, torch.tensor([900.0]), pos, contexts, [1.0], step=0)
        cache(model, x * 0.9, torch.tensor([880.0]), pos, contexts, [1.0], step=1)  # skipped
        assert cache.stats.skipped == 1
        return seen["out"][1]

    plain, fresh = residual_streams(False), residual_streams(True)
    def hints(xi, t):
        tokens = model.embed(xi, torch.tensor([t]), pos, contexts)
        return model.run_blocks(tokens, [1.0], hints=True)[1]
    torch.testing.assert_close(fresh - plain, hints(x * 0.9, 880.0) - hints(x, 900.0), rtol=1e-5, atol=1e-5)
    assert (fresh - plain).abs().max() > 1e-3  # the hints did change with the latent


def test_the_option_keeps_teacaches_decisions_and_off_is_todays_run(model):
    contexts, pos, neg = sampler_inputs()
    runs = {}
    for fresh in (None, False, True):
        cache = TeaCache(1e9, coefficients=IDENTITY, **({} if fresh is None else {"context_every_step": fresh}))
        latent = sample_latent(model, contexts, pos, neg, settings=SamplerSettings(steps=8, shift=3.0,
                                                                                   step_cache=cache))
        runs[fresh] = latent, (cache.stats.computed, cache.stats.skipped)
    torch.testing.assert_close(runs[False][0], runs[None][0], rtol=0, atol=0)
    assert runs[True][1] == runs[False][1]  # the rule reads the timestep embedding only
    assert not torch.equal(runs[True][0], runs[False][0])
