"""The pack inside a real ComfyUI server, driven over HTTP as the frontend and API users drive it.

The session's one server (tests/conftest.py) serves this module's base directory: tiny random checkpoints under
the real file names (wan2.1_vace_1.3B_fp16.safetensors, wan_2.1_vae.safetensors), tiny annotator weights and
small inputs made from skimage photos. The example workflows run as tests/integration/graphs.py makes them
runnable here (the test text node for umt5; 64x64, 9 frames, 2 steps). Workflows whose annotator needs a package
the runtime lacks (onnxruntime for pose, sam2 for SAM2) skip, saying so, after the pack's requirements were
installed into the runtime (an error under CI=true).
"""

import json
import re
import time
from pathlib import Path

import pytest

from tests.integration.comfy_server import PromptRejected, messages, output_files, runtime_has
from tests.integration.examples import EXAMPLES, EXAMPLES_DIR, LISTABLE, build, example_path, file_name
from tests.integration.fixtures import DIT_NAME, EXPERT_NAMES, MODULE_NAME, VAE_NAME, write_base
from tests.integration.graphs import FRAMES, PER_EXAMPLE, H, W, assert_success, runnable, t2v_prompt
from vace_core.video_io import read_video

PACK = Path(__file__).resolve().parents[1]
NEEDS = {"vace_pose": "onnxruntime", "vace_animate_anything": "onnxruntime", "vace_inpaint_sam2": "sam2",
         "vace_long_pose": "onnxruntime", "vace_regional_boxing_cats": "sam2", "vace_regional_pose": "onnxruntime"}


@pytest.fixture(scope="module")
def comfy(comfy_server, tmp_path_factory):
    base = write_base(tmp_path_factory.mktemp("comfy_base"), H, W + 32, FRAMES)  # wider: Build VCU centre-crops
    with comfy_server.serving(base) as server:
        yield server


def pack_node_ids() -> set[str]:
    """Every node_id the pack's node modules declare."""
    return {m for path in (PACK / "nodes").glob("*.py") for m in re.findall(r'node_id="(\w+)"', path.read_text())}


def test_object_info_lists_every_node_with_inputs(comfy):
    ids = pack_node_ids()
    assert len(ids) >= 10
    missing = ids - set(comfy.info)
    assert not missing, f"nodes that failed to register (see the server log):\n{missing}\n{comfy.log_tail()}"
    for node_id in ids:
        info = comfy.info[node_id]
        assert info["category"].startswith("VACE"), node_id
        assert info["description"], f"{node_id} has no description"
        assert info["input"]["required"] or info["input"].get("optional"), f"{node_id} lists no inputs"
        assert info["output"], f"{node_id} lists no outputs"
        for kind, group in info["input"].items():
            if kind == "hidden":  # filled by ComfyUI (output nodes get the prompt), never shown
                continue
            for name, spec in group.items():
                options = spec[1] if len(spec) > 1 else {}
                assert options.get("tooltip"), f"{node_id}.{name} has no tooltip"


def test_example_workflows_are_current(comfy):
    """The shipped JSON equals a fresh build from today's node definitions (else: regenerate them with
    `.venv/bin/python -m tests.integration.examples`); every task has its file."""
    shipped = {p.stem for p in EXAMPLES_DIR.glob("*.json")}
    assert shipped == {file_name(name) for name in EXAMPLES}
    for name in EXAMPLES:
        shipped_json = json.loads(example_path(name).read_text())
        assert shipped_json == json.loads(json.dumps(build(name, comfy.info))), f"{file_name(name)}.json is stale"


def test_example_workflows_carry_models_and_notes():
    assert len(list(EXAMPLES_DIR.glob("*.json"))) == len(EXAMPLES)
    for name in EXAMPLES:
        path = example_path(name)
        nodes = json.loads(path.read_text())["nodes"]
        models = {m["name"]: m for n in nodes for m in n["properties"].get("models", [])}
        dit = set(EXPERT_NAMES) if name == "vace_wan22_two_experts" else {DIT_NAME}  # Wan2.2: both experts
        assert {*dit, VAE_NAME, "umt5_xxl_fp8_e4m3fn_scaled.safetensors"} <= set(models), path.name
        assert all(m["url"].startswith("https://") and m["url"].endswith(name) and m["directory"]
                   for name, m in models.items())
        assert all(name.endswith(LISTABLE) for name in models), path.name  # what the Missing Models check can see
        notes = [n["widgets_values"][0] for n in nodes if n["type"] == "MarkdownNote"]
        assert len(notes) >= 2 and all(len(t) > 80 for t in notes), path.name


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_workflow_runs(comfy, name):
    if name in NEEDS and not runtime_has(comfy.runtime, NEEDS[name]):
        pytest.skip(f"{name} needs `{NEEDS[name]}` in the ComfyUI runtime ({comfy.runtime.python} -m pip install "
                    f"{NEEDS[name]}); it is not installed there")
    workflow = json.loads(example_path(name).read_text())
    api = runnable(workflow, comfy.info)
    for node in api.values():
        node["inputs"].update(PER_EXAMPLE.get(name, {}).get(node["class_type"], {}))
    entry = comfy.run(api, timeout=300)
    assert_success(entry)
    [video] = output_files(comfy.base_dir, entry)
    frames, fps = read_video(video)
    assert frames.shape[0] == FRAMES and fps == 16
    assert frames.shape[1:3] == ((H, 144) if name == "vace_outpaint" else (H, W))  # outpaint: 96 + 25% + 25%
    assert frames.std() > 0.01  # a real picture, not one flat colour


