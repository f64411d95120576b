"""Every VACE task end to end against diffusers' WanVACEPipeline: same tiny weights (loaded by our loaders
from the folders diffusers saves), same scheduler grid, noise and inputs."""

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanVACEPipeline
from einops import rearrange

from tests.reference import diffusers_vace, randomise
from vace_core.checkpoints import load_vace_model
from vace_core.errors import VaceError
from vace_core.pipeline import SamplerSettings, composite, generate, sample_latent
from vace_core.sampling import SamplingInterrupted
from vace_core.vae import load_vae
from vace_core.vcu import extend, inpaint, text_to_video, with_references

H, W, FRAMES = 32, 48, 9
SETTINGS = SamplerSettings(steps=6, guidance=5.0, shift=3.0, solver="unipc", schedule="diffusers", seed=11)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(diffusers pipeline, our DiT, our VAE) sharing weights through saved diffusers folders."""
    folder = tmp_path_factory.mktemp("models")
    ref_dit, _, _ = diffusers_vace(2, 12, 3, (0, 2))
    ref_vae = randomise(AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                         temperal_downsample=[False, True, True]), seed=5, std=0.2)
    ref_dit.save_pretrained(folder / "transformer")
    ref_vae.save_pretrained(folder / "vae")
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        flow_shift=SETTINGS.shift, num_train_timesteps=1000)
    pipe = WanVACEPipeline(tokenizer=None, text_encoder=None, vae=ref_vae, scheduler=scheduler, transformer=ref_dit)
    pipe.set_progress_bar_config(disable=True)
    return pipe, load_vace_model(folder / "transformer", device="cpu"), load_vae(folder / "vae")


def texts(seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 12, 32, generator=g), torch.randn(1, 7, 32, generator=g)


def pil(seed, h=16, w=16):
    rng = np.random.default_rng(seed)
    return PIL.Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def as_image(img):
    return torch.from_numpy(np.array(img)).float() / 255


def run_diffusers(pipe, vcu=None, refs=None):
    # zero-padded to 512 as diffusers' own prompt encoding (and the official code) does
    positive, negative = (torch.nn.functional.pad(t, (0, 0, 0, 512 - t.shape[1])) for t in texts())
    kwargs = {}
    if vcu is not None:  # the same frames and masks our VCU holds, as (B, F, C, H, W) tensors
        kwargs["video"] = rearrange(vcu.frames + 1, "c t h w -> 1 t c h w") / 2  # 0..1, as diffusers asks
        kwargs["mask"] = rearrange(vcu.masks, "t h w -> 1 t 1 h w").expand(-1, -1, 3, -1, -1)
    out = pipe(prompt_embeds=positive, negative_prompt_embeds=negative, reference_images=refs, height=H, width=W,
               num_frames=FRAMES, num_inference_steps=SETTINGS.steps, guidance_scale=SETTINGS.guidance,
               generator=torch.Generator().manual_seed(SETTINGS.seed), output_type="pt", **kwargs).frames[0]
    return rearrange(out, "t c h w -> c t h w") * 2 - 1  # diffusers returns 0..1


def run_ours(dit, vae, vcu):
    positive, negative = texts()
    return generate(dit, vae, vcu, positive[0], negative[0], settings=SETTINGS)


def clip(seed):
    return torch.rand(FRAMES, H, W, 3, generator=torch.Generator().manual_seed(seed))


def tasks():
    mask = torch.zeros(H, W)
    mask[8:24, 12:36] = 1
    refs = [pil(1), pil(2, 16, 24)]
    return {
        "t2v": (text_to_video(FRAMES, H, W), None),
        "r2v, two references": (with_references(text_to_video(FRAMES, H, W), [as_image(r) for r in refs]), refs),
        "inpaint": (inpaint(clip(4), mask), None),
        "temporal extension": (extend(clip(5)[:1], FRAMES), None),
    }


@pytest.mark.parametrize("task", tasks().keys())
def test_same_video_as_diffusers(models, task):
    pipe, dit, vae = models
    vcu, refs = tasks()[task]
    expected = run_diffusers(pipe, None if task.startswith(("t2v", "r2v")) else vcu, refs)
    out = run_ours(dit, vae, vcu)
    assert out.shape == (3, FRAMES, H, W) == expected.shape
    err = (out - expected).abs().max().item()
    print(f"{task}: max abs difference {err:.2e}")
    assert err < 1e-5, f"max abs difference {err:.2e} in [-1, 1] pixels"


def test_same_seed_same_video_other_seed_other_video(models):
    _, dit, vae = models
    vcu = text_to_video(FRAMES, H, W)
    a, b = run_ours(dit, vae, vcu), run_ours(dit, vae, vcu)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    positive, negative = texts()
    other = generate(dit, vae, vcu, positive[0], negative[0], settings=SamplerSettings(steps=6, shift=3.0, seed=12))
    assert (other - a).abs().max() > 1e-3


def test_callback_stops_between_steps(models):
    _, dit, vae = models
    positive, _ = texts()
    seen = []

    def callback(step, total, x, preview):
        seen.append(step)
        return step < 2

    contexts = [torch.zeros(1, 96, 3, H // 8, W // 8)]
    with pytest.raises(SamplingInterrupted) as stop:
        sample_latent(dit, contexts, positive, None, settings=SamplerSettings(steps=5), callback=callback)
    assert seen == [1, 2] and stop.value.step == 2 and stop.value.total == 5


def test_strength_zero_equals_no_context_and_start_end_window(models):
    _, dit, vae = models
    positive, negative = texts()
    vcu = inpaint(clip(6), torch.ones(H, W))
    settings = SamplerSettings(steps=4, shift=3.0)
    ctx = [torch.randn(1, 96, 3, H // 8, W // 8)]
    off = sample_latent(dit, ctx, positive, negative, [(0.0, 0, 1)], settings)
    empty = sample_latent(dit, ctx, positive, negative, [(1.0, 0.5, 0.5)], settings)  # an empty window
    torch.testing.assert_close(off, empty, rtol=0, atol=0)
    early = sample_latent(dit, ctx, positive, negative, [(1.0, 0, 0.5)], settings)
    full = sample_latent(dit, ctx, positive, negative, [(1.0, 0, 1)], settings)
    assert (early - off).abs().max() > 1e-4 and (early - full).abs().max() > 1e-4
    del vcu


def test_composite_pastes_kept_pixels_back_with_feathering():
    mask = torch.zeros(H, W)
    mask[8:24, 12:36] = 1
    vcu = inpaint(clip(7), mask)
    generated = torch.rand(3, FRAMES, H, W) * 2 - 1
    hard = composite(generated, vcu)
    keep = ~vcu.masks.bool()
    torch.testing.assert_close(hard[:, keep], vcu.frames[:, keep])
    torch.testing.assert_close(hard[:, ~keep], generated[:, ~keep])
    soft = composite(generated, vcu, feather=3)
    torch.testing.assert_close(soft[:, ~keep], generated[:, ~keep])  # generated area untouched
    ring = keep.clone()
    ring[:, 5:27, 9:39] = False  # within 3 px of the hole: blended
    assert not torch.allclose(soft[:, ~ring & keep], vcu.frames[:, ~ring & keep])
    torch.testing.assert_close(soft[:, ring], vcu.frames[:, ring])


def test_vcus_of_different_latents_are_refused(models):
    _, dit, vae = models
    positive, _ = texts()
    with pytest.raises(VaceError, match="different latents"):
        generate(dit, vae, [text_to_video(FRAMES, H, W), text_to_video(5, H, W)], positive[0])
