"""Fast paths for step-distilled models and LoRAs: LCM against diffusers' FlowMatchLCMScheduler, the presets,
cfg 1 running one pass per step, and the command line's --preset / --lora."""

import math

import pytest
import torch
from diffusers import FlowMatchLCMScheduler
from safetensors.torch import save_file

from tests.lora_files import comfy_lora
from vace_core.__main__ import _lora_spec, main
from vace_core.embedded import tiny_model
from vace_core.errors import VaceError
from vace_core.pipeline import SamplerSettings, sample_latent
from vace_core.sampling import flow_sigmas, make_noise, sample, seeded_generator
from vace_core.sampling.presets import PRESETS, lora_strength, preset

W = torch.randn(8, 8, generator=torch.Generator().manual_seed(0)) / 3


def toy_velocity(x, sigma, step=0):
    return torch.tanh(x @ W) + sigma**2 * x - 0.3 * math.cos(3 * sigma)


@pytest.mark.parametrize("steps, shift", [(4, 5.0), (8, 7.0), (12, 1.0)])
def test_lcm_matches_diffusers_flow_match_lcm(steps, shift):
    reference = FlowMatchLCMScheduler(shift=shift)
    reference.set_timesteps(steps)
    sigmas = flow_sigmas(steps, shift, "diffusers_euler")
    torch.testing.assert_close(sigmas.float(), reference.sigmas, rtol=0, atol=1e-6)  # the same grid
    noise = make_noise((2, 8), seed=9)
    expected, x, g = [], noise.clone(), torch.Generator().manual_seed(4)
    for i, t in enumerate(reference.timesteps):
        x = reference.step(toy_velocity(x, reference.sigmas[i].item()), t, x, generator=g, return_dict=False)[0]
        expected.append(x)
    ours = []
    result = sample(toy_velocity, noise.clone(), sigmas, "lcm", lambda s, n, x, x0: ours.append(x.clone()),
                    generator=torch.Generator().manual_seed(4))
    assert len(ours) == steps and torch.equal(result, ours[-1])
    for step, (a, b) in enumerate(zip(ours, expected, strict=True)):
        assert ((a - b).abs().max() / b.abs().max()).item() < 1e-5, f"step {step}"


def test_lcm_ends_on_the_prediction_and_renoises_in_between():
    x0 = torch.randn(3, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    sigmas = flow_sigmas(4, 5.0)
    trajectory = []
    result = sample(lambda x, sigma, step: (x - x0) / sigma, torch.randn(3, 4, dtype=torch.float64), sigmas, "lcm",
                    lambda s, n, x, p: trajectory.append((x.clone(), p.clone())), generator=seeded_generator(1))
    torch.testing.assert_close(result, x0, rtol=0, atol=1e-12)
    for (x, preview), sigma in zip(trajectory[:-1], sigmas[1:-1], strict=True):
        torch.testing.assert_close(preview, x0, rtol=0, atol=1e-12)  # every step predicts x0 exactly...
        noise = (x - (1 - sigma) * x0) / sigma  # ...and x is x0 noised afresh to the next sigma
        assert abs(noise.std().item() - 1) < 0.8 and not torch.allclose(x, x0)


def test_lcm_run_is_fixed_by_the_seed():
    model = tiny_model()
    context = torch.randn(1, 96, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    text = torch.randn(1, 6, model.config.text_dim, generator=torch.Generator().manual_seed(1))

    def run(seed):
        settings = SamplerSettings(steps=3, guidance=1.0, shift=5.0, solver="lcm", seed=seed)
        return sample_latent(model, [context], text, None, settings=settings)
    assert torch.equal(run(3), run(3)) and not torch.equal(run(3), run(4))


def test_guidance_one_runs_one_pass_per_step():
    model = tiny_model()
    calls = []
    model.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    context = torch.randn(1, 96, 2, 4, 4)
    text = torch.randn(1, 6, model.config.text_dim)
    for guidance in (1.0, 5.0):
        calls.clear()
        settings = SamplerSettings(steps=4, guidance=guidance, shift=5.0, solver="euler")
        sample_latent(model, [context], text, torch.zeros_like(text), settings=settings)
        assert calls == [1 if guidance == 1 else 2] * 4  # batch 1 (no negative pass) vs cond + uncond


def test_presets_are_the_reported_settings():
    assert PRESETS["official"][:4] == (50, 5.0, 16.0, "unipc")
    assert PRESETS["causvid"][1:3] == (1.0, 7.0) and PRESETS["lightx2v"][1:4] == (1.0, 5.0, "lcm")
    assert lora_strength("causvid", 12) == 0.3 and lora_strength("causvid", 4) == 0.9
    assert lora_strength("causvid", 9) == 0.6 and lora_strength("lightx2v", 6) == 1.0  # nearest, lower on ties
    assert lora_strength("official", 50) is None
    with pytest.raises(VaceError, match="unknown preset 'turbo': choose one of official, causvid, lightx2v"):
        preset("turbo")


def test_lora_spec():
    assert _lora_spec("a.safetensors") == ("a.safetensors", [])
    assert _lora_spec("a.safetensors:0.5") == ("a.safetensors", [0.5])
    assert _lora_spec("C:/loras/a.safetensors:0.5:0") == ("C:/loras/a.safetensors", [0.5, 0.0])


def test_cli_preset_and_lora(tmp_path, capsys):
    from vace_core.transformer import VaceTransformer

    lora = tmp_path / "speed.safetensors"
    shapes = {k: tuple(v.shape) for k, v in VaceTransformer(tiny_model().config, device="meta").state_dict().items()}
    save_file(comfy_lora(shapes), lora)
    out = tmp_path / "out.gif"
    main(["run", "--prompt", "a cat", "--width", "32", "--height", "32", "--length", "5", "--preset", "lightx2v",
          "--steps", "2", "--lora", f"{lora}:0.7", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "preset lightx2v: 2 steps, cfg 1.0, shift 5.0, lcm" in printed and "LoRA strength 1.0" in printed
    assert "speed.safetensors: 14 layers changed" in printed and out.is_file()
    with pytest.raises(SystemExit, match="not a LoRA for Wan2.1"):
        bad = tmp_path / "sd.safetensors"
        save_file({"lora_unet_down_blocks_0_proj.lora_up.weight": torch.zeros(2, 2)}, bad)
        main(["run", "--width", "32", "--height", "32", "--length", "5", "--steps", "1", "--lora", str(bad),
              "--out", str(out)])
