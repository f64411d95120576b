"""The joins of issue 18 with their meaning: Wan2.2 experts switch at the boundary in every long-video window (all
modes), from the command line with long video and job files; a step cache in fused windows keeps one cache per
window position; regional prompts give each long-video window its frames of the masks (fused: each window its
tokens of the layout) and a sequence shard its query rows; pairs that cannot work are refused by name."""

import inspect
import os
import sys

import pytest
import torch

from vace_core import long_video as L
from vace_core.denoiser import Wrapper, narrow_bias, require_staged
from vace_core.errors import VaceError
from vace_core.experts import Experts
from vace_core.pipeline import SamplerSettings, generate
from vace_core.regional import STLayoutAttention
from vace_core.step_cache import TeaCache

sys.path.insert(0, os.path.dirname(__file__))
import combination_cases as C  # noqa: E402

SETTINGS = SamplerSettings(steps=3, guidance=4.0, shift=3.0, seed=1)  # timesteps 999 (high), 856, 599 (low)


@pytest.fixture(scope="module")
def vae():
    return C.tiny_vae()


class Recorder(Wrapper):
    """An expert that notes its name and timestep at every call."""

    def __init__(self, inner, name, calls):
        super().__init__(inner)
        self.name, self.calls = name, calls

    def __call__(self, x, t, *args, **kwargs):
        self.calls.append((self.name, float(t[0]), x.shape[2]))
        return super().__call__(x, t, *args, **kwargs)


def recorded_experts(calls, loads):
    def load(expert):
        loads.append(expert.name)
        return expert
    return Experts(Recorder(C._dit(0, C.Spec()), "high", calls), Recorder(C._dit(1, C.Spec()), "low", calls),
                   guidance_low=2.0, load=load)


@pytest.mark.parametrize(("long", "windows"), [
    (L.LongVideoSettings(window=9, overlap=5), 3),
    (L.LongVideoSettings(window=9, mode="hierarchical"), 5),
    (L.LongVideoSettings(window=9, overlap=5, carry_guidance=1.0), 3),
    (L.LongVideoSettings(window=9, overlap=5, mode="fused"), 1),
], ids=["autoregressive", "hierarchical", "carry guidance", "fused"])
def test_experts_switch_at_the_boundary_in_every_window(vae, long, windows):
    calls, loads = [], []
    units, streams = C.make_vcus(C.Spec(length=17))
    result = L.generate_long(recorded_experts(calls, loads), vae, units, *C.make_texts(C.Spec())[:2], streams,
                             SETTINGS, long)
    assert result.video.shape == (3, 17, *C.SIZE) and result.video.isfinite().all()
    assert loads == ["high", "low"] * windows  # each window starts on the high-noise expert and switches once
    assert all(name == ("high" if t >= 875 else "low") for name, t, _ in calls)
    if long.mode == "fused":  # every window of a step runs on that step's expert
        spans = L.fused_spans(5, 3, 2)
        assert [(n, t) for n, t, _ in calls] == [(n, t) for n, t in (("high", 999), ("low", 856), ("low", 599))
                                                 for _ in spans]
    if long.carry_guidance:  # windows 2 and 3 run the window-free pass too, on the same expert
        assert len(calls) == 3 * 3 + 2 * 3


def test_step_cache_in_fused_windows_keeps_one_cache_per_window_position(vae):
    cache = TeaCache(1e9, coefficients=C.IDENTITY)  # skips every step it may: step 1 of 0, 1, 2
    units, streams = C.make_vcus(C.Spec(length=17))
    positive, negative, _ = C.make_texts(C.Spec())
    settings = SamplerSettings(steps=3, guidance=4.0, shift=3.0, seed=1, step_cache=cache)
    result = L.generate_long(C._dit(0, C.Spec()), vae, units, positive, negative, streams, settings,
                             L.LongVideoSettings(window=9, overlap=5, mode="fused"))
    windows = len(L.fused_spans(5, 3, 2))
    assert windows == 3
    assert sorted(slot for _, slot in cache._states) == list(range(windows))  # one cache per window position
    assert (result.cache_stats.computed, result.cache_stats.skipped) == (2 * 2 * windows, 2 * windows)
    assert str(result.cache_stats) == f"TeaCache skipped the blocks of {2 * windows} of {6 * windows} model evaluations"


