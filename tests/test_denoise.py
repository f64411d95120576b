"""Video-to-video denoise: native KSampler's rule for the sigmas (hand table), the start x = sigma noise +
(1 - sigma) init with the run's seed, denoise 1 == today bit for bit, references in front, long video windows."""

import pytest
import torch

import vace_core.long_video as L
import vace_core.pipeline as pipeline
import vace_core.vcu as V
from tests.small_dit import small_dit
from vace_core.embedded import tiny_model
from vace_core.errors import VaceError
from vace_core.pipeline import SamplerSettings, generate, sample_latent
from vace_core.sampling import denoise_sigmas, flow_sigmas, make_noise, sample
from vace_core.vae import WanVAE
from vace_core.vcu.pixels import to_video

# steps 10, shift 5, the official grid: KSampler builds int(10 / denoise) steps and runs the last 10; the first
# sigma is shift(0.999 * 10 / total), by hand: 5u / (1 + 4u)
START_SIGMAS = {1.0: (10, 0.999799842), 0.9: (11, 0.980180536), 0.6: (16, 0.892601862), 0.5: (20, 0.833055374),
                0.25: (40, 0.624687348)}


@pytest.mark.parametrize("denoise", START_SIGMAS)
def test_start_sigmas_by_hand(denoise):
    total, first = START_SIGMAS[denoise]
    sigmas = denoise_sigmas(10, 5.0, "wan", denoise)
    assert len(sigmas) == 11 and sigmas[-1] == 0
    assert float(sigmas[0]) == pytest.approx(first, abs=1e-9)
    torch.testing.assert_close(sigmas, flow_sigmas(total, 5.0)[-11:], rtol=0, atol=0)


@pytest.mark.parametrize("denoise", [0.0, -0.5, 1.5, True])
def test_bad_denoise_is_refused(denoise):
    with pytest.raises(VaceError, match="denoise"):
        denoise_sigmas(10, 5.0, "wan", denoise)


@pytest.fixture(scope="module")
def model():
    return small_dit()


def run_inputs(refs=0):
    g = torch.Generator().manual_seed(1)
    contexts = [torch.randn(1, 96, 3 + refs, 4, 4, generator=g)]
    contexts[0][:, 32:, :refs] = 0
    init = torch.randn(1, 16, 3, 4, 4, generator=g)
    return contexts, torch.randn(1, 5, 32, generator=g), torch.randn(1, 4, 32, generator=g), init


def recording_start(monkeypatch):
    seen = {}

    def spy(denoise, noise, sigmas, *args, **kwargs):
        seen["x"], seen["sigmas"] = noise.clone(), sigmas
        return sample(denoise, noise, sigmas, *args, **kwargs)

    monkeypatch.setattr(pipeline, "sample", spy)
    return seen


def test_denoise_1_is_todays_run_bit_for_bit(model):
    contexts, positive, negative, init = run_inputs()
    settings = SamplerSettings(steps=4, guidance=3.0, shift=3.0, seed=2)
    today = sample_latent(model, contexts, positive, negative, settings=settings)
    torch.testing.assert_close(sample_latent(model, contexts, positive, negative, settings=settings, init_latent=init),
                               today, rtol=0, atol=0)


@pytest.mark.parametrize("refs", [0, 1])
def test_partial_run_starts_from_the_noised_init(model, monkeypatch, refs):
    contexts, positive, negative, init = run_inputs(refs)
    seen = recording_start(monkeypatch)
    settings = SamplerSettings(steps=4, guidance=3.0, shift=3.0, seed=2, denoise=0.6)
    sample_latent(model, contexts, positive, negative, settings=settings, init_latent=init)
    sigmas = flow_sigmas(6, 3.0)[-5:]  # int(4 / 0.6) = 6 steps, the last 4 run
    torch.testing.assert_close(seen["sigmas"], sigmas, rtol=0, atol=0)
    full = torch.cat([contexts[0][:, :16, :refs], init], 2)  # the references' latents in front
    noise = make_noise((1, 16, 3 + refs, 4, 4), 2)
    sigma = float(sigmas[0])
    torch.testing.assert_close(seen["x"], sigma * noise + (1 - sigma) * full, rtol=0, atol=0)


def test_partial_run_needs_a_matching_init(model):
    contexts, positive, negative, init = run_inputs()
    settings = SamplerSettings(steps=2, guidance=1.0, denoise=0.5)
    with pytest.raises(VaceError, match="refines an init video"):
        sample_latent(model, contexts, positive, negative, settings=settings)
    with pytest.raises(VaceError, match="init latent is"):
        sample_latent(model, contexts, positive, negative, settings=settings, init_latent=init[..., :2])


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return tiny_model(), WanVAE(dim=4, dim_mult=(1, 1, 1, 1), num_res_blocks=1).eval().requires_grad_(False)


def video(frames, seed=0):
    base = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.interpolate(base, size=(16, 16), mode="bilinear").expand(frames, -1, -1, -1) \
        .permute(0, 2, 3, 1).contiguous()


@pytest.mark.parametrize("mode", ["autoregressive", "fused"])  # hierarchical windows sample as autoregressive
def test_long_video_windows_refine_their_frames_of_the_init_video(models, mode):
    model, vae = models
    g = torch.Generator().manual_seed(1)
    texts = torch.randn(1, 7, 64, generator=g), torch.randn(1, 5, 64, generator=g)
    unit = V.text_to_video(17, 16, 16)
    init = to_video(video(17, seed=3))
    settings = SamplerSettings(steps=2, guidance=1.0, seed=4, denoise=0.5)
    long = L.LongVideoSettings(window=9, overlap=1, mode=mode, colour_strength=0.0)
    result = L.generate_long(model, vae, unit, *texts, settings=settings, long=long, init_video=init)
    assert result.video.shape == (3, 17, 16, 16) and torch.isfinite(result.video).all()
    assert not torch.equal(result.video, L.generate_long(model, vae, unit, *texts, settings=settings, long=long,
                                                         init_video=-init).video)  # the init video matters
    one = L.generate_long(model, vae, unit, *texts, settings=settings,
                          long=L.LongVideoSettings(window=17, mode=mode, colour_strength=0.0), init_video=init)
    torch.testing.assert_close(one.video, generate(model, vae, unit, *texts, settings=settings, init_video=init),
                               rtol=0, atol=0)  # one window: exactly generate
