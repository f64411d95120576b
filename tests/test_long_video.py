"""Long video (vace_core.long_video): window plans against hand-computed tables, exactness against
pipeline.generate, carried frames, LVDM perturbation / latent replacement / unconditional guidance, fused
windows, interruption and streaming, on the embedded tiny DiT and a tiny Wan VAE (16x16 frames, 1-2 steps)."""

from itertools import pairwise

import pytest
import torch

from vace_core import long_video as L
from vace_core import vcu as V
from vace_core.embedded import tiny_model
from vace_core.errors import VaceError
from vace_core.pipeline import SamplerSettings, generate
from vace_core.vae import WanVAE

FAST = SamplerSettings(steps=1, guidance=1.0, seed=5)  # one step, no negative pass: plumbing, not pictures
NO_COLOUR = {"colour_strength": 0.0}


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return tiny_model(), WanVAE(dim=4, dim_mult=(1, 1, 1, 1), num_res_blocks=1).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def texts():
    g = torch.Generator().manual_seed(1)
    return torch.randn(1, 7, 64, generator=g), torch.randn(1, 5, 64, generator=g)


def clip(frames: int, seed: int = 0) -> torch.Tensor:
    """A smooth random clip (T, 16, 16, 3) in 0..1."""
    base = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(seed))
    t = torch.linspace(0, 1, frames)[:, None, None, None]
    video = torch.nn.functional.interpolate(base, size=(16, 16), mode="bilinear") * (0.6 + 0.4 * t)
    return video.permute(0, 2, 3, 1)


def table(plan):
    """(start, end, frames carried, last frame written + 1) per window."""
    return [(w.start, w.end, len(w.kept), w.start + w.output[-1] + 1) for w in plan]


@pytest.mark.parametrize("length, window, overlap, discard, expected", [
    (81, 81, 5, 0, [(0, 81, 0, 81)]),
    (161, 81, 5, 0, [(0, 81, 0, 81), (76, 157, 5, 157), (152, 161, 5, 161)]),
    (241, 81, 5, 0, [(0, 81, 0, 81), (76, 157, 5, 157), (152, 233, 5, 233), (228, 241, 5, 241)]),
    (241, 81, 1, 0, [(0, 81, 0, 81), (80, 161, 1, 161), (160, 241, 1, 241)]),
    (97, 33, 5, 4, [(0, 33, 0, 29), (24, 57, 5, 53), (48, 81, 5, 77), (72, 97, 5, 97)]),
    (89, 33, 4, 0, [(0, 33, 0, 33), (29, 62, 4, 62), (56, 89, 6, 89)]),  # last window starts earlier: 6 carried
    (17, 9, 5, 0, [(0, 9, 0, 9), (4, 13, 5, 13), (8, 17, 5, 17)]),
])
def test_autoregressive_plans_match_hand_computed_tables(length, window, overlap, discard, expected):
    plan = L.autoregressive_plan(length, window, overlap, discard)
    assert table(plan) == expected
    assert all((len(w.positions) - 1) % 4 == 0 and len(w.positions) <= window for w in plan)  # 4n+1 windows
    written = [w.positions[k] for w in plan for k in w.output]
    assert sorted(written) == list(range(length))  # every frame written exactly once
    for prev, w in pairwise(plan):  # carried frames were written by the windows before
        assert w.kept == tuple(range(len(w.kept)))
        assert w.start + len(w.kept) == prev.start + prev.output[-1] + 1


@pytest.mark.parametrize("length, window, keyframes, keys", [
    (241, 81, 0, [0, 60, 120, 180, 240]),
    (161, 81, 0, [0, 40, 80, 120, 160]),
    (233, 81, 0, [0, 60, 116, 176, 232]),  # uneven: gaps 60, 56, 60, 56
    (241, 81, 9, [0, 32, 60, 92, 120, 152, 180, 212, 240]),
    (17, 9, 5, [0, 4, 8, 12, 16]),
])
def test_hierarchical_plans_match_hand_computed_tables(length, window, keyframes, keys):
    plan = L.hierarchical_plan(length, window, keyframes)
    assert list(plan[0].positions) == keys and plan[0].kept == ()
    assert [(w.start, w.end - 1, w.kept) for w in plan[1:]] == [(a, b, (0, b - a)) for a, b in pairwise(keys)]
    assert all((len(w.positions) - 1) % 4 == 0 and len(w.positions) <= window for w in plan)
    written = [w.positions[k] for w in plan for k in w.output]
    assert sorted(written) == list(range(length))


