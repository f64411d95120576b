"""Annotators under ComfyUI's model management, in a real server (issue 22): an annotator's weights are one of
ComfyUI's loaded models while it runs, stay listed (and counted) after, and go when model management needs the
room; the cached annotator object loads them again on its next run.

On this CPU machine ComfyUI's loader never frees memory on its own (it skips the CPU, and --lowvram is not allowed
with --cpu), so the small budget is simulated with the call its loader makes on a GPU before loading a model that
needs the room: model_management.free_memory (the test-only node VACETestLoadedModels, which also reports
ComfyUI's loaded-models list before and after).
"""

import json

import pytest

from tests.integration.comfy_server import messages, output_files
from tests.integration.fixtures import write_annotator_models, write_models
from tests.integration.graphs import t2v_prompt

H = W = 64
ALL_OF_IT = 1e18  # bytes: more room than any machine has, so everything that can be offloaded is


@pytest.fixture(scope="module")
def comfy(comfy_server, tmp_path_factory):
    base = tmp_path_factory.mktemp("annotator_memory")
    write_models(base)
    write_annotator_models(base)
    with comfy_server.serving(base) as server:
        yield server


def depth_prompt(need_bytes: float = 0.0) -> dict:
    return {
        "fill": {"class_type": "VACETestFill", "inputs": {"width": W, "height": H, "frames": 2, "value": 0.4}},
        "depth": {"class_type": "VACEDepthAnnotator", "inputs": {"frames": ["fill", 0], "model": "dpt-hybrid-midas"}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["depth", 0], "filename_prefix": "depth"}},
        "models": {"class_type": "VACETestLoadedModels", "inputs": {"images": ["depth", 0], "need_bytes": need_bytes}},
    }


def sampler_prompt(need_bytes: float) -> dict:
    """The API tests' small T2V graph up to its sampler, then the loaded-models list."""
    prompt = t2v_prompt(steps=1)
    del prompt["decode"], prompt["save"]
    return prompt | {"models": {"class_type": "VACETestLoadedModels",
                                "inputs": {"latent": ["sample", 0], "need_bytes": need_bytes}}}


def run(comfy, prompt: dict) -> dict:
    entry = comfy.run(prompt, timeout=300)
    assert entry["status"]["status_str"] == "success", json.dumps(messages(entry))[:3000]
    return entry


def listed(entry: dict, when: str) -> dict[str, int]:
    """ComfyUI's loaded models (class -> loaded bytes) as the test node saw them."""
    return {m["name"]: m["loaded_bytes"] for m in entry["outputs"]["models"][when]}


def test_an_annotator_is_a_loaded_model_offloaded_when_comfyui_needs_the_room(comfy):
    first = run(comfy, depth_prompt())
    after_depth = listed(first, "after")
    assert after_depth.get("DPTForDepthEstimation", 0) > 0, after_depth  # loaded through load_models_gpu, whole

    sampled = run(comfy, sampler_prompt(need_bytes=ALL_OF_IT))  # the sampler, then a model needing all the room
    before, after = listed(sampled, "before"), listed(sampled, "after")
    assert {"DPTForDepthEstimation", "VaceTransformer"} <= before.keys(), before
    assert after == {}, after  # every model, the annotator too, offloaded by ComfyUI's own free_memory

    again = run(comfy, depth_prompt())  # the cached annotator loads its weights again and gives the same frames
    assert listed(again, "after").get("DPTForDepthEstimation", 0) == after_depth["DPTForDepthEstimation"]
    first_file, again_file = (output_files(comfy.base_dir, e)[0] for e in (first, again))
    assert first_file.read_bytes() == again_file.read_bytes()
