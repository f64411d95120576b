"""Strength curves per VCU stream: parsing by hand, a constant curve == today bit for bit, a step curve == the
start/end window bit for bit, per-frame weights change only the frames they weight, TeaCache's tolerance."""

import pytest
import torch

from tests.small_dit import sampler_inputs, small_dit
from vace_core.config import VaceConfig
from vace_core.errors import VaceError
from vace_core.pipeline import SamplerSettings, sample_latent
from vace_core.sampling import ContextStream, context_strengths, parse_curve
from vace_core.step_cache import DenoiserCache, TeaCache, strengths_moved
from vace_core.transformer import VaceTransformer


def test_keyframes_interpolate_by_hand():
    curve = parse_curve("0:1.0, 0.3:0.6, 1:0.2")
    for position, value in [(0, 1.0), (0.15, 0.8), (0.3, 0.6), (0.65, 0.4), (1, 0.2)]:
        assert curve.at(position) == pytest.approx(value, abs=1e-12)
    held = parse_curve("0.2:0.5, 0.8:1.5")  # flat before the first keyframe and after the last
    assert (held.at(0), held.at(0.5), held.at(1)) == pytest.approx((0.5, 1.0, 1.5), abs=1e-12)
    jump = parse_curve("0:0, 0.3:0, 0.3:1")  # a repeated position jumps; the later value holds at it
    assert (jump.at(0.29), jump.at(0.3), jump.at(0.9)) == (0.0, 1.0, 1.0)
    # steps sit at i / n: 10 steps of "0:1.0, 0.3:0.6, 1:0.2"
    expected = [1.0, 0.866667, 0.733333, 0.6, 0.542857, 0.485714, 0.428571, 0.371429, 0.314286, 0.257143]
    assert [curve.at_step(i, 10) for i in range(10)] == pytest.approx(expected, abs=1e-6)
    # latent frames sit at j / (T - 1): the last frame takes the last keyframe
    assert parse_curve("0:1, 1:0").over_frames(5).tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]


def test_value_lists_and_other_forms():
    assert parse_curve("1.0, 0.8, 0.5").values == (1.0, 0.8, 0.5)
    assert parse_curve([1.0, 0.25]).at_step(1, 2) == 0.25
    assert parse_curve([(0, 2.0), (1, 0.0)]).at(0.25) == 1.5
    assert parse_curve("") is None and parse_curve(None) is None


@pytest.mark.parametrize("spec, message", [("0:1, x:2", "not a number"), ("0:1, 0.5", "mixes"),
                                           ("0:1, 1.5:0", "fractions"), ("1, nan", "not a number")])
def test_bad_curves_are_refused(spec, message):
    with pytest.raises(VaceError, match=message):
        parse_curve(spec)


def test_a_list_must_have_one_value_per_step():
    with pytest.raises(VaceError, match="lists 3 values for 4 steps"):
        context_strengths([ContextStream(curve="1, 0.5, 0")], 0, 4)


@pytest.fixture(scope="module")
def model():
    return small_dit()


def run(model, streams, steps=6, **kwargs):
    contexts, positive, negative = sampler_inputs(contexts=len(streams))
    settings = SamplerSettings(steps=steps, guidance=3.0, shift=3.0, seed=2, **kwargs)
    return sample_latent(model, contexts, positive, negative, streams, settings)


def test_a_constant_curve_is_todays_strength_bit_for_bit(model):
    today = run(model, [ContextStream(0.7), ContextStream(1.3, 0.2, 0.9)])
    curved = run(model, [ContextStream(0.7, curve="0:1, 1:1", frames="0:1, 1:1"),
                         ContextStream(1.3, 0.2, 0.9, curve=[1.0] * 6, frames="1, 1, 1")])
    torch.testing.assert_close(curved, today, rtol=0, atol=0)


