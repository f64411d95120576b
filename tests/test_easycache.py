"""EasyCache: off at threshold 0 (bit for bit), its decisions equal the published rule (an independent transcription
of EasyCache4Wan2.1's easycache_forward) on a recorded sequence and inside the sampler, VACE stream windows force
computed steps, each CFG row reuses its own difference, one cache per expert, the job file and the command line."""

import pytest
import torch

from tests.small_dit import SMALL, sample_small, small_dit
from vace_core.denoiser import Wrapper
from vace_core.easycache import EasyCache, EasyState
from vace_core.errors import VaceError
from vace_core.experts import Experts
from vace_core.transformer import VaceTransformer


class PublishedEasyCache:
    """EasyCache4Wan2.1/easycache_generate.py's easycache_forward, transcribed: one call per CFG branch (cnt even:
    conditional, odd: unconditional), ret_steps = 10 * 2 calls (here warmup * 2), cutoff_steps = 2 n - 2, state
    kept in tensors as the reference does. `forward(x, model)` returns the model's output or the cached one."""

    def __init__(self, steps: int, thresh: float, warmup: int = 10):
        self.cnt, self.num_steps, self.thresh = 0, 2 * steps, thresh
        self.ret_steps, self.cutoff_steps = warmup * 2, 2 * steps - 2
        self.accumulated_error_even, self.k, self.should_calc_current_pair = 0, None, True
        self.previous_raw_input_even = self.previous_raw_output_even = self.prev_prev_raw_input_even = None
        self.previous_raw_output_odd = self.cache_even = self.cache_odd = None

    def forward(self, raw_input: torch.Tensor, model) -> tuple[torch.Tensor, bool]:
        is_even = self.cnt % 2 == 0
        if is_even:
            if self.cnt < self.ret_steps or self.cnt >= self.cutoff_steps:
                self.should_calc_current_pair, self.accumulated_error_even = True, 0
            elif self.previous_raw_input_even is not None and self.previous_raw_output_even is not None:
                raw_input_change = (raw_input - self.previous_raw_input_even).flatten().abs().mean()
                if self.k is not None:
                    output_norm = self.previous_raw_output_even.flatten().abs().mean()
                    self.accumulated_error_even += self.k * (raw_input_change / output_norm)
                    if self.accumulated_error_even < self.thresh:
                        self.should_calc_current_pair = False
                    else:
                        self.should_calc_current_pair, self.accumulated_error_even = True, 0
                else:
                    self.should_calc_current_pair = True
            else:
                self.should_calc_current_pair = True
            self.previous_raw_input_even = raw_input.clone()
        self.cnt += 1
        if not self.should_calc_current_pair:
            return (raw_input + (self.cache_even if is_even else self.cache_odd)).float(), False
        output = model(raw_input)
        if is_even:
            if self.previous_raw_output_even is not None and self.prev_prev_raw_input_even is not None:
                output_change = (output - self.previous_raw_output_even).flatten().abs().mean()
                input_change = (self.previous_raw_input_even - self.prev_prev_raw_input_even).flatten().abs().mean()
                self.k = output_change / input_change
            self.prev_prev_raw_input_even = self.previous_raw_input_even
            self.previous_raw_output_even, self.cache_even = output.clone(), output - raw_input
        else:
            self.previous_raw_output_odd, self.cache_odd = output.clone(), output - raw_input
        return output.float(), True


class Counting(Wrapper):
    """The model, counting its calls."""

    calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.inner(*args, **kwargs)


class Recording(EasyCache):
    """EasyCache that records, per call, the conditional row's input and output and whether the model ran."""

    def __call__(self, model, x, *args, **kwargs):
        counting = self.__dict__.setdefault("counting", {}).setdefault(id(model), Counting(model))
        before = counting.calls
        out = super().__call__(counting, x, *args, **kwargs)
        self.__dict__.setdefault("seen", []).append((x[:1].float().clone(), out[:1].float().clone(),
                                                     counting.calls > before))
        return out


def published(sequence, thresh: float, warmup: int) -> tuple[list[bool], list[torch.Tensor]]:
    """The reference's decisions and conditional outputs over (input, output) pairs, one per step: its
    conditional call sees the input (and the output where it runs the model); the unconditional call follows."""
    reference, ran, outputs = PublishedEasyCache(len(sequence), thresh, warmup), [], []
    for x, out in sequence:
        result, computed = reference.forward(x, lambda _, out=out: out)
        reference.cnt += 1  # the unconditional call of the step
        ran.append(computed)
        outputs.append(result)
    return ran, outputs


@pytest.fixture(scope="module")
def model():
    return small_dit()


def run(model, cache=None, streams=None, steps=12, guidance=4.0):
    return sample_small(model, cache, streams, steps, guidance)


def recorded(model, steps=12):
    """The conditional row's (input, output) of every step of an uncached run."""
    cache = Recording(1.0, warmup=steps)  # computes every step
    run(model, cache, steps=steps)
    return [(x, out) for x, out, _ in cache.seen]


@pytest.mark.parametrize("thresh, warmup", [(0.05, 10), (0.2, 1), (0.5, 2), (1.0, 0), (0.3, 3)])
def test_decisions_equal_the_published_rule_on_a_recorded_sequence(model, thresh, warmup):
    sequence = recorded(model)
    expected, _ = published(sequence, thresh, warmup)
    cache = EasyCache(thresh, warmup)
    cache.begin(len(sequence))
    state, ours = EasyState(), []
    for i, (x, out) in enumerate(sequence):
        ours.append(cache.decide(state, x, i))
        if ours[-1]:
            cache.observe(state, x, out)
    assert ours == expected
    if warmup < len(sequence) - 1 and thresh >= 0.2:
        assert not all(expected)  # the rule does skip on this sequence