def test_bad_settings_are_clear_errors():
    with pytest.raises(VaceError, match="4n\\+1"):
        L.autoregressive_plan(161, 80)
    with pytest.raises(VaceError, match="overlap: 0 is outside the range from 1 to 255"):
        L.autoregressive_plan(161, 81, overlap=0)
    with pytest.raises(VaceError, match="no new frames"):
        L.autoregressive_plan(161, 9, overlap=5, discard=4)
    with pytest.raises(VaceError, match="4n\\+1 keyframes"):
        L.hierarchical_plan(241, 81, keyframes=7)
    with pytest.raises(VaceError, match="gaps longer"):
        L.hierarchical_plan(401, 81, keyframes=5)
    with pytest.raises(VaceError, match="mode"):
        L.LongVideoSettings(mode="sliding").check()
    with pytest.raises(VaceError, match="perturbation"):
        L.LongVideoSettings(perturbation=2).check()


def test_kept_latents_are_the_fully_carried_ones():
    assert L.kept_latents(range(5), 9) == [0, 1]  # frame 0 -> latent 0; frames 1-4 -> latent 1
    assert L.kept_latents(range(6), 9) == [0, 1]  # frame 5 alone does not fill latent 2
    assert L.kept_latents((0, 8), 9) == [0]  # interpolation window: the last keyframe shares its latent
    assert L.kept_latents((), 9) == []


def test_fused_spans_and_weights():
    assert L.fused_spans(21, 21, 2) == [(0, 21)]
    assert L.fused_spans(61, 21, 2) == [(0, 21), (13, 34), (27, 48), (40, 61)]
    spans = L.fused_spans(12, 5, 2)
    assert spans == [(0, 5), (2, 7), (5, 10), (7, 12)]
    # by hand: linear ramps (k / (ramp + 1)) across each overlap (3, 2, 3 latents), flat at the video's ends;
    # pyramid min(k, size + 1 - k) whatever the neighbours
    linear = [[1, 1, 3 / 4, 2 / 4, 1 / 4], [1 / 4, 2 / 4, 3 / 4, 2 / 3, 1 / 3], [1 / 3, 2 / 3, 3 / 4, 2 / 4, 1 / 4],
              [1 / 4, 2 / 4, 3 / 4, 1, 1]]
    for kind, expected in (("linear", linear), ("pyramid", [[1, 2, 3, 2, 1]] * 4)):
        got = L.fused_weights(spans, kind)
        assert all(torch.allclose(w, torch.tensor(e, dtype=torch.float64)) for w, e in zip(got, expected, strict=True))
    for kind in L.FUSED_WEIGHTS:
        spans = L.fused_spans(30, 9, 3)
        total = torch.zeros(30, dtype=torch.float64)
        for (a, b), w in zip(spans, L.fused_weights(spans, kind), strict=True):
            assert (w > 0).all()
            total[a:b] += w
        assert (total > 0).all()


@pytest.mark.parametrize("mode", L.MODES)
def test_one_window_equals_generate_bit_for_bit(models, texts, mode):
    """A VCU of at most `window` frames through the long-video path is plain generate (refs + inpaint)."""
    model, vae = models
    video = clip(9)
    masks = torch.zeros(9, 16, 16)
    masks[:, 4:12, 4:12] = 1
    unit = V.with_references(V.inpaint(video, masks), [video[0]])
    settings = SamplerSettings(steps=2, guidance=3.0, seed=7)
    expected = generate(model, vae, unit, *texts, settings=settings)
    result = L.generate_long(model, vae, unit, *texts, settings=settings,
                             long=L.LongVideoSettings(window=9, mode=mode, carry_guidance=1.0, replace_latents=True))
    assert result.windows == 1 and not result.interrupted
    assert torch.equal(result.video, expected)