def bad_model(prompt: dict) -> dict:
    prompt["model"]["inputs"]["model_name"] = "wan2.1_vace_1.3B_missing.safetensors"
    return prompt


def module_without_base(prompt: dict) -> dict:
    prompt["model"]["inputs"]["model_name"] = MODULE_NAME
    return prompt


def missing_vae(prompt: dict) -> dict:
    prompt["vae"]["inputs"]["vae_name"] = "missing_vae.safetensors"
    return prompt


def too_small(prompt: dict) -> dict:
    prompt["vcu"]["inputs"]["width"] = 8
    return prompt


def mismatched_streams(prompt: dict) -> dict:
    prompt["vcu2"] = {"class_type": "VACEBuildVCU", "inputs": {"width": W, "height": H, "length": FRAMES + 4,
                                                               "reference_mode": "letterbox"}}
    prompt["sample"]["inputs"]["vcu_2"] = ["vcu2", 0]
    return prompt


def inpaint(masks: dict, frames: int = FRAMES):
    def edit(prompt: dict) -> dict:
        prompt["clip"] = {"class_type": "EmptyImage", "inputs": {"width": W, "height": H, "batch_size": frames,
                                                                 "color": 0x808080}}
        prompt["masks"] = masks
        prompt["vcu"]["inputs"].update({"frames": ["clip", 0], "masks": ["masks", 0]})
        return prompt
    return edit