def test_easycache_in_fused_windows_keeps_one_cache_per_window_position(vae):
    from vace_core.easycache import EasyCache

    cache = EasyCache(1e9, warmup=0)  # steps 0 and 1 measure the rate, 3 is the last: step 2 of 4 skips
    units, streams = C.make_vcus(C.Spec(length=17))
    positive, negative, _ = C.make_texts(C.Spec())
    settings = SamplerSettings(steps=4, guidance=4.0, shift=3.0, seed=1, step_cache=cache)
    result = L.generate_long(C._dit(0, C.Spec()), vae, units, positive, negative, streams, settings,
                             L.LongVideoSettings(window=9, overlap=5, mode="fused"))
    windows = len(L.fused_spans(5, 3, 2))
    assert sorted(slot for _, slot in cache._states) == list(range(windows))  # one cache per window position
    assert (result.cache_stats.computed, result.cache_stats.skipped) == (2 * 3 * windows, 2 * windows)


def test_step_cache_over_autoregressive_windows_sums_every_window(vae):
    cache = TeaCache(1e9, coefficients=C.IDENTITY)
    units, streams = C.make_vcus(C.Spec(length=17))
    settings = SamplerSettings(steps=3, guidance=4.0, shift=3.0, seed=1, step_cache=cache)
    result = L.generate_long(C._dit(0, C.Spec()), vae, units, *C.make_texts(C.Spec())[:2], streams, settings,
                             L.LongVideoSettings(window=9, overlap=5, carry_guidance=1.0))
    # 3 windows x 3 steps; windows 2 and 3 add the window-free pass (1 row) with its own cache slot
    assert result.cache_stats.computed + result.cache_stats.skipped == 3 * 3 * 2 + 2 * 3 * 1
    assert result.cache_stats.skipped == 3 * 2 + 2 * 1


def moving_regions(frames):
    """Two regions whose boundary moves right by a pixel per frame (so every window's slice differs)."""
    left = torch.zeros(frames, *C.SIZE)
    for i in range(frames):
        left[i, :, : 12 + i // 2] = 1
    positive, negative, regions = C.make_texts(C.Spec(regions="split"))
    return positive, negative, type(regions)(regions.text, [left, 1 - left], end=0.7)


def test_regions_give_each_window_its_frames_of_the_masks(vae, monkeypatch):
    positive, negative, regions = moving_regions(17)
    seen, real = [], L.sample_window

    def spy(model, vae, units, *args, **kwargs):
        regions_at = list(inspect.signature(real).parameters).index("regions") - 3  # after model, vae, units
        seen.append((units[0].length, args[regions_at]))
        return real(model, vae, units, *args, **kwargs)
    monkeypatch.setattr(L, "sample_window", spy)
    units, streams = C.make_vcus(C.Spec(length=17))
    long = L.LongVideoSettings(window=9, overlap=5)
    L.generate_long(C._dit(0, C.Spec()), vae, units, positive, negative, streams, SETTINGS, long, regions=regions)
    plan = L.plan_windows(17, long)
    assert len(seen) == len(plan) == 3
    for (length, window_regions), window in zip(seen, plan, strict=True):
        assert length == len(window.positions)
        assert torch.equal(window_regions.masks, regions.masks[:, list(window.positions)])
        assert torch.equal(window_regions.text.features, regions.text.features)  # the same text
    with pytest.raises(VaceError, match="region masks have 17 frames but the video has 21"):
        L.generate_long(C._dit(0, C.Spec()), vae, C.make_vcus(C.Spec(length=21))[0], positive, negative,
                        long=long, regions=regions)


def test_one_window_of_regions_is_the_regional_generate(vae):
    positive, negative, regions = moving_regions(9)
    units, streams = C.make_vcus(C.Spec())
    expected = generate(C._dit(0, C.Spec()), vae, units, positive, negative, streams, SETTINGS, regions=regions)
    plain = generate(C._dit(0, C.Spec()), vae, units, positive, negative, streams, SETTINGS)
    for mode in L.MODES:
        got = L.generate_long(C._dit(0, C.Spec()), vae, units, positive, negative, streams, SETTINGS,
                              L.LongVideoSettings(window=9, mode=mode), regions=regions).video
        assert torch.equal(got, expected), mode
    assert not torch.equal(expected, plain)  # the regions changed the video


def layout_bias():
    g = torch.Generator().manual_seed(0)
    groups = torch.nn.functional.one_hot(torch.randint(0, 3, (12,), generator=g), 3).float()
    return STLayoutAttention(groups, groups, torch.rand(2, 12, generator=g))


def test_a_narrowed_layout_is_those_rows_of_the_whole_attention():
    """Sequence shards and fused windows attend with `narrow`ed biases: a shard's query rows give exactly those rows
    of the whole sequence's modulated attention; padded rows (-1) are not modulated."""
    bias = layout_bias()
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 12, 2, 8, generator=g) for _ in range(3))
    whole = bias.attend(q, k, v)
    rows = torch.tensor([6, 7, 8, 9, 10, 11, -1, -1])  # shard 1 of 2 of 12 tokens, padded to 8 rows
    shard = narrow_bias(bias, queries=rows).attend(torch.cat([q[:, 6:], q[:, :2]], 1), k, v)
    torch.testing.assert_close(shard[:, :6], whole[:, 6:], rtol=0, atol=1e-6)
    narrowed = narrow_bias(bias, queries=rows)
    assert not narrowed.weight[:, 6:].any() and not narrowed.query_groups[6:].any()
    first = narrow_bias(bias, rows=slice(0, 1))  # CFG's positive row / carry guidance's window-free pass
    assert torch.equal(first.weight, bias.weight[:1])
    window = torch.arange(4, 10)  # a fused window's tokens, as queries and keys of self-attention
    part = narrow_bias(bias, queries=window, keys=window)
    assert torch.equal(part.query_groups, bias.query_groups[4:10]) and torch.equal(part.weight, bias.weight[:, 4:10])
    assert part.key_groups.shape == (6, 3)