def spy_windows(monkeypatch):
    """Records each window's VCUs and decoded frames."""
    calls = []
    real = L.sample_window

    def spy(model, vae, units, free, kept, *args, **kwargs):
        frames = real(model, vae, units, free, kept, *args, **kwargs)
        calls.append({"unit": units[0], "free": free[0], "kept": kept, "frames": frames.clone()})
        return frames
    monkeypatch.setattr(L, "sample_window", spy)
    return calls


@pytest.mark.parametrize("colour", [0.0, 1.0])
def test_carried_frames_are_the_previous_windows_output(models, texts, monkeypatch, colour):
    model, vae = models
    calls = spy_windows(monkeypatch)
    streamed = []
    long = L.LongVideoSettings(window=9, overlap=5, colour_strength=colour)
    result = L.generate_long(model, vae, V.text_to_video(17, 16, 16), *texts, settings=FAST, long=long,
                             on_frames=streamed.append)
    plan = L.autoregressive_plan(17, 9, 5)
    assert len(calls) == len(plan) == result.windows_done == 3
    assert result.video.shape == (3, 17, 16, 16) and result.video.isfinite().all()
    writer = {w.positions[k]: (n, k) for n, w in enumerate(plan) for k in w.output}  # frame -> (window, index)
    for n in (1, 2):
        unit = calls[n]["unit"]
        carried = list(range(plan[n].start, plan[n].start + 5))
        assert (unit.masks[:5] == 0).all() and (unit.masks[5:] == 1).all()
        assert torch.equal(unit.frames[:, :5], result.video[:, carried])  # exactly the output's frames
        assert writer[carried[-1]][0] == n - 1  # the newest carried frames come from window n-1
        if colour == 0:  # no colour anchoring: exactly the decoded frames of the windows that wrote them
            for i, p in enumerate(carried):
                window, k = writer[p]
                assert torch.equal(unit.frames[:, i], calls[window]["frames"][:, k])
    assert torch.equal(torch.cat(streamed, dim=1), result.video)  # streamed in order, nothing twice


def test_hierarchical_keyframes_take_the_control_frames_and_anchor_the_fills(models, texts, monkeypatch):
    model, vae = models
    calls = spy_windows(monkeypatch)
    control = V.control(clip(17, seed=3))
    long = L.LongVideoSettings(window=9, mode="hierarchical", keyframes=5, **NO_COLOUR)
    result = L.generate_long(model, vae, control, *texts, settings=FAST, long=long)
    keys = [0, 4, 8, 12, 16]
    assert len(calls) == 5 and result.video.shape == (3, 17, 16, 16)
    assert torch.equal(calls[0]["unit"].frames, control.frames[:, keys])  # the control frames at the keyframes
    assert torch.equal(result.video[:, keys], calls[0]["frames"])
    for i, call in enumerate(calls[1:]):
        a, b = keys[i], keys[i + 1]
        assert call["kept"] == (0, 4)
        assert torch.equal(call["unit"].frames[:, [0, 4]], result.video[:, [a, b]])
        assert torch.equal(call["unit"].frames[:, 1:4], control.frames[:, a + 1:b])  # control between them
        assert torch.equal(result.video[:, a + 1:b], call["frames"][:, 1:4])


def test_perturbation_noises_only_the_carried_inactive_latents():
    contexts = [torch.randn(1, 96, 4, 2, 2)]
    out = L._perturb(contexts, [1, 2], 0.25, seed=3)[0]
    changed = (out != contexts[0]).any(dim=(0, 3, 4))  # (96, T)
    assert changed[:16, 1:3].all() and not changed[16:].any() and not changed[:, [0, 3]].any()
    noise = (out[:, :16, 1:3] - 0.75 * contexts[0][:, :16, 1:3]) / 0.25
    assert abs(noise.std().item() - 1) < 0.35  # the rest is unit noise (64 samples)
    assert torch.equal(L._perturb(contexts, [1], 0.0, seed=3)[0], contexts[0])


