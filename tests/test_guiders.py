"""CFG variants as sampler options: off == plain CFG bit for bit; SLG, CFG-Zero* and APG each against its
published formula (written here from the reference code / paper) on the velocities a real run recorded."""

from dataclasses import replace

import pytest
import torch

import vace_core.pipeline as pipeline
from tests.small_dit import SMALL, sampler_inputs, small_dit
from vace_core.errors import VaceError
from vace_core.layer_skip import SkipLayers
from vace_core.pipeline import SamplerSettings, sample_latent
from vace_core.sampling import cfg, context_strengths, flow_sigmas, make_noise, sample, seeded_generator
from vace_core.sampling.guiders import AdaptiveProjectedGuidance, CFGZeroStar, SkipLayerGuidance
from vace_core.step_cache import TeaCache

TOL = 1e-6
CFG = replace(SMALL, num_layers=4)
STEPS = 6


@pytest.fixture(scope="module")
def model():
    return small_dit(CFG)


def settings(**kwargs):
    return SamplerSettings(**{"steps": STEPS, "guidance": 4.0, "shift": 3.0, "seed": 2} | kwargs)


def run(model, **kwargs):
    contexts, positive, negative = sampler_inputs()
    return sample_latent(model, contexts, positive, negative, settings=settings(**kwargs))


def plain_cfg_run(model, streams=((1.0, 0.0, 1.0),)):
    """The sampler as it was before the variants existed: one batched forward, uncond + g (cond - uncond)."""
    contexts, positive, negative = sampler_inputs()
    s = settings()
    sigmas = flow_sigmas(s.steps, s.shift, s.schedule)
    text = torch.cat([positive, torch.nn.functional.pad(negative, (0, 0, 0, 1))])

    def denoise(x, sigma, step):
        strengths = context_strengths(streams, step, s.steps)
        with torch.no_grad():
            v = model(x.expand(2, -1, -1, -1, -1), torch.full((2,), float(int(sigma * 1000))), text, contexts,
                      strengths).float()
        return cfg(v[:1], v[1:], s.guidance)

    generator = seeded_generator(s.seed)
    return sample(denoise, make_noise((1, 16, 3, 4, 4), generator), sigmas, s.solver, None, generator)


def test_every_variant_off_is_plain_cfg_bit_for_bit(model):
    torch.testing.assert_close(run(model), plain_cfg_run(model), rtol=0, atol=0)
    torch.testing.assert_close(run(model, slg=None, cfg_zero_star=None, apg=None), plain_cfg_run(model),
                               rtol=0, atol=0)


class Recording:
    """Every model call of a run (its skipped blocks, batch and output) and every step's (x, sigma, v)."""

    def __init__(self, model, monkeypatch):
        self.calls, self.steps = [], []
        forward = model.forward

        def spy(x, *args, **kwargs):
            out = forward(x, *args, **kwargs)
            skip = kwargs.get("self_bias")
            self.calls.append((skip.rows if isinstance(skip, SkipLayers) else (), x.shape[0], out.float()))
            return out

        def spy_sample(denoise, *args, **kwargs):
            def recorded(x, sigma, step):
                start = len(self.calls)
                v = denoise(x, sigma, step)
                self.steps.append((x.clone(), sigma, step, v, self.calls[start:]))
                return v
            return sample(recorded, *args, **kwargs)

        monkeypatch.setattr(model, "forward", spy)
        monkeypatch.setattr(pipeline, "sample", spy_sample)


def branches(calls):
    """(v_cond, v_uncond, the third pass's v or None) from one step's calls."""
    found = {}
    for skip, batch, out in calls:
        if batch == 2 or not any(skip):
            found["cond"], found["uncond"] = out[:1], out[1:] if batch == 2 else None
        else:
            found["third"] = out
    return found.get("cond"), found.get("uncond"), found.get("third")


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-12)).item()


# ---- SLG ----