def test_a_step_curve_is_the_start_end_window_bit_for_bit(model):
    window = run(model, [ContextStream(0.8, 0.25, 0.75)])
    keyframes = run(model, [ContextStream(0.8, curve="0:0, 0.25:0, 0.25:1, 0.75:1, 0.75:0")])
    per_step = run(model, [ContextStream(0.8, curve="0, 0, 1, 1, 1, 0")])  # steps 2-4 of 6: 2/6 >= .25, 5/6 >= .75
    torch.testing.assert_close(keyframes, window, rtol=0, atol=0)
    torch.testing.assert_close(per_step, window, rtol=0, atol=0)


def test_a_curve_changes_the_run(model):
    assert not torch.equal(run(model, [ContextStream(0.8, curve="0:1, 1:0.2")]), run(model, [ContextStream(0.8)]))


def test_per_frame_weights_change_only_the_frames_they_weight():
    # one main block, its hints joining after it: nothing mixes frames after them, so a weight on latent frame 1
    # can only change frame 1 of the output (per token: the head works token by token)
    torch.manual_seed(0)
    late = VaceTransformer(VaceConfig(dim=24, ffn_dim=32, num_heads=2, num_layers=1, vace_layers=(0,),
                                      text_dim=32)).eval().requires_grad_(False)
    plain = run(late, [ContextStream(0.9)], steps=1)
    weighted = run(late, [ContextStream(0.9, frames="1, 0.3, 1")], steps=1)
    torch.testing.assert_close(weighted[:, :, [0, 2]], plain[:, :, [0, 2]], rtol=0, atol=0)
    assert (weighted[:, :, 1] - plain[:, :, 1]).abs().min() > 0  # every value of frame 1 moved
    g = torch.Generator().manual_seed(3)
    x, vcu, text = torch.randn(1, 16, 3, 4, 4, generator=g), torch.randn(1, 96, 3, 4, 4, generator=g), \
        torch.randn(1, 5, 32, generator=g)
    t = torch.tensor([500.0])
    with torch.no_grad():  # frame weights w at the DiT: frame j gets hint * strength * w_j
        half = late(x, t, text, [vcu], [torch.tensor([0.45, 0.45, 0.45])])
        torch.testing.assert_close(half, late(x, t, text, [vcu], [0.45]), rtol=0, atol=0)
    with pytest.raises(VaceError, match="one weight per latent frame"):
        late(x, t, text, [vcu], [torch.ones(2)])


def test_teacache_strength_tolerance():
    assert not strengths_moved((0.8, 1.0), (0.78, 1.0))  # within 0.05: the residual is reused
    assert strengths_moved((0.8, 1.0), (0.74, 1.0))  # moved more than 0.05
    assert strengths_moved((0.01, 1.0), (0.0, 1.0))  # a stream switched on
    cache = TeaCache(10.0, coefficients=(1.0, 0.0))
    cache.begin(8)
    state = DenoiserCache(residual=torch.zeros(1))
    decisions = ["C" if cache.decide(state, torch.full((4,), 1.0), i, (), (1.0,), (s,)) else "S"
                 for i, s in enumerate([1.0, 0.98, 0.96, 0.94, 0.92, 0.97, 0.9, 0.9])]
    # computed at 1.0; .98 .96 within .05 of it; .94 is .06 away: computed; .92 .97 within .05 of .94; .9: .04
    # away from .94, but the last step is always computed
    assert decisions == list("CSSCSSSC")


def test_teacache_skips_steps_along_a_slow_curve(model):
    cache = TeaCache(10.0, coefficients=(1.0, 0.0))  # huge threshold: only the strength rule decides
    run(model, [ContextStream(1.0, curve="0:1.0, 1:0.9")], steps=8, step_cache=cache)
    assert cache.stats.skipped > 0
    steep = TeaCache(10.0, coefficients=(1.0, 0.0))
    run(model, [ContextStream(1.0, curve="0:1.0, 1:0.2")], steps=8, step_cache=steep)  # 0.1 a step: all computed
    assert steep.stats.skipped == 0