def test_latent_replacement_renoises_to_the_current_level():
    clean, noise = torch.randn(1, 16, 2, 2, 2), torch.randn(1, 16, 2, 2, 2)
    x = torch.randn(1, 16, 5, 2, 2)
    before = x.clone()
    seen = lambda x, *args, **biases: x  # noqa: E731  (a DiT that answers what it was shown)
    out = L.LatentReplacement(seen, clean, noise, [0, 1], 0.3)(x, None, None, [], [])
    assert torch.allclose(out[:, :, :2], 0.7 * clean + 0.3 * noise) and torch.equal(out[:, :, 2:], before[:, :, 2:])
    assert torch.equal(x, before)  # the solver's x is left alone (the model sees a copy)


class Linear(torch.nn.Module):
    """A stand-in DiT whose velocity depends on the latent, the timestep, the text and each context; a denoiser
    (vace_core.denoiser) on the CPU, so the sampler can run it."""

    compute_dtype, device, staged = torch.float32, torch.device("cpu"), False

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(2.0))
        self.config = tiny_model().config

    def check(self, x, contexts, strengths):
        pass

    def agree(self, flag):
        return flag

    def weights_checked(self):
        pass

    def forward(self, x, t, text, contexts, strengths, *, self_bias=None, cross_bias=None):
        ctx = sum(s * c[:, :16] for c, s in zip(contexts, strengths, strict=True))
        return self.w * x + ctx + t[:, None, None, None, None] / 1000 + text.mean()


def test_carry_guidance_is_the_lvdm_formula():
    model = Linear()
    carried, free = torch.randn(1, 96, 3, 2, 2), torch.randn(1, 96, 3, 2, 2)
    x, t, text = torch.randn(2, 16, 3, 2, 2), torch.tensor([500.0, 500.0]), torch.randn(2, 4, 8)
    v = L.CarryGuidance(model, [(carried, free)], 1.5)(x, t, text, [carried], [0.8])
    cond = model(x, t, text, [carried], [0.8])
    uncond_carry = model(x[:1], t[:1], text[:1], [free], [0.8])
    assert torch.allclose(v, cond + 1.5 * (cond[:1] - uncond_carry))


def test_fused_windows_blend_to_the_whole_for_a_local_model():
    """For a model acting per latent frame, blended windows give exactly the whole-latent velocity."""
    model = Linear()
    x, ctx = torch.randn(1, 16, 1 + 12, 2, 2), torch.randn(1, 96, 1 + 12, 2, 2)  # one reference latent first
    spans = L.fused_spans(12, 5, 2)
    fused = L.FusedWindows(model, spans, L.fused_weights(spans, "linear"), references=1)
    t, text = torch.tensor([300.0]), torch.randn(1, 4, 8)
    assert len(spans) > 2
    assert torch.allclose(fused(x, t, text, [ctx], [1.0]), model(x, t, text, [ctx], [1.0]), atol=1e-6)


class WindowMean(Linear):
    """A stand-in DiT that sees its whole input: its velocity is the mean of x over the frames it is given (in
    fused mode: the reference and the window's frames)."""

    def forward(self, x, t, text, contexts, strengths, *, self_bias=None, cross_bias=None):
        return x.mean(2, keepdim=True).expand_as(x)