def regional(wire_positive: bool = True, **inputs):
    """Regional Prompts (one region over the left half) on the T2V graph, through the test CLIP."""
    def edit(prompt: dict) -> dict:
        prompt["tclip"] = {"class_type": "VACETestCLIPLoader", "inputs": {}}
        prompt["left"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": W // 2, "height": H}}
        prompt["half"] = {"class_type": "MaskComposite", "inputs": {
            "destination": ["empty", 0], "source": ["left", 0], "x": 0, "y": 0, "operation": "add"}}
        prompt["empty"] = {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": W, "height": H}}
        prompt["regions"] = {"class_type": "VACERegionalPrompts", "inputs": {
            "clip": ["tclip", 0], "prompt": "a fox and a hare in the snow", "prompt_1": "a fox", "mask_1": ["half", 0],
            "background_prompt": "the snow", "self_strength": 0.3, "cross_strength": 1.0, "end": 1.0,
            "context_blocks": True, "soft_edges": False, **inputs}}
        prompt["sample"]["inputs"]["regions"] = ["regions", 1]
        if wire_positive:
            prompt["sample"]["inputs"]["positive"] = ["regions", 0]
        return prompt
    return edit


def test_regional_prompts_run_through_the_api(comfy):
    assert_success(comfy.run(regional()(t2v_prompt(seed=11)), timeout=120))


EMPTY_MASK = {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": W, "height": H}}
HALF_SIZE_MASKS = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": W // 2, "height": H // 2}}
# (graph edit, where it fails: "validation" (/prompt refuses it) or the node type, the exception, a phrase of
# the message). Missing files are refused at validation, naming the file and the folder (nodes/files.py).
BAD_INPUTS = {
    "missing model file": (bad_model, "validation", None,
                           "'wan2.1_vace_1.3B_missing.safetensors' is not a file in ComfyUI's models/diffusion_models"),
    "missing vae file": (missing_vae, "validation", None,
                         "'missing_vae.safetensors' is not a file in ComfyUI's models/vae"),
    "size below the minimum": (too_small, "validation", None, "Value 8 smaller than min of 16"),
    "vace module with no base": (module_without_base, "VACEModelLoader", "VaceError", "T2V base model"),
    "streams of different lengths": (mismatched_streams, "VACESampler", "VaceError", "different latents"),
    "masks at another size": (inpaint(HALF_SIZE_MASKS), "VACEBuildVCU", "VaceError", "disagree with the video"),
    "fewer frames than the length": (inpaint({"class_type": "SolidMask", "inputs": {
        "value": 1.0, "width": W, "height": H}}, frames=3), "VACEBuildVCU", "VaceError", "has 3 frames but 9"),
    "empty masks": (inpaint(EMPTY_MASK), "VACEBuildVCU", "VaceError", "masks are empty"),
    "regional positive not wired": (regional(wire_positive=False), "VACESampler", "VaceError",
                                    "not the regional prompts' text"),
    "region mask without a prompt": (regional(prompt_1=""), "VACERegionalPrompts", "VaceError",
                                     "has a mask but no prompt"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gives_a_clear_error_and_the_server_goes_on(comfy, case):
    edit, where, exception, phrase = BAD_INPUTS[case]
    if where == "validation":
        with pytest.raises(PromptRejected) as rejected:
            comfy.queue(edit(t2v_prompt()))
        text = json.dumps(rejected.value.body["node_errors"])
    else:
        entry = comfy.run(edit(t2v_prompt()), timeout=120)
        error = messages(entry).get("execution_error")
        assert error is not None, f"{case}: no error; status {entry['status']}"
        assert (error["node_type"], error["exception_type"].split(".")[-1]) == (where, exception)
        text = error["exception_message"]
    assert phrase in text, f"{case}: {text}"
    assert comfy.alive()
    assert_success(comfy.run(t2v_prompt(seed=len(case)), timeout=120))  # the next prompt runs


def test_interrupt_stops_a_long_run(comfy):
    long = t2v_prompt(seed=7, steps=200)
    prompt_id = comfy.queue(long)
    deadline = time.monotonic() + 60
    while not comfy.get("/queue")["queue_running"] and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(3)  # well inside sampling (loaders and encoding take well under this)
    interrupted_at = time.monotonic()
    comfy.interrupt()
    entry = comfy.wait(prompt_id, timeout=60)
    stopped_after = time.monotonic() - interrupted_at
    events = messages(entry)
    assert "execution_interrupted" in events, entry["status"]
    assert events["execution_interrupted"]["node_type"] == "VACESampler"
    assert stopped_after < 10, f"took {stopped_after:.1f} s to stop"
    assert_success(comfy.run(t2v_prompt(seed=8), timeout=120))


REGIONAL_POSITIVE = {  # Regional Prompts: one region on the left half (its regions output is ["pos", 1])
    "clip": {"class_type": "VACETestCLIPLoader", "inputs": {}},
    "mask": {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": W, "height": H}},
    "left": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": W // 2, "height": H}},
    "region": {"class_type": "MaskComposite", "inputs": {"destination": ["mask", 0], "source": ["left", 0], "x": 0,
                                                          "y": 0, "operation": "add"}},
    "pos": {"class_type": "VACERegionalPrompts", "inputs": {
        "clip": ["clip", 0], "prompt": "a fox and a cat in the snow", "prompt_1": "a fox", "mask_1": ["region", 0],
        "background_prompt": "snow", "self_strength": 1.0, "cross_strength": 2.0, "end": 1.0,
        "context_blocks": True, "soft_edges": False}}}


@pytest.mark.parametrize("regional", [False, True], ids=["plain", "regional"])
def test_saved_job_samples_outside_the_server_like_the_sampler(comfy, regional):
    """Save VACE Job beside the VACE Sampler in one prompt: sampling the file with vace_core (what
    `torchrun ... run --job` does) gives the server's video (lossless WEBP: exact pixels). With Regional Prompts
    (their regions on both nodes) the job carries the regions: its run is the server's regional run."""
    import torch

    from vace_core.checkpoints import load_vace_model
    from vace_core.job import load_job, run_job
    from vace_core.vae import load_vae
    from vace_core.vcu import to_images

    prompt = t2v_prompt(seed=5, steps=2)
    prompt["save"]["inputs"]["lossless"] = True
    sample = prompt["sample"]["inputs"]
    if regional:
        prompt |= REGIONAL_POSITIVE
        sample["regions"] = ["pos", 1]
    prompt["job"] = {"class_type": "VACESaveJob", "inputs": {
        **{k: v for k, v in sample.items() if k not in ("vace_model", "vace_vae", "offload_after")},
        "filename_prefix": "vace_jobs/t2v"}}
    entry = comfy.run(prompt, timeout=180)
    assert_success(entry)
    files = output_files(comfy.base_dir, entry)
    [job_file] = [f for f in files if f.suffix == ".safetensors"]
    [webp] = [f for f in files if f.suffix == ".webp"]
    assert job_file.parent.name == "vace_jobs"
    job = load_job(job_file)
    assert job.settings.steps == 2 and job.settings.seed == 5 and job.positive.shape[-1] == 4096
    if regional:
        assert job.regions is not None and job.regions.masks.shape == (1, 1, H, W)
        assert job.regions.masks[0, 0, :, : W // 2].eq(1).all() and job.regions.masks[0, 0, :, W // 2:].eq(0).all()
        assert (job.regions.self_strength, job.regions.cross_strength, job.regions.context_blocks) == (1.0, 2.0, True)
    else:
        assert job.regions is None and job.positive.shape == (1, 512, 4096)
    models = comfy.base_dir / "models"
    model = load_vace_model(models / "diffusion_models" / DIT_NAME, device="cpu")
    vae = load_vae(models / "vae" / VAE_NAME, dtype=torch.float32)
    with torch.no_grad():
        video = to_images(run_job(job, model, vae, None, feather=8, tiling="auto"))
    torch.testing.assert_close(video, read_video(webp)[0], atol=1.5 / 255, rtol=0)
