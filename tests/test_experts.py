"""Wan2.2 two-expert sampling (Wan2.2-VACE-Fun-A14B) against diffusers' WanVACEPipeline(transformer,
transformer_2, boundary_ratio) on tiny random experts, per-expert guidance included; the switch, loading,
and the step cache per expert."""

import pytest
import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanVACEPipeline
from einops import rearrange

from tests.reference import diffusers_vace, randomise
from vace_core.checkpoints import load_vace_model
from vace_core.errors import VaceError
from vace_core.experts import Experts, check_pair, load_experts
from vace_core.pipeline import SamplerSettings, generate, sample_latent
from vace_core.step_cache import TeaCache
from vace_core.vae import load_vae
from vace_core.vcu import inpaint, text_to_video

H, W, FRAMES = 32, 48, 9
# shift 3 on diffusers' grid: timesteps 999, 937, 857, ...: two high-noise steps, then the low-noise expert
SETTINGS = SamplerSettings(steps=6, guidance=5.0, shift=3.0, solver="unipc", schedule="diffusers", seed=11)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(folder with high_noise_model / low_noise_model / vae, diffusers' two-expert pipeline, our VAE)."""
    folder = tmp_path_factory.mktemp("wan22")
    for name, seed in (("high_noise_model", 0), ("low_noise_model", 1)):
        diffusers_vace(2, 12, 3, (0, 2), seed=seed)[0].save_pretrained(folder / name)
    vae = randomise(AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                     temperal_downsample=[False, True, True]), seed=5, std=0.2)
    vae.save_pretrained(folder / "vae")
    high, low = (diffusers_vace(2, 12, 3, (0, 2), seed=seed)[0] for seed in (0, 1))
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        flow_shift=SETTINGS.shift, num_train_timesteps=1000)
    pipe = WanVACEPipeline(tokenizer=None, text_encoder=None, vae=vae, scheduler=scheduler, transformer=high,
                           transformer_2=low, boundary_ratio=0.875)
    pipe.set_progress_bar_config(disable=True)
    return folder, pipe, load_vae(folder / "vae")


def texts():
    g = torch.Generator().manual_seed(3)
    return torch.randn(1, 12, 32, generator=g), torch.randn(1, 7, 32, generator=g)


def run_diffusers(pipe, guidance, guidance_2, vcu=None):
    positive, negative = (torch.nn.functional.pad(t, (0, 0, 0, 512 - t.shape[1])) for t in texts())
    kwargs = {}
    if vcu is not None:
        kwargs["video"] = rearrange(vcu.frames + 1, "c t h w -> 1 t c h w") / 2
        kwargs["mask"] = rearrange(vcu.masks, "t h w -> 1 t 1 h w").expand(-1, -1, 3, -1, -1)
    out = pipe(prompt_embeds=positive, negative_prompt_embeds=negative, height=H, width=W, num_frames=FRAMES,
               num_inference_steps=SETTINGS.steps, guidance_scale=guidance, guidance_scale_2=guidance_2,
               generator=torch.Generator().manual_seed(SETTINGS.seed), output_type="pt", **kwargs).frames[0]
    return rearrange(out, "t c h w -> c t h w") * 2 - 1


def clip():
    return torch.rand(FRAMES, H, W, 3, generator=torch.Generator().manual_seed(4))


def inpaint_vcu():
    mask = torch.zeros(H, W)
    mask[8:24, 12:36] = 1
    return inpaint(clip(), mask)


@pytest.mark.parametrize(("guidance", "guidance_low", "task"), [(5.0, 2.0, "t2v"), (4.0, None, "inpaint")])
def test_same_video_as_diffusers_two_experts(setup, guidance, guidance_low, task):
    folder, pipe, vae = setup
    experts = load_experts(folder, guidance_low=guidance_low, device="cpu")
    vcu = inpaint_vcu() if task == "inpaint" else text_to_video(FRAMES, H, W)
    expected = run_diffusers(pipe, guidance, guidance_low, None if task == "t2v" else vcu)
    positive, negative = texts()
    settings = SamplerSettings(steps=SETTINGS.steps, guidance=guidance, shift=SETTINGS.shift, schedule="diffusers",
                               seed=SETTINGS.seed)
    out = generate(experts, vae, vcu, positive[0], negative[0], settings=settings)
    err = (out - expected).abs().max().item()
    print(f"{task}, guidance {guidance} / {guidance_low}: max abs difference {err:.2e}")
    assert err < 1e-5


