"""VACE Long Video Sampler and Color Match inside a real ComfyUI server (one server for the module): every
mode end to end over the API queue, colour anchoring to an image, bad settings as clear errors, and Cancel
returning the finished windows while the graph goes on, the extension example at its full length (241 frames, 4
windows); the sampler's step cache, low-noise expert and regions inputs used (issue 18). Tiny checkpoints
(tests/integration/fixtures.py), 32x32 frames, 17-frame VCUs in 9-frame windows, one step."""

import json
import re
import time

import pytest
import torch

from tests.integration.comfy_server import messages, output_files
from tests.integration.examples import example_path
from tests.integration.fixtures import EXPERT_NAMES, TINY_DIT, write_inputs, write_models
from tests.integration.graphs import assert_success, runnable, t2v_prompt
from tests.test_comfy_caching_experts import SLOW_TEMB
from vace_core.checkpoints import save_checkpoint
from vace_core.example_media import FILES
from vace_core.transformer import VaceTransformer
from vace_core.video_io import read_video

SIZE, FRAMES, WINDOW = 32, 17, 9


@pytest.fixture(scope="module")
def comfy(comfy_server, tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy_long")
    write_models(base)
    torch.manual_seed(0)  # the tiny DiT whose timestep embedding changes as a real Wan's (TeaCache can skip)
    dit = VaceTransformer(TINY_DIT).state_dict()
    dit["time_embedding.2.bias"] += 5
    save_checkpoint(dit, base / "models" / "diffusion_models" / SLOW_TEMB, "official", torch.float16)
    write_inputs(base, SIZE, SIZE, FRAMES)
    with comfy_server.serving(base) as server:
        yield server


def long_prompt(mode: str = "autoregressive", steps: int = 1, seed: int = 0, **options) -> dict:
    """Text-to-video over 17 frames -> VACE Long Video Sampler -> Color Match to an image -> animated webp."""
    sampler = {"vace_model": ["model", 0], "vace_vae": ["vae", 0], "positive": ["pos", 0], "negative": ["neg", 0],
               "vcu": ["vcu", 0], "strength": 1.0, "start": 0.0, "end": 1.0, "steps": steps, "cfg": 1.0,
               "shift": 16.0, "sampler": "unipc", "seed": seed, "offload_after": False, "mode": mode,
               "window": WINDOW, "overlap": 5, "discard": 0, "perturbation": 0.02, "replace_latents": False,
               "carry_guidance": 0.0, "keyframes": 0, "fused_weights": "linear", "colour_method": "reinhard",
               "colour_strength": 1.0, "colour_masked": False, "paste_kept": False, "feather": 8, **options}
    prompt = {k: v for k, v in t2v_prompt().items() if k not in ("sample", "decode", "save")}
    prompt["vcu"]["inputs"].update(width=SIZE, height=SIZE, length=FRAMES)
    return {
        **prompt,
        "long": {"class_type": "VACELongVideoSampler", "inputs": sampler},
        "anchor": {"class_type": "LoadImage", "inputs": {"image": FILES["reference"]}},
        "match": {"class_type": "VACEColorMatch", "inputs": {"images": ["long", 0], "anchor": ["anchor", 0],
                                                             "method": "mkl", "strength": 0.5}},
        "save": {"class_type": "SaveAnimatedWEBP", "inputs": {
            "images": ["match", 0], "filename_prefix": f"long_{mode}_{seed}", "fps": 16.0, "lossless": False,
            "quality": 80, "method": "fastest"}},
    }


@pytest.mark.parametrize("mode, options", [
    ("autoregressive", {"replace_latents": True, "carry_guidance": 1.0}),
    ("hierarchical", {"keyframes": 5}),
    ("fused", {}),
])
def test_each_mode_makes_the_whole_video(comfy, mode, options):
    entry = comfy.run(long_prompt(mode, **options), timeout=600)
    assert_success(entry)
    [video] = output_files(comfy.base_dir, entry)
    frames, _ = read_video(video)
    assert frames.shape == (FRAMES, SIZE, SIZE, 3) and frames.std() > 0.01


def test_bad_settings_are_clear_errors(comfy):
    entry = comfy.run(long_prompt(window=9, overlap=5, discard=4), timeout=120)
    error = messages(entry)["execution_error"]
    assert error["node_type"] == "VACELongVideoSampler" and error["exception_type"].endswith("VaceError")
    assert "leave no new frames" in error["exception_message"]
    assert comfy.alive()


def test_cancel_returns_the_finished_windows(comfy):
    """Cancel during window 2 of 3: the sampler returns window 1's frames and the graph saves them."""
    marker = "window 2 of 3"
    seen = comfy.log_tail(10**7).count(marker)
    prompt_id = comfy.queue(long_prompt(steps=12, seed=9, colour_strength=0.0))
    deadline = time.monotonic() + 900  # window 1 takes seconds; minutes on a machine busy with other suites
    while comfy.log_tail(10**7).count(marker) == seen and time.monotonic() < deadline:
        time.sleep(0.2)
    assert time.monotonic() < deadline, comfy.log_tail()
    comfy.interrupt()
    entry = comfy.wait(prompt_id, timeout=300)
    assert_success(entry)
    assert "execution_interrupted" not in messages(entry)
    [video] = output_files(comfy.base_dir, entry)
    assert read_video(video)[0].shape[0] == WINDOW  # window 1's frames, nothing half-made
    assert "cancelled; returning 9 frames (1 of 3 windows)" in comfy.log_tail()


def test_long_extension_example_runs_at_its_full_length(comfy):
    """The shipped extension example shrunk in size (32x32, 2 steps, a 5-frame clip kept) but not in length: 241
    frames in 4 windows of 81, each continuing from the one before, all written."""
    workflow = json.loads(example_path("vace_long_extension").read_text())
    seen = comfy.log_tail(10**7).count("window 4 of 4")
    entry = comfy.run(runnable(workflow, comfy.info, sizes={"width": SIZE, "height": SIZE}), timeout=900)
    assert_success(entry)
    [video] = output_files(comfy.base_dir, entry)
    assert read_video(video)[0].shape == (241, SIZE, SIZE, 3)
    assert comfy.log_tail(10**7).count("window 4 of 4") > seen  # the sampler went through 4 windows


def test_long_hierarchical_example_runs(comfy):
    """The shipped keyframe example, shrunk as the example suite shrinks them (9 frames: one window)."""
    workflow = json.loads(example_path("vace_long_hierarchical").read_text())
    entry = comfy.run(runnable(workflow, comfy.info), timeout=900)
    assert_success(entry)
    [video] = output_files(comfy.base_dir, entry)
    assert read_video(video)[0].shape[0] == 9


def lossless(prompt: dict, images: list, name: str) -> dict:
    """The prompt with `images` saved as a lossless webp (pixel-exact comparisons), and no Color Match."""
    prompt = {k: v for k, v in prompt.items() if k not in ("anchor", "match")}
    prompt["save"] = {"class_type": "SaveAnimatedWEBP", "inputs": {
        "images": images, "filename_prefix": name, "fps": 16.0, "lossless": True, "quality": 100,
        "method": "fastest"}}
    return prompt


def frames_of(comfy, prompt: dict) -> tuple[torch.Tensor, dict]:
    entry = comfy.run(prompt, timeout=900)
    assert_success(entry)
    [video] = output_files(comfy.base_dir, entry)
    return torch.as_tensor(read_video(video)[0]).float(), entry


def test_step_cache_reports_skipped_evaluations_over_the_windows(comfy):
    prompt = lossless(long_prompt(steps=6, colour_strength=0.0), ["long", 0], "long_cache")
    prompt["model"]["inputs"]["model_name"] = SLOW_TEMB
    plain, _ = frames_of(comfy, prompt)
    prompt["cache"] = {"class_type": "VACEStepCache", "inputs": {
        "threshold": 0.08, "mode": "timestep embedding", "coefficients": "wan2.1 1.3B"}}
    prompt["long"]["inputs"]["step_cache"] = ["cache", 0]
    cached, entry = frames_of(comfy, prompt)
    [text] = entry["outputs"]["long"]["text"]
    skipped, total = map(int, re.search(r"blocks of (\d+) of (\d+) model evaluations", text).groups())
    assert total == 3 * 6 and skipped > 0  # 3 windows x 6 steps, cfg 1: one evaluation each
    assert cached.shape == plain.shape and not torch.equal(cached, plain)  # skipped blocks: another video


def test_low_noise_expert_changes_the_video(comfy):
    # shift 5: timesteps 999, 937 (high-noise expert), 833, 625 (low-noise expert) in every window
    prompt = lossless(long_prompt(steps=4, shift=5.0, colour_strength=0.0), ["long", 0], "long_experts")
    prompt["model"]["inputs"]["model_name"] = EXPERT_NAMES[0]
    high_only, _ = frames_of(comfy, prompt)
    prompt["low_model"] = {**prompt["model"], "inputs": {**prompt["model"]["inputs"], "model_name": EXPERT_NAMES[1]}}
    prompt["low"] = {"class_type": "VACEWan22LowNoiseExpert", "inputs": {
        "low_noise_model": ["low_model", 0], "cfg": 1.0, "boundary": 0.875}}
    prompt["long"]["inputs"]["low_noise_expert"] = ["low", 0]
    both, _ = frames_of(comfy, prompt)
    assert both.shape == high_only.shape == (FRAMES, SIZE, SIZE, 3)
    assert (both - high_only).abs().max() > 0.1  # frames in 0..1: the low-noise expert made the later steps
    loads = re.findall(r"VACE Wan2.2: (\w+)-noise expert loaded; experts resident: (\d)", comfy.log_tail(200_000))
    assert loads[-6:] == [("high", "1"), ("low", "1")] * 3  # every window switches, one expert resident


def with_regions(prompt: dict, sampler: str) -> dict:
    """Regional Prompts (a fox on the left half) into `sampler`'s regions and positive, through the test CLIP."""
    prompt["tclip"] = {"class_type": "VACETestCLIPLoader", "inputs": {}}
    prompt["empty"] = {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": SIZE, "height": SIZE}}
    prompt["left"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": SIZE // 2, "height": SIZE}}
    prompt["half"] = {"class_type": "MaskComposite", "inputs": {
        "destination": ["empty", 0], "source": ["left", 0], "x": 0, "y": 0, "operation": "add"}}
    prompt["regions"] = {"class_type": "VACERegionalPrompts", "inputs": {
        "clip": ["tclip", 0], "prompt": "a fox and a hare in the snow", "prompt_1": "a fox", "mask_1": ["half", 0],
        "background_prompt": "the snow", "self_strength": 0.3, "cross_strength": 1.0, "end": 1.0,
        "context_blocks": True, "soft_edges": False}}
    prompt[sampler]["inputs"].update(regions=["regions", 1], positive=["regions", 0])
    return prompt


def test_regions_change_the_video_and_one_window_equals_the_regional_sampler(comfy):
    prompt = lossless(long_prompt(steps=2, colour_strength=0.0), ["long", 0], "long_regions")
    prompt["pos"]["inputs"]["text"] = "a fox and a hare in the snow"
    plain, _ = frames_of(comfy, prompt)
    regional, _ = frames_of(comfy, with_regions(prompt, "long"))
    assert regional.shape == plain.shape == (FRAMES, SIZE, SIZE, 3)
    assert not torch.equal(regional, plain)  # a tiny random DiT over 2 steps: the modulation moves a few levels
    # one window (9 frames): the Long Video Sampler with regions == VACE Sampler with regions + VACE Decode
    prompt["vcu"]["inputs"]["length"] = WINDOW
    one_window, _ = frames_of(comfy, prompt)
    graph = t2v_prompt(steps=2)
    graph["vcu"]["inputs"].update(width=SIZE, height=SIZE, length=WINDOW)
    graph["sample"]["inputs"].update(cfg=1.0, seed=0)
    graph["pos"]["inputs"]["text"] = "a fox and a hare in the snow"
    sampled, _ = frames_of(comfy, lossless(with_regions(graph, "sample"), ["decode", 0], "sampler_regions"))
    assert one_window.shape == sampled.shape == (WINDOW, SIZE, SIZE, 3)
    assert torch.equal(one_window, sampled)