def test_skipped_blocks_are_identities_without_their_hints(model, monkeypatch):
    contexts, positive, _ = sampler_inputs()
    x, t = torch.randn(1, 16, 3, 4, 4), torch.tensor([600.0])
    with torch.no_grad():
        skipped = model(x, t, positive, contexts, [0.9], self_bias=SkipLayers(frozenset({0, 1}), (True,)))
        monkeypatch.setattr(model.blocks[0], "forward", lambda x, *a, **k: x)
        monkeypatch.setattr(model.blocks[1], "forward", lambda x, *a, **k: x)
        after_proj = model.vace_blocks[0].after_proj.forward
        monkeypatch.setattr(model.vace_blocks[0].after_proj, "forward", lambda c: after_proj(c) * 0)  # no hint
        expected = model(x, t, positive, contexts, [0.9])
    torch.testing.assert_close(skipped, expected, rtol=0, atol=0)


def test_slg_uncond_mode_on_recorded_velocities(model, monkeypatch):
    slg = SkipLayerGuidance(blocks=(1, 2), start=0.3, end=0.8)
    record = Recording(model, monkeypatch)
    run(model, slg=slg)
    windowed = [step for _, _, step, _, _ in record.steps if slg.active(step, STEPS)]
    assert windowed == [2, 3, 4]
    for _, _, step, v, calls in record.steps:
        v_cond, v_uncond, _ = branches(calls)  # one call of both rows, the unconditional one without the blocks
        assert [(s, b) for s, b, _ in calls] == [((False, True) if step in windowed else (), 2)]
        assert rel(v, v_uncond + 4.0 * (v_cond - v_uncond)) < TOL


def test_rows_skip_their_blocks_only(model):
    contexts, positive, negative = sampler_inputs()
    g = torch.Generator().manual_seed(4)
    x, t = torch.randn(1, 16, 3, 4, 4, generator=g).expand(2, -1, -1, -1, -1), torch.tensor([600.0, 600.0])
    text = torch.cat([positive, torch.nn.functional.pad(negative, (0, 0, 0, 1))])
    with torch.no_grad():
        both = model(x, t, text, contexts, [0.9], self_bias=SkipLayers(frozenset({1, 2}), (False, True)))
        plain = model(x[:1], t[:1], text[:1], contexts, [0.9])
        skipped = model(x[1:], t[1:], text[1:], contexts, [0.9], self_bias=SkipLayers(frozenset({1, 2}), (True,)))
    assert rel(both[:1], plain) < 1e-6 and rel(both[1:], skipped) < 1e-6


def comfy_slg(d_cfg, d_cond, d_skip, scale, rescaling_scale):
    """ComfyUI's SkipLayerGuidanceDiT post-CFG function, on denoised predictions."""
    cfg_result = d_cfg + (d_cond - d_skip) * scale
    if rescaling_scale != 0:
        factor = d_cond.std() / cfg_result.std()
        factor = rescaling_scale * factor + (1 - rescaling_scale)
        cfg_result *= factor
    return cfg_result


@pytest.mark.parametrize("guidance", [4.0, 1.0])
@pytest.mark.parametrize("rescale", [0.0, 0.7])
def test_slg_third_pass_on_recorded_velocities(model, monkeypatch, guidance, rescale):
    slg = SkipLayerGuidance(blocks=(3,), start=0.0, end=0.5, mode="third", scale=2.5, rescale=rescale)
    record = Recording(model, monkeypatch)
    run(model, slg=slg, guidance=guidance)
    for x, sigma, step, v, calls in record.steps:
        v_cond, v_uncond, third = branches(calls)
        v_cfg = v_cond if guidance == 1 else v_uncond + guidance * (v_cond - v_uncond)
        if step < 3:
            assert [(s, b) for s, b, _ in calls][1] == ((True,), 1)  # the third pass: the conditional row, skipped
            d = comfy_slg(x - sigma * v_cfg, x - sigma * v_cond, x - sigma * third, 2.5, rescale)
            expected = (x - d) / sigma
        else:
            assert third is None
            expected = v_cfg
        assert rel(v, expected) < TOL


# ---- CFG-Zero* ----

