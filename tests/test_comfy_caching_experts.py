"""Step caching and Wan2.2 two-expert sampling in a real ComfyUI server, driven over HTTP.

Caching: VACE Step Cache (TeaCache, and EasyCache) -> VACE Sampler; threshold 0 gives the uncached latent bit for
bit, a positive threshold skips model evaluations and reports how many; TeaCache's context-every-step keeps its
skips and changes the latent (the hints are refreshed on skipped steps). Wan2.2: two tiny random experts saved
under the release names (scaled fp8, as Comfy-Org ships them), the low-noise one through VACE Wan2.2 Low-Noise
Expert; the example workflow runs; boundary 0 (high-noise expert only) gives exactly the high-noise expert's
single-model latent; only one expert is resident when each is loaded (ComfyUI's loaded-model list, logged by
the sampler).
"""

import re

import pytest
import torch
from safetensors.torch import load_file

from tests.integration.comfy_server import ComfyServer, messages, output_files
from tests.integration.examples import build
from tests.integration.fixtures import EXPERT_NAMES, TINY_DIT, write_inputs, write_models
from tests.integration.graphs import FRAMES, H, W, assert_success, runnable, t2v_prompt
from tests.integration.native_graphs import run_latent
from vace_core.checkpoints import save_checkpoint
from vace_core.config import VaceConfig
from vace_core.transformer import VaceTransformer

STEPS = 6
OTHER_SHAPE = "other_shape_vace.safetensors"  # one 128-wide head, 2 blocks: not the experts' shape
# the tiny DiT with its timestep embedding offset by 5: it then changes 1.5-2.3 % per step on the 6-step grid, as a
# real Wan's does (random init changes ~80 %, where TeaCache's polynomial never allows a skip). At the published
# 1.3B threshold 0.08 the rescaled changes (.053 .055 .047 .040 .038) skip steps 1 and 3: 4 evaluations.
SLOW_TEMB = "vace_slow_timestep_embedding.safetensors"