def test_a_cache_needs_a_staged_denoiser():
    class Blend(Wrapper):
        staged = False

    with pytest.raises(VaceError, match="TeaCache and Blend cannot be combined: Blend cannot be staged"):
        require_staged(Blend(C._dit(0, C.Spec())), "TeaCache")
    with pytest.raises(VaceError, match="TeaCache and Blend cannot be combined"):
        TeaCache(0.1, coefficients=C.IDENTITY).layer(Blend(C._dit(0, C.Spec())), None)


def test_regions_and_ring_attention_are_refused_by_name():
    from types import SimpleNamespace

    from vace_core.distributed.model import ParallelVace, ShardTokens

    layout = SimpleNamespace(degrees=SimpleNamespace(cfg=1, ring=2, ulysses=1, sequence=2), shard=0)
    tokens = ShardTokens(torch.zeros(1, 6, 4), None, [], None, None, None, (), (1, 1, 1), length=12)
    with pytest.raises(VaceError, match="regional prompts and ring attention cannot be combined.*--parallel ulysses"):
        ParallelVace(C._dit(0, C.Spec()), layout)._biases(tokens, layout_bias(), None)


def test_command_line_runs_wan22_experts_over_long_video_and_a_job(tmp_path, monkeypatch):
    """`--model-low` with a long `--length` (issue 18's AttributeError) and with `--job`."""
    from safetensors.torch import save_file

    from vace_core import __main__ as cli
    from vace_core.embedded import tiny_model
    from vace_core.job import Job, save_job
    from vace_core.video_io import read_video

    for seed, name in enumerate(("high.safetensors", "low.safetensors")):
        save_file(tiny_model(seed).state_dict(), tmp_path / name)
    monkeypatch.setattr(cli, "_check_model_files", lambda args: None)
    experts = ["--model", str(tmp_path / "high.safetensors"), "--model-low", str(tmp_path / "low.safetensors"),
               "--steps", "3", "--shift", "3", "--device", "cpu"]
    task = ["run", "--prompt", "a cat", "--width", "16", "--height", "16", "--length", "13", "--window", "9", *experts]
    cli.main([*task, "--out", str(tmp_path / "long.mp4")])
    assert read_video(tmp_path / "long.mp4")[0].shape == (13, 16, 16, 3)
    # a failure in the first window is reported as itself (the streamed file is dropped, not blamed)
    with pytest.raises(SystemExit, match="no published coefficients for a model of width 256"):
        cli.main([*task, "--teacache", "0.1", "--out", str(tmp_path / "cached.mp4")])
    assert not (tmp_path / "cached.mp4").exists()
    units, streams = C.make_vcus(C.Spec(length=13))
    positive, negative, _ = C.make_texts(C.Spec())
    job = save_job(tmp_path / "job.safetensors", Job(units, positive, negative, streams, SamplerSettings(steps=3)))
    cli.main(["run", "--job", str(job), "--window", "9", *experts, "--out", str(tmp_path / "job.mp4")])
    assert read_video(tmp_path / "job.mp4")[0].shape == (13, *C.SIZE, 3)
