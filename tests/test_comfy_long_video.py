"""VACE Long Video Sampler and Color Match inside a real ComfyUI server (one server for the module): every
mode end to end over the API queue, colour anchoring to an image, bad settings as clear errors, and Cancel
returning the finished windows while the graph goes on, the extension example at its full length (241 frames, 4
windows). Tiny checkpoints (tests/integration/fixtures.py), 32x32 frames, 17-frame VCUs in 9-frame windows, one
step."""

import json
import time

import pytest

from tests.integration.comfy_server import messages, output_files
from tests.integration.examples import example_path
from tests.integration.fixtures import write_inputs, write_models
from tests.integration.graphs import assert_success, runnable, t2v_prompt
from vace_core.example_media import FILES
from vace_core.video_io import read_video

SIZE, FRAMES, WINDOW = 32, 17, 9


@pytest.fixture(scope="module")
def comfy(comfy_server, tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy_long")
    write_models(base)
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