def reference_optimized_scale(positive_flat, negative_flat):
    """CFG-Zero*'s optimized_scale (WeichenFan/CFG-Zero-star, models/wan/wan_pipeline.py)."""
    dot_product = torch.sum(positive_flat * negative_flat, dim=1, keepdim=True)
    squared_norm = torch.sum(negative_flat ** 2, dim=1, keepdim=True) + 1e-8
    return dot_product / squared_norm


@pytest.mark.parametrize("zero_init_steps", [0, 2])
def test_cfg_zero_star_on_recorded_velocities(model, monkeypatch, zero_init_steps):
    record = Recording(model, monkeypatch)
    run(model, cfg_zero_star=CFGZeroStar(zero_init_steps))
    reference_zero_steps = zero_init_steps - 1  # the reference zeroes the steps i <= zero_steps
    for _, _, i, v, calls in record.steps:
        noise_pred_text, noise_pred_uncond, _ = branches(calls)
        alpha = reference_optimized_scale(noise_pred_text.view(1, -1), noise_pred_uncond.view(1, -1))
        alpha = alpha.view(1, 1, 1, 1, 1)
        if zero_init_steps and i <= reference_zero_steps:
            torch.testing.assert_close(v, torch.zeros_like(v), rtol=0, atol=0)
        else:
            expected = noise_pred_uncond * alpha + 4.0 * (noise_pred_text - noise_pred_uncond * alpha)
            assert rel(v, expected) < TOL


# ---- APG ----

class MomentumBuffer:
    """APG's running average (arXiv 2410.02416, Algorithm 1)."""

    def __init__(self, momentum):
        self.momentum, self.running_average = momentum, 0

    def update(self, update_value):
        self.running_average = update_value + self.momentum * self.running_average


def paper_apg(pred_cond, pred_uncond, guidance_scale, momentum_buffer, eta, norm_threshold):
    """Algorithm 1 of the APG paper on denoised predictions, per sample over all its values (a video latent's
    C, T, H, W where the paper's images have C, H, W)."""
    dims = [1, 2, 3, 4]
    diff = pred_cond - pred_uncond
    if momentum_buffer is not None:
        momentum_buffer.update(diff)
        diff = momentum_buffer.running_average
    if norm_threshold > 0:
        diff_norm = diff.norm(p=2, dim=dims, keepdim=True)
        diff = diff * torch.minimum(torch.ones_like(diff_norm), norm_threshold / diff_norm)
    v1 = torch.nn.functional.normalize(pred_cond.double(), dim=dims)
    parallel = (diff.double() * v1).sum(dim=dims, keepdim=True) * v1
    orthogonal = diff.double() - parallel
    update = (orthogonal + eta * parallel).float()
    return pred_cond + (guidance_scale - 1) * update


@pytest.mark.parametrize("eta, norm_threshold, momentum", [(0.0, 0.0, -0.5), (0.5, 2.0, 0.0), (1.0, 0.5, 0.3)])
def test_apg_on_recorded_velocities(model, monkeypatch, eta, norm_threshold, momentum):
    record = Recording(model, monkeypatch)
    apg = AdaptiveProjectedGuidance(eta, norm_threshold, momentum)
    run(model, apg=apg)
    buffer = MomentumBuffer(momentum) if momentum else None
    for x, sigma, _, v, calls in record.steps:
        v_cond, v_uncond, _ = branches(calls)
        d = paper_apg(x - sigma * v_cond, x - sigma * v_uncond, 4.0, buffer, eta, norm_threshold)
        assert rel(x - sigma * v, d) < TOL
    # the running average restarts with every run: a second run is the same run
    again = run(model, apg=apg)
    torch.testing.assert_close(again, run(model, apg=AdaptiveProjectedGuidance(eta, norm_threshold, momentum)))


def test_apg_with_eta_1_and_no_momentum_or_threshold_is_cfg(model):
    apg = run(model, apg=AdaptiveProjectedGuidance(eta=1.0, norm_threshold=0.0, momentum=0.0))
    assert rel(apg, plain_cfg_run(model)) < 1e-5