def test_each_expert_matters_and_the_switch_follows_the_boundary(setup):
    folder, _, _ = setup
    high, low = (load_vace_model(folder / name, device="cpu") for name in ("high_noise_model", "low_noise_model"))
    loaded = []

    def load(expert):
        loaded.append("high" if expert is high else "low")
        return expert

    contexts, (positive, negative) = [torch.randn(1, 96, 3, 4, 6)], texts()
    both = sample_latent(Experts(high, low, load=load), contexts, positive, negative, settings=SETTINGS)
    assert loaded == ["high", "low"]  # each loaded once: ComfyUI keeps one resident
    only_high = sample_latent(high, contexts, positive, negative, settings=SETTINGS)
    only_low = sample_latent(low, contexts, positive, negative, settings=SETTINGS)
    assert (both - only_high).abs().max() > 1e-3 and (both - only_low).abs().max() > 1e-3
    # boundary 0: the high-noise expert all the way, exactly as the single model
    all_high = sample_latent(Experts(high, low, boundary=0.0), contexts, positive, negative, settings=SETTINGS)
    torch.testing.assert_close(all_high, only_high, rtol=0, atol=0)
    loaded.clear()
    Experts(high, low, load=load).at(875.0, 5.0)
    Experts(high, low, load=load).at(874.0, 5.0)
    assert loaded == ["high", "low"]


def test_step_cache_keeps_one_cache_per_expert(setup):
    folder, _, _ = setup
    experts = load_experts(folder, device="cpu")
    decided = []
    cache = TeaCache(1e9, coefficients=(1.0, 0.0))
    original = cache.should_compute

    def record(state, inp, step, key, coefficients):
        decided.append((step, original(state, inp, step, key, coefficients)))
        return decided[-1][1]

    cache.should_compute = record
    contexts, (positive, negative) = [torch.randn(1, 96, 3, 4, 6)], texts()
    sample_latent(experts, contexts, positive, negative,
                  settings=SamplerSettings(steps=6, guidance=5.0, shift=3.0, schedule="diffusers", seed=1,
                                                  step_cache=cache))
    # high: steps 0-1 (0 computed, 1 cached); low from step 2: its first step computes (its own empty cache)
    assert [step for step, computed in decided if computed] == [0, 2, 5]


def test_experts_of_different_shapes_and_missing_folders_are_refused(setup, tmp_path):
    folder, _, _ = setup
    small = load_vace_model(folder / "high_noise_model", device="cpu").config
    with pytest.raises(VaceError, match="differ in shape"):
        check_pair(small, type(small)(dim=48, ffn_dim=32, num_heads=4, num_layers=3, vace_layers=(0, 2),
                                      text_dim=32))
    with pytest.raises(VaceError, match="high_noise_model and low_noise_model"):
        load_experts(tmp_path)
    with pytest.raises(VaceError, match="boundary"):
        Experts(None, None, boundary=875)


def test_command_line_runs_a_wan22_release_folder(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    from vace_core import __main__ as cli
    from vace_core.__main__ import main
    from vace_core.embedded import tiny_model
    from vace_core.video_io import read_video

    for seed, name in enumerate(("high_noise_model", "low_noise_model")):
        (tmp_path / name).mkdir()
        save_file(tiny_model(seed).state_dict(), tmp_path / name / "diffusion_pytorch_model.safetensors")
    # the embedded tiny VAE and text encoder stand in for the user's (the CLI asks for the three files together;
    # a tiny umt5 file with the tiny byte tokenizer does not exist)
    monkeypatch.setattr(cli, "_check_model_files", lambda args: None)
    args = ["run", "--prompt", "a cat", "--width", "48", "--height", "32", "--length", "5", "--steps", "3",
            "--shift", "3", "--cfg", "5", "--device", "cpu"]
    calls = []
    at = Experts.at

    def spy(self, timestep, guidance):  # which expert runs each step, at which guidance
        module, used = at(self, timestep, guidance)
        calls.append((round(float(timestep)), self.which(timestep), used))
        return module, used

    monkeypatch.setattr(Experts, "at", spy)
    main([*args, "--model", str(tmp_path), "--cfg-low", "2", "--out", str(tmp_path / "two.mp4")])
    # the grid by hand (shift 3, 3 steps: sigma = 3 s / (1 + 2 s), s = 0.99989, 0.66659, 0.33329): timesteps
    # 999, 856, 599; the boundary 0.875 gives step 0 to the high-noise expert (cfg 5), steps 1-2 to the low (cfg 2)
    assert list(dict.fromkeys(calls)) == [(999, "high", 5.0), (856, "low", 2.0), (599, "low", 2.0)]  # per step
    main([*args, "--model", str(tmp_path / "high_noise_model"), "--out", str(tmp_path / "one.mp4")])
    two, one = read_video(tmp_path / "two.mp4")[0], read_video(tmp_path / "one.mp4")[0]
    assert two.shape == one.shape == (5, 32, 48, 3)
    assert (two - one).abs().mean() > 0.01  # the low-noise expert (its weights, cfg 2) ran the later steps


def test_a_plain_model_has_no_low_noise_guidance_of_its_own():
    """A plain model is the one expert of every step: its guidance is the run's at every step (the low-noise
    expert's default cfg 3 is only for Wan2.2 pairs), so cfg 1 is unguided throughout."""
    from vace_core.embedded import tiny_model
    from vace_core.experts import as_experts

    assert as_experts(tiny_model(0)).guidances(1.0) == (1.0, 1.0)