@pytest.mark.parametrize("guidance", [1.0, 4.0])
@pytest.mark.parametrize("thresh, warmup", [(0.2, 1), (0.5, 0), (0.3, 3)])
def test_the_sampler_skips_what_the_published_rule_skips(model, guidance, thresh, warmup):
    cache = Recording(thresh, warmup)
    run(model, cache, guidance=guidance)
    ran, outputs = published([(x, out) for x, out, _ in cache.seen], thresh, warmup)
    assert ran == per_step(cache)
    assert not all(ran) and any(ran[warmup:-1])
    for (_, out, _), expected in zip(cache.seen, outputs, strict=True):  # skipped: input + cached difference
        torch.testing.assert_close(out, expected, rtol=0, atol=0)
    rows = 1 if guidance == 1 else 2
    assert (cache.stats.computed, cache.stats.skipped) == (rows * sum(ran), rows * (len(ran) - sum(ran)))


def test_threshold_zero_is_no_cache_bit_for_bit(model):
    cache = EasyCache(0.0)
    torch.testing.assert_close(run(model, cache), run(model), rtol=0, atol=0)
    assert (cache.stats.computed, cache.stats.skipped) == (24, 0)


def test_computed_steps_equal_the_plain_forward_bit_for_bit(model):
    cache = EasyCache(1.0, warmup=12)  # the warm-up covers every step
    torch.testing.assert_close(run(model, cache), run(model), rtol=0, atol=0)
    assert cache.stats.skipped == 0


def per_step(cache):
    return [computed for _, _, computed in cache.seen]


def test_a_stream_window_forces_a_computed_step(model):
    plain, windowed = Recording(0.5, 0), Recording(0.5, 0)
    run(model, plain, streams=[(1.0, 0.0, 1.0)])
    run(model, windowed, streams=[(1.0, 0.0, 0.5)])
    assert not per_step(plain)[6]  # the rule alone skips step 6 ...
    assert per_step(windowed)[6]  # ... where the stream closes (12 steps, end 0.5): computed


def test_a_strength_curve_forces_a_computed_step_when_it_moves(model):
    from vace_core.sampling import ContextStream

    flat, moving = Recording(0.5, 0), Recording(0.5, 0)
    run(model, flat, streams=[ContextStream(curve="0:1, 1:1")])
    run(model, moving, streams=[ContextStream(curve="0:1, 0.5:1, 0.55:0.5, 1:0.5")])
    assert not per_step(flat)[7]  # the rule alone skips step 7 ...
    assert per_step(moving)[7]  # ... where the curve has dropped from 1 to 0.5 (beyond the 0.05 tolerance)


def test_each_cfg_row_reuses_its_own_difference(model):
    cache = EasyCache(0.5, 0)
    x, text = torch.randn(2, 16, 3, 4, 4), torch.randn(2, 5, 32)
    cache.begin(10)
    inputs = [(x, 900.0), (x * 0.99, 880.0), (x * 0.98, 860.0)]
    outs = [cache(model, xi, torch.full((2,), t), text, step=i) for i, (xi, t) in enumerate(inputs)]
    state = next(iter(cache._states.values()))
    assert (cache.stats.computed, cache.stats.skipped) == (4, 2)  # the third call reused both rows' differences
    torch.testing.assert_close(outs[2], x * 0.98 + state.residual, rtol=0, atol=0)
    torch.testing.assert_close(state.residual, outs[1] - x * 0.99, rtol=0, atol=0)
    assert not torch.equal(state.residual[0], state.residual[1])  # conditional and unconditional rows: their own


def test_each_expert_keeps_its_own_cache():
    high, low = small_dit(), VaceTransformer(SMALL).eval().requires_grad_(False)  # two different experts
    cache = EasyCache(0.5, 0)
    run(Experts(high, low, boundary=0.875, guidance_low=4.0), cache)
    assert len(cache._states) == 2  # one state per expert


def test_bad_settings_are_refused(model):
    for kwargs, message in [({"threshold": -1.0}, "the EasyCache threshold"), ({"warmup": -1}, "warm-up"),
                            ({"warmup": 1.5}, "warm-up"), ({"threshold": float("nan")}, "threshold")]:
        with pytest.raises(VaceError, match=message):
            EasyCache(**kwargs)


def test_the_job_file_keeps_easycache_and_teacache_context_option(tmp_path):
    from vace_core.job import _cache_from, _cache_record
    from vace_core.step_cache import TeaCache

    for cache in (EasyCache(0.1, 4), TeaCache(0.08, context_every_step=True)):
        again = _cache_from(__import__("json").loads(__import__("json").dumps(_cache_record(cache))))
        assert type(again) is type(cache) and _cache_record(again) == _cache_record(cache)
    assert _cache_from({"threshold": 0.08, "mode": "t_emb", "coefficients": None}).context_every_step is False


def test_command_line_flags_build_the_cache():
    from vace_core.__main__ import _settings, parser

    def settings(*flags):
        return _settings(parser().parse_args(["run", "--prompt", "x", *flags]))

    cache = settings("--easycache", "0.1", "--easycache-warmup", "4").step_cache
    assert isinstance(cache, EasyCache) and (cache.threshold, cache.warmup) == (0.1, 4)
    assert settings("--teacache", "0.1", "--teacache-context-every-step").step_cache.context_every_step
    with pytest.raises(VaceError, match="--teacache and --easycache are 2 step caches: choose one"):
        settings("--teacache", "0.1", "--easycache", "0.1")
    with pytest.raises(VaceError, match="--teacache-context-every-step is a TeaCache option"):
        settings("--teacache-context-every-step")