@pytest.mark.parametrize("kind", L.FUSED_WEIGHTS)
def test_fused_windows_blend_each_windows_velocity_by_its_weights(kind):
    """v(frame f) = sum_i w_i(f) v_i(f) / sum_i w_i(f) over the windows i holding f (the reference frame: the plain
    mean of every window's), for a model whose answer depends on the window it sees."""
    x = torch.randn(1, 16, 1 + 12, 2, 2)
    # overlaps over half the window: there the normalised weights differ between the kinds (with smaller overlaps
    # both are proportional to a frame's distance from the window's edge, so they blend alike)
    spans = L.fused_spans(12, 5, 4)
    assert spans == [(0, 5), (1, 6), (2, 7), (3, 8), (4, 9), (5, 10), (6, 11), (7, 12)]
    weights = L.fused_weights(spans, kind)
    v = L.FusedWindows(WindowMean(), spans, weights, references=1)(x, torch.tensor([300.0]), None, [], [])
    means = [torch.cat([x[:, :, :1], x[:, :, 1 + a:1 + b]], 2).mean(2) for a, b in spans]  # (1, 16, 2, 2) each
    for f in range(12):
        holding = [i for i, (a, b) in enumerate(spans) if a <= f < b]
        w = [float(weights[i][f - spans[i][0]]) for i in holding]
        expected = sum(wi * means[i] for wi, i in zip(w, holding, strict=True)) / sum(w)
        torch.testing.assert_close(v[:, :, 1 + f], expected)
    torch.testing.assert_close(v[:, :, 0], sum(means) / len(spans))


def test_fused_mode_is_one_run_over_the_whole_latent_for_a_local_model(models, texts):
    """Fused mode end to end (spans from the window settings, each window's slice of the latent and of the context
    with the reference in front, blended, decoded): for a model acting per latent frame it gives the video of one
    sampling run over the whole latent; with the real DiT, linear and pyramid weights give different videos."""
    model, vae = models
    unit = V.with_references(V.text_to_video(25, 16, 16), [clip(1)[0]])
    # 7 latents in windows of 5 overlapping by 4 (over half the window: the kinds differ, see above): 3 windows
    fused = L.LongVideoSettings(window=17, overlap=13, mode="fused")
    local = L.generate_long(Linear(), vae, unit, *texts, settings=FAST, long=fused)
    torch.testing.assert_close(local.video, generate(Linear(), vae, unit, *texts, settings=FAST), atol=1e-5, rtol=0)
    linear, pyramid = (L.generate_long(model, vae, unit, *texts, settings=FAST,
                                       long=L.LongVideoSettings(window=17, overlap=13, mode="fused", fused_weights=k))
                       for k in ("linear", "pyramid"))
    assert linear.video.shape == (3, 25, 16, 16) and linear.windows == 1
    assert (linear.video - pyramid.video).abs().max() > 1e-3


def test_interrupt_returns_the_finished_windows(models, texts):
    model, vae = models
    seen = []

    def progress(window, windows, step, steps, x, x0):
        seen.append((window, windows, step, steps))
        return window < 1  # stop in the second window
    streamed = []
    result = L.generate_long(model, vae, V.text_to_video(17, 16, 16), *texts, settings=FAST,
                             long=L.LongVideoSettings(window=9, overlap=5, **NO_COLOUR), progress=progress,
                             on_frames=streamed.append)
    assert seen == [(0, 3, 1, 1), (1, 3, 1, 1)]
    assert result.interrupted and result.windows_done == 1 and result.windows == 3
    assert result.video.shape == (3, 9, 16, 16) and torch.equal(torch.cat(streamed, 1), result.video)


def test_options_change_the_continuation_but_not_the_first_window(models, texts):
    model, vae = models
    unit = V.extend(clip(5), 13)  # windows (0, 9) and (4, 13)
    runs = {name: L.generate_long(model, vae, unit, *texts, settings=FAST, long=L.LongVideoSettings(
        window=9, overlap=5, **NO_COLOUR, **options)).video
        for name, options in {"plain": {"perturbation": 0.0}, "perturbed": {"perturbation": 0.3},
                              "replaced": {"perturbation": 0.0, "replace_latents": True},
                              "guided": {"perturbation": 0.0, "carry_guidance": 2.0}}.items()}
    for name, video in runs.items():
        assert torch.equal(video[:, :9], runs["plain"][:, :9]), name  # window 0 carries nothing
        if name != "plain":
            assert not torch.equal(video[:, 9:], runs["plain"][:, 9:]), name
