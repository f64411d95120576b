"""The long-video timeline, saved states, re-rendering one window and region LoRAs inside a real ComfyUI server
(the session's shared server, serving this module's folder): VACE Timeline -> VACE Long Video Sampler with
save_state, a re-render from that state over the API queue, and VACE LoRA confined to a mask. Tiny checkpoints,
32x32 frames, 17-frame VCUs in 9-frame windows, one step."""

import re

import pytest
import torch
from safetensors.torch import save_file

from tests.integration.fixtures import TINY_DIT, write_inputs, write_models
from tests.integration.graphs import assert_success
from tests.integration.test_text_node import TestClip
from tests.lora_files import comfy_lora
from tests.test_comfy_long_video import FRAMES, SIZE, long_prompt
from tests.test_region_lora import PER_TOKEN
from vace_core.job import load_job
from vace_core.transformer import VaceTransformer

PROMPTS = "a fox sleeps\na fox wakes up\na fox runs away"


@pytest.fixture(scope="module")
def comfy(comfy_server, tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy_timeline")
    write_models(base)
    write_inputs(base, SIZE, SIZE, FRAMES)
    shapes = {k: tuple(v.shape) for k, v in VaceTransformer(TINY_DIT).state_dict().items()}
    (base / "models" / "loras").mkdir(parents=True, exist_ok=True)
    save_file(comfy_lora(shapes, layers=PER_TOKEN), base / "models" / "loras" / "character.safetensors")
    with comfy_server.serving(base) as server:
        yield server


def state_of(comfy, entry) -> tuple[str, object]:
    """The state file the Long Video Sampler saved (its ui text names it) and the job read from it."""
    [text] = [t for node in entry["outputs"].values() for t in node.get("text", []) if t.startswith("state: ")]
    name = text.removeprefix("state: ")
    return name, load_job(comfy.base_dir / "output" / name)


def timeline_prompt(seed=0, **sampler) -> dict:
    prompt = long_prompt(seed=seed, colour_strength=0.0, save_state=True, **sampler)
    prompt["tclip"] = {"class_type": "VACETestCLIPLoader", "inputs": {}}
    prompt["timeline"] = {"class_type": "VACETimeline", "inputs": {"clip": ["tclip", 0], "prompts": PROMPTS,
                                                                  "blend": False, "loop": False}}
    prompt["long"]["inputs"]["timeline"] = ["timeline", 0]
    return prompt


def test_timeline_state_and_rerender_through_the_server(comfy):
    entry = comfy.run(timeline_prompt(), timeout=600)
    assert_success(entry)
    name, state = state_of(comfy, entry)
    assert re.fullmatch(r"vace_jobs/long_state_\d{5}_\.safetensors", name)
    clip = TestClip()
    for i, text in enumerate(PROMPTS.splitlines()):  # window i's text is prompt i's features
        assert torch.equal(state.timeline.prompts[i], clip.encode_from_tokens(clip.tokenize(text)))
    assert [r.prompt for r in state.records] == [0, 1, 2] and [r.seed for r in state.records] == [0, 1, 2]
    assert state.video.shape == (3, FRAMES, SIZE, SIZE)
    same = comfy.run(timeline_prompt(rerender_from=name, rerender_window=1), timeout=600)
    assert_success(same)
    assert torch.equal(state_of(comfy, same)[1].video, state.video)  # same seed: bit for bit
    new = comfy.run(timeline_prompt(seed=7, rerender_from=name, rerender_window=2), timeout=600)
    assert_success(new)
    video = state_of(comfy, new)[1].video
    assert video.shape == state.video.shape and torch.equal(video[:, :13], state.video[:, :13])
    assert not torch.equal(video[:, 13:], state.video[:, 13:])


def lora_prompt(mask_value: float | None) -> dict:
    prompt = long_prompt(colour_strength=0.0, save_state=True)
    if mask_value is not None:
        prompt["fill"] = {"class_type": "VACETestFill", "inputs": {"width": SIZE, "height": SIZE, "frames": 1,
                                                                   "value": mask_value}}
        prompt["lora"] = {"class_type": "VACELoRA", "inputs": {
            "vace_model": ["model", 0], "lora_name": "character.safetensors", "strength": 1.0,
            "context_strength": 1.0, "region": ["fill", 1]}}
        prompt["long"]["inputs"]["vace_model"] = ["lora", 0]
    return prompt


def test_region_lora_node(comfy):
    videos = {}
    for value in (None, 0.0, 1.0):
        entry = comfy.run(lora_prompt(value), timeout=600)
        assert_success(entry)
        videos[value] = state_of(comfy, entry)[1].video
    assert torch.equal(videos[0.0], videos[None])  # an empty region: no LoRA, bit for bit
    assert (videos[1.0] - videos[None]).abs().max() > 1e-3  # a region over everything: the LoRA acts