def test_each_variant_changes_the_run(model):
    plain = plain_cfg_run(model)
    for option in ({"slg": SkipLayerGuidance(blocks=(1,), start=0.0, end=1.0)}, {"cfg_zero_star": CFGZeroStar()},
                   {"apg": AdaptiveProjectedGuidance()}):
        assert rel(run(model, **option), plain) > 1e-3, option


@pytest.mark.parametrize("mode", ["uncond", "third"])
def test_slg_with_teacache(model, mode):
    slg = SkipLayerGuidance(blocks=(1,), start=0.0, end=0.5, mode=mode)
    cache = TeaCache(0.0)
    cached = run(model, slg=slg, step_cache=cache)
    torch.testing.assert_close(cached, run(model, slg=slg), rtol=0, atol=0)
    assert cache.stats.computed == 6 * 2 + (3 if mode == "third" else 0)  # the third pass: one row, 3 steps
    busy = TeaCache(1e9, coefficients=(1.0, 0.0))  # would skip whenever it may
    run(model, slg=slg, step_cache=busy)
    assert busy.stats.skipped > 0


def test_bad_settings_and_refused_pairs(model):
    for build, message in [(lambda: SkipLayerGuidance(blocks=()), "SLG blocks"),
                           (lambda: SkipLayerGuidance(mode="both"), "SLG mode"),
                           (lambda: SkipLayerGuidance(start=0.9, end=0.1), "SLG start"),
                           (lambda: CFGZeroStar(-1), "zero_init_steps"),
                           (lambda: AdaptiveProjectedGuidance(momentum=1.0), "momentum"),
                           (lambda: AdaptiveProjectedGuidance(norm_threshold=-1.0), "norm_threshold")]:
        with pytest.raises(VaceError, match=message):
            build()
    with pytest.raises(VaceError, match="choose one"):
        run(model, cfg_zero_star=CFGZeroStar(), apg=AdaptiveProjectedGuidance())
    for option, name in (({"cfg_zero_star": CFGZeroStar()}, "CFG-Zero"), ({"apg": AdaptiveProjectedGuidance()}, "APG"),
                         ({"slg": SkipLayerGuidance(blocks=(1,))}, "SLG mode 'uncond'")):
        with pytest.raises(VaceError, match=name):
            run(model, guidance=1.0, **option)
    with pytest.raises(VaceError, match="main blocks 0 to 3"):
        run(model, slg=SkipLayerGuidance(blocks=(4,)))


def test_nag_and_slg_wrap_the_regional_modulation():
    """Regional prompts (cross and self modulation) with NAG and SLG on: the hooks nest (`compose_bias`), the run is
    finite and differs from regions alone; each hook alone off == regions alone, bit for bit."""
    from tests.test_regional import tiny_text
    from vace_core.embedded import tiny_model
    from vace_core.nag import NAG
    from vace_core.regional import Regions, encode_text
    from vace_core.vcu import text_to_video

    net = tiny_model()
    masks = torch.zeros(2, 5, 32, 32)
    masks[0, :, :, :16], masks[1, :, :, 16:] = 1, 1
    text = encode_text(tiny_text(dim=64), "a red car next to a blue bus", ["a red car", "a blue bus"])
    layout = Regions(text, masks).for_vcu(text_to_video(5, 32, 32))
    g = torch.Generator().manual_seed(2)
    contexts, negative = [torch.randn(1, 96, 2, 4, 4, generator=g)], torch.randn(1, 4, 64, generator=g)

    def go(**kwargs):
        s = SamplerSettings(steps=3, guidance=3.0, shift=3.0, seed=1, **kwargs)
        return sample_latent(net, contexts, text.features[None], negative, settings=s, regions=layout)

    regional = go()
    both = go(nag=NAG(), slg=SkipLayerGuidance(blocks=(1,), start=0.0, end=1.0))
    assert torch.isfinite(both).all() and rel(both, regional) > 1e-3
    torch.testing.assert_close(go(nag=NAG(scale=0.0)), regional, rtol=0, atol=0)