@pytest.fixture(scope="module")
def comfy(comfy_server, tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy_speed")
    write_models(base)
    torch.manual_seed(0)
    dit = VaceTransformer(TINY_DIT).state_dict()
    dit["time_embedding.2.bias"] += 5
    save_checkpoint(dit, base / "models" / "diffusion_models" / SLOW_TEMB, "official", torch.float16)
    other = VaceConfig(dim=128, ffn_dim=256, num_heads=1, num_layers=2, vace_layers=(0,), text_dim=4096)
    save_checkpoint(VaceTransformer(other).state_dict(), base / "models" / "diffusion_models" / OTHER_SHAPE,
                    "official", torch.float16)
    write_inputs(base, H, W + 32, FRAMES)
    with comfy_server.serving(base) as server:
        yield server


def latent_graph(model: str | None = None) -> dict:
    """The small T2V graph with its latent saved (no decode); the sampler's model file changed if given."""
    prompt = t2v_prompt(seed=3, steps=STEPS)
    for name in ("decode", "save"):
        del prompt[name]
    prompt["save"] = {"class_type": "SaveLatent", "inputs": {"samples": ["sample", 0], "filename_prefix": "speed"}}
    if model is not None:
        prompt["model"]["inputs"]["model_name"] = model
    return prompt


def with_cache(prompt: dict, threshold: float) -> dict:
    prompt["cache"] = {"class_type": "VACEStepCache", "inputs": {
        "threshold": threshold, "mode": "timestep embedding", "coefficients": "wan2.1 1.3B"}}
    prompt["sample"]["inputs"]["step_cache"] = ["cache", 0]
    return prompt


def with_easycache(prompt: dict, threshold: float, warmup: int) -> dict:
    prompt["cache"] = {"class_type": "VACEEasyCache", "inputs": {"threshold": threshold, "warmup": warmup}}
    prompt["sample"]["inputs"]["step_cache"] = ["cache", 0]
    return prompt


def with_low_noise_expert(prompt: dict, boundary: float) -> dict:
    prompt["low_model"] = {**prompt["model"], "inputs": {**prompt["model"]["inputs"], "model_name": EXPERT_NAMES[1]}}
    prompt["low"] = {"class_type": "VACEWan22LowNoiseExpert", "inputs": {
        "low_noise_model": ["low_model", 0], "cfg": 3.0, "boundary": boundary}}
    prompt["sample"]["inputs"]["low_noise_expert"] = ["low", 0]
    return prompt


def cache_report(comfy: ComfyServer, prompt: dict) -> tuple[torch.Tensor, int, int]:
    """(latent, skipped, total evaluations) as the sampler reports them in its UI output."""
    entry = comfy.run(prompt, timeout=600)
    assert_success(entry)
    [path] = output_files(comfy.base_dir, entry)
    latent = load_file(path)["latent_tensor"]
    [text] = entry["outputs"]["sample"]["text"]
    skipped, total = map(int, re.search(r"blocks of (\d+) of (\d+) model evaluations", text).groups())
    return latent, skipped, total


def test_step_cache_off_is_exact_and_on_saves_evaluations(comfy):
    plain, _ = run_latent(comfy, latent_graph(SLOW_TEMB))
    off, skipped, total = cache_report(comfy, with_cache(latent_graph(SLOW_TEMB), 0.0))
    torch.testing.assert_close(off, plain, rtol=0, atol=0)
    assert (skipped, total) == (0, 2 * STEPS)  # cfg 5: two evaluations (CFG branches) per step
    on, skipped, total = cache_report(comfy, with_cache(latent_graph(SLOW_TEMB), 0.08))
    assert (skipped, total) == (4, 2 * STEPS)
    assert torch.isfinite(on).all() and 0 < (on - plain).abs().max() < plain.abs().max()


def test_easycache_node_off_is_exact_and_on_skips(comfy):
    plain, _ = run_latent(comfy, latent_graph(SLOW_TEMB))
    off, skipped, total = cache_report(comfy, with_easycache(latent_graph(SLOW_TEMB), 0.0, 10))
    torch.testing.assert_close(off, plain, rtol=0, atol=0)
    assert (skipped, total) == (0, 2 * STEPS)
    on, skipped, total = cache_report(comfy, with_easycache(latent_graph(SLOW_TEMB), 1.0, 0))
    # steps 0 and 1 measure the rate and the last step always runs: at most 3 of 6 steps skip, both CFG rows each
    assert total == 2 * STEPS and skipped in (2, 4, 6)
    assert torch.isfinite(on).all() and 0 < (on - plain).abs().max() < plain.abs().max()


def test_teacache_context_every_step_keeps_the_skips_and_refreshes_the_hints(comfy):
    plain_cache, skipped, _ = cache_report(comfy, with_cache(latent_graph(SLOW_TEMB), 0.08))
    prompt = with_cache(latent_graph(SLOW_TEMB), 0.08)
    prompt["cache"]["inputs"]["context_every_step"] = True
    fresh, fresh_skipped, total = cache_report(comfy, prompt)
    assert (fresh_skipped, total) == (skipped, 2 * STEPS) == (4, 2 * STEPS)  # TeaCache's own decisions
    assert torch.isfinite(fresh).all() and not torch.equal(fresh, plain_cache)


def test_wan22_example_workflow_runs_with_one_expert_resident(comfy):
    workflow = runnable(build("vace_wan22_two_experts", comfy.info), comfy.info)
    for node in workflow.values():  # the example's 40 steps at shift 12: keep some high-noise steps on the CPU
        if node["class_type"] == "VACESampler":
            node["inputs"].update(steps=4, shift=12.0)
    entry = comfy.run(workflow, timeout=600)
    assert_success(entry)
    loads = re.findall(r"VACE Wan2.2: (\w+)-noise expert loaded; experts resident: (\d)", comfy.log_tail(200_000))
    assert loads[-2:] == [("high", "1"), ("low", "1")]


def test_two_experts_switch_at_the_boundary(comfy):
    high_only, _ = run_latent(comfy, latent_graph(EXPERT_NAMES[0]))
    low_only, _ = run_latent(comfy, latent_graph(EXPERT_NAMES[1]))
    boundary_zero, _ = run_latent(comfy, with_low_noise_expert(latent_graph(EXPERT_NAMES[0]), 0.0))
    torch.testing.assert_close(boundary_zero, high_only, rtol=0, atol=0)
    both, _ = run_latent(comfy, with_low_noise_expert(latent_graph(EXPERT_NAMES[0]), 0.875))
    assert (both - high_only).abs().max() > 1e-3 and (both - low_only).abs().max() > 1e-3
    # the grid's timesteps by hand (shift 16, 6 steps: sigma = 16 s / (1 + 15 s), s from 0.99994 down by 1/6):
    # 999 987 969 941 888 761. Boundary 0.875: the low-noise expert takes step 5; 0.885 switches there too (888 >=
    # 885): the same latent; 0.89 switches a step earlier (888 < 890): another latent
    same_step, _ = run_latent(comfy, with_low_noise_expert(latent_graph(EXPERT_NAMES[0]), 0.885))
    torch.testing.assert_close(same_step, both, rtol=0, atol=0)
    step_earlier, _ = run_latent(comfy, with_low_noise_expert(latent_graph(EXPERT_NAMES[0]), 0.89))
    assert (step_earlier - both).abs().max() > 1e-3


def test_experts_of_different_shapes_give_a_clear_error_and_the_server_goes_on(comfy):
    prompt = with_low_noise_expert(latent_graph(EXPERT_NAMES[0]), 0.875)
    prompt["low_model"]["inputs"]["model_name"] = OTHER_SHAPE
    entry = comfy.run(prompt, timeout=600)
    assert entry["status"]["status_str"] == "error"
    error = messages(entry)["execution_error"]
    assert error["node_type"] == "VACESampler" and "differ in shape" in error["exception_message"]
    assert "Traceback" not in error["exception_message"]
    assert_success(comfy.run(latent_graph(EXPERT_NAMES[1]), timeout=600))
