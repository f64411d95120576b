"""Hardening through a real ComfyUI server (issue 9), one test per class of bad input, sent as API users and
faulty upstream nodes send them. One server for the module.

Classes: file names outside the model folders (absolute, '..', a link leading out, missing: one message);
unknown combo values for every combo of every pack node and non-finite floats for every float (both refused
at validation); NaN / out-of-range / soft-mask tensors; foreign latents and text features; a damaged
checkpoint and an image VAE; compositions and placements that would drop frames; requests too large for
memory; a prompt over 512 tokens (attended, with a warning).
"""

import json
import math
import re

import pytest
import torch
from safetensors.torch import save_file

from tests.integration.comfy_server import PromptRejected, messages
from tests.integration.fixtures import DIT_NAME, TINY_DIT, VAE_NAME, write_models
from vace_core.checkpoints import save_checkpoint
from vace_core.transformer import VaceTransformer

H = W = 32
FRAMES = 5
NAN_DIT = "wan2.1_vace_nan_fp16.safetensors"
IMAGE_VAE = "sdxl_vae.safetensors"
SAM2_FILE = "sam2.1_hiera_tiny.pt"  # never loaded here: the checks run before the model


@pytest.fixture(scope="module")
def comfy(comfy_server, tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy_base")
    write_models(base)
    state = VaceTransformer(TINY_DIT).state_dict()
    state["blocks.0.ffn.0.weight"][0, 0] = math.nan  # one damaged value in 100k+
    save_checkpoint(state, base / "models" / "diffusion_models" / NAN_DIT, "official", torch.float16)
    write_image_vae(base / "models" / "vae" / IMAGE_VAE)
    (base / "models" / "sam2").mkdir(parents=True)
    (base / "models" / "sam2" / SAM2_FILE).write_bytes(b"not loaded by these tests")
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.pt").write_bytes(b"a file outside the model folders")
    (base / "models" / "sam2" / "escape.pt").symlink_to(outside / "secret.pt")  # a link leading out
    write_bad_loras(base / "models" / "loras")
    with comfy_server.serving(base) as server:
        server.outside = outside
        yield server


TRUNCATED_LORA, PICKLED_LORA, NAN_LORA = "truncated_lora.safetensors", "evil_lora.pt", "nan_lora.safetensors"


class RunsCode:
    def __reduce__(self):
        return (print, ("this would run",))


def write_bad_loras(folder):
    """A download cut short, a pickle holding code, and a LoRA with a NaN: each refused, naming the file."""
    from tests.lora_files import comfy_lora

    folder.mkdir(parents=True, exist_ok=True)
    lora = comfy_lora({k: tuple(v.shape) for k, v in VaceTransformer(TINY_DIT).state_dict().items()})
    save_file(lora, folder / TRUNCATED_LORA)
    data = (folder / TRUNCATED_LORA).read_bytes()
    (folder / TRUNCATED_LORA).write_bytes(data[: len(data) // 2])
    lora["diffusion_model.blocks.0.self_attn.q.lora_up.weight"][0, 0] = math.nan
    save_file(lora, folder / NAN_LORA)
    torch.save({"diffusion_model.blocks.0.self_attn.q.lora_up.weight": RunsCode()}, folder / PICKLED_LORA)


def write_image_vae(path):
    """A real image VAE's layout (diffusers AutoencoderKL, as SD/SDXL VAEs are), tiny."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(block_out_channels=(8,), layers_per_block=1, latent_channels=4, norm_num_groups=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, path)


def pack_nodes(info: dict) -> list[str]:
    return sorted(n for n, spec in info.items() if spec["category"].startswith("VACE"))


def widget_defaults(spec: dict) -> dict:
    """Every widget input at its default (combos: the default or the first option)."""
    values = {}
    for group in ("required", "optional"):
        for name, (kind, *rest) in spec["input"].get(group, {}).items():
            options = rest[0] if rest else {}
            if kind == "COMBO":
                values[name] = options.get("default", (options.get("options") or [None])[0])
            elif "default" in options and kind in ("INT", "FLOAT", "STRING", "BOOLEAN"):
                values[name] = options["default"]
    return {k: v for k, v in values.items() if v is not None}


# a node's output type -> a node that takes it (and its input), down to an output node
SINKS = {"IMAGE": ("PreviewImage", "images"), "MASK": ("MaskPreview", "mask"),
         "VACE_VCU": ("VACEConceptDecouple", "vcu"),
         "LATENT": ("VACEDecode", "samples"), "VACE_MODEL": ("VACESampler", "vace_model"),
         "VACE_VAE": ("VACEDecode", "vace_vae"), "STRING": ("PreviewAny", "source"),
         "CONDITIONING": ("VACESampler", "positive"), "VACE_REGIONS": ("VACESampler", "regions"),
         "VACE_STEP_CACHE": ("VACESampler", "step_cache"), "VACE_LOW_NOISE_EXPERT": ("VACESampler", "low_noise_expert"),
         "VACE_GUIDANCE": ("VACESampler", "guidance")}


def reaching_an_output(info: dict, node: str, inputs: dict) -> dict:
    """A prompt holding `node` (widgets as given, links left out) wired down to an output node."""
    prompt, current, kind = {"x": {"class_type": node, "inputs": inputs}}, "x", info[node]["output"][0]
    while current == "x" or not info[prompt[current]["class_type"]].get("output_node"):
        sink, slot = SINKS[kind]
        nid = f"sink{len(prompt)}"
        prompt[nid] = {"class_type": sink, "inputs": {**widget_defaults(info[sink]), slot: [current, 0]}}
        current, kind = nid, (info[sink]["output"] or [None])[0]
    return prompt


def rejection(comfy, prompt: dict, node_id: str = "x") -> str:
    with pytest.raises(PromptRejected) as rejected:
        comfy.queue(prompt)
    return json.dumps(rejected.value.body["node_errors"].get(node_id, {}))


def error_of(comfy, prompt: dict) -> dict:
    entry = comfy.run(prompt, timeout=180)
    error = messages(entry).get("execution_error")
    assert error is not None, f"no error: {entry['status']}"
    assert comfy.alive()
    return error


def widgets_of_kind(info: dict, kind: str) -> list[tuple[str, str]]:
    return [(node, name) for node in pack_nodes(info) for group in ("required", "optional")
            for name, spec in info[node]["input"].get(group, {}).items() if spec[0] == kind]


# --- files: only names ComfyUI lists, one message for every bad name ------------------------------------------------

def test_file_names_outside_the_model_folders_get_one_message(comfy):
    secret = comfy.outside / "secret.pt"
    names = {"absolute, exists": str(secret), "absolute system file": "/etc/passwd",
             "climbs with ..": f"../../../../../../..{secret}", "link leading out": "escape.pt",
             "missing": "missing.pt"}
    texts = {}
    for case, name in names.items():
        inputs = {**widget_defaults(comfy.info["VACESAM2Masks"]), "checkpoint": name, "points": "4,4"}
        text = rejection(comfy, reaching_an_output(comfy.info, "VACESAM2Masks", inputs))
        assert "is not a file in ComfyUI's models/sam2 folder" in text, f"{case}: {text}"
        texts[case] = re.sub(r'"details": "[^"]*? - ', '', text).replace(json.dumps(name)[1:-1], "<name>")
    assert len(set(texts.values())) == 1, texts  # no oracle: nothing tells which of them exist
    assert "escape.pt" not in comfy.info["VACESAM2Masks"]["input"]["required"]["checkpoint"][1]["options"]


def test_loaders_refuse_a_missing_file_at_validation(comfy):
    for node, name in (("VACEModelLoader", "model_name"), ("VACEModelLoader", "base_model"),
                       ("VACEVAELoader", "vae_name")):
        inputs = {**widget_defaults(comfy.info[node]), name: "not_there.safetensors"}
        text = rejection(comfy, reaching_an_output(comfy.info, node, inputs))
        assert "'not_there.safetensors' is not a file in ComfyUI's models/" in text, text
        assert DIT_NAME in text or VAE_NAME in text  # the message lists what is there


# --- widgets: every combo and every float of every node --------------------------------------------------------------

def test_unknown_combo_values_are_refused_for_every_combo(comfy):
    combos = widgets_of_kind(comfy.info, "COMBO")
    assert len(combos) >= 15
    for node, name in combos:
        inputs = {**widget_defaults(comfy.info[node]), name: "no-such-choice"}
        text = rejection(comfy, reaching_an_output(comfy.info, node, inputs))
        assert "'no-such-choice'" in text and ("valid values" in text or "is not a file" in text), f"{node}.{name}"


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_floats_are_refused_for_every_float(comfy, value):
    floats = widgets_of_kind(comfy.info, "FLOAT")
    assert len(floats) >= 10
    for node, name in floats:
        inputs = {**widget_defaults(comfy.info[node]), name: value}
        text = rejection(comfy, reaching_an_output(comfy.info, node, inputs))
        assert f"{name}: {value} is not a finite number" in text, f"{node}.{name}: {text}"


def test_floats_are_still_held_to_their_range(comfy):
    inputs = {**widget_defaults(comfy.info["VACEOutpaint"]), "left": -3.0}
    assert "left: -3.0 is outside its range 0.0..4096.0" in rejection(
        comfy, reaching_an_output(comfy.info, "VACEOutpaint", inputs))


# --- tensors ------------------------------------------------------------------------------------------------------

def build_vcu(frames=None, masks=None, references=None, length=FRAMES, width=W, height=H) -> dict:
    inputs = {"width": width, "height": height, "length": length, "reference_mode": "letterbox"}
    inputs |= {k: v for k, v in (("frames", frames), ("masks", masks), ("references", references)) if v}
    return {"class_type": "VACEBuildVCU", "inputs": inputs}


def look_at(vcu_node: dict, **extra) -> dict:
    """A prompt that builds a VCU and shows it (Concept Decouple -> Preview Image)."""
    return {**extra, "vcu": vcu_node, "show": {"class_type": "VACEConceptDecouple", "inputs": {"vcu": ["vcu", 0]}},
            "preview": {"class_type": "PreviewImage", "inputs": {"images": ["show", 0]}}}


def fill(value, frames=FRAMES) -> dict:
    return {"class_type": "VACETestFill", "inputs": {"width": W, "height": H, "frames": frames, "value": value}}


SOLID_NAN = {"class_type": "SolidMask", "inputs": {"value": math.nan, "width": W, "height": H}}  # NaN passes min/max
TENSOR_CASES = {
    "NaN mask (native SolidMask)": (dict(frames=["px", 0], masks=["nan", 0]),
                                    {"px": fill(0.5), "nan": SOLID_NAN}, "masks: 1024 of 1024 mask values are NaN"),
    "NaN image": (dict(frames=["img", 0]), {"img": {"class_type": "MaskToImage", "inputs": {"mask": ["nan", 0]}},
                                             "nan": SOLID_NAN}, "frames: 3072 of 3072 pixel values are NaN"),
    "0..255 pixels": (dict(frames=["px", 0]), {"px": fill(200.0)}, "look like 0..255"),
    "negative pixels": (dict(frames=["px", 0]), {"px": fill(-0.5)}, "run from -0.5 to -0.5"),
    "soft mask": (dict(frames=["px", 0], masks=["soft", 1]), {"px": fill(0.5), "soft": fill(0.7)},
                  "values <= 0.5 keep the pixel"),
}


@pytest.mark.parametrize("case", list(TENSOR_CASES))
def test_bad_tensors_are_refused_with_what_is_wrong(comfy, case):
    links, extra, phrase = TENSOR_CASES[case]
    error = error_of(comfy, look_at(build_vcu(**links), **extra))
    assert error["node_type"] == "VACEBuildVCU" and phrase in error["exception_message"], error["exception_message"]


def decode(samples: dict, vcu: dict | None = None) -> dict:
    prompt = {"vae": {"class_type": "VACEVAELoader", "inputs": {"vae_name": VAE_NAME, "dtype": "fp32"}},
              "lat": samples,
              "dec": {"class_type": "VACEDecode", "inputs": {
                  "vace_vae": ["vae", 0], "samples": ["lat", 0], "tiling": "auto", "tile_size": 272,
                  "tile_overlap": 64, "trim_latent": 0, "feather": 0}},
              "preview": {"class_type": "PreviewImage", "inputs": {"images": ["dec", 0]}}}
    if vcu is not None:
        prompt["vcu"] = vcu
        prompt["dec"]["inputs"]["vcu"] = ["vcu", 0]
    return prompt


WAN_LATENT = {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": W, "height": H, "length": FRAMES,
                                                                  "batch_size": 1}}  # 16 channels, Wan-shaped


def test_foreign_and_nan_latents_and_mismatched_paste_back_are_refused(comfy):
    sd_latent = {"class_type": "EmptyLatentImage", "inputs": {"width": W, "height": H, "batch_size": 1}}
    assert "not a Wan 2.1 video latent" in error_of(comfy, decode(sd_latent))["exception_message"]
    nan_latent = decode({"class_type": "LatentMultiply", "inputs": {"samples": ["wan", 0], "multiplier": math.nan}})
    nan_latent["wan"] = WAN_LATENT  # LatentMultiply's min/max checks let NaN through
    assert "latent values are NaN or infinite" in error_of(comfy, nan_latent)["exception_message"]
    longer = build_vcu(length=FRAMES + 4)
    assert "cannot paste the VCU's kept pixels back" in error_of(comfy, decode(WAN_LATENT, longer))["exception_message"]


def sampler_prompt(text: str = "a fox", width: int = 4096, model: str = DIT_NAME) -> dict:
    return {
        "model": {"class_type": "VACEModelLoader", "inputs": {
            "model_name": model, "base_model": "none (the file is a full VACE model)", "weight_dtype": "default",
            "compute_dtype": "auto", "attention": "auto", "block_swap": 0}},
        "vae": {"class_type": "VACEVAELoader", "inputs": {"vae_name": VAE_NAME, "dtype": "fp32"}},
        "pos": {"class_type": "VACETestTextEncode", "inputs": {"text": text, "width": width}},
        "neg": {"class_type": "VACETestTextEncode", "inputs": {"text": "blurry"}},
        "vcu": build_vcu(),
        "sample": {"class_type": "VACESampler", "inputs": {
            "vace_model": ["model", 0], "vace_vae": ["vae", 0], "positive": ["pos", 0], "negative": ["neg", 0],
            "vcu": ["vcu", 0], "strength": 1.0, "start": 0.0, "end": 1.0, "steps": 1, "cfg": 5.0, "shift": 16.0,
            "sampler": "unipc", "seed": 0, "offload_after": False}},
        "dec": {"class_type": "VACEDecode", "inputs": {
            "vace_vae": ["vae", 0], "samples": ["sample", 0], "tiling": "auto", "tile_size": 272, "tile_overlap": 64,
            "trim_latent": 0, "feather": 0}},
        "preview": {"class_type": "PreviewImage", "inputs": {"images": ["dec", 0]}},
    }


def test_foreign_text_features_damaged_checkpoint_and_image_vae_are_named(comfy):
    error = error_of(comfy, sampler_prompt(width=768))  # e.g. an SD CLIP's features
    assert error["node_type"] == "VACESampler" and "Load CLIP, type wan" in error["exception_message"]
    # the damaged DiT loads (its NaN/inf check runs in the background) and the sampler stops before its first step;
    # run again (the loader's output cached) it is refused again, and the queue goes on with a sound model
    for _ in range(2):
        error = error_of(comfy, sampler_prompt(model=NAN_DIT))
        assert error["node_type"] == "VACESampler"
        assert "blocks.0.ffn.0.weight holds NaN or infinite values" in error["exception_message"]
    entry = comfy.run(sampler_prompt(), timeout=180)
    assert entry["status"]["status_str"] == "success", messages(entry).get("execution_error")
    vae = {"class_type": "VACEVAELoader", "inputs": {"vae_name": IMAGE_VAE, "dtype": "fp32"}}
    error = error_of(comfy, decode(WAN_LATENT) | {"vae": vae})
    assert error["node_type"] == "VACEVAELoader" and "is an image VAE" in error["exception_message"]


def test_a_prompt_over_512_tokens_is_attended_with_a_warning(comfy):
    entry = comfy.run(sampler_prompt(" ".join(["fox"] * 600)), timeout=180)
    assert entry["status"]["status_str"] == "success", messages(entry).get("execution_error")
    assert "a prompt has 601 tokens; the official model saw at most 512" in comfy.log_tail(200_000)


# --- nothing dropped silently ---------------------------------------------------------------------------------------

def placed(kind: str, images: dict, length: int = FRAMES, indices: str = "0, -1") -> dict:
    return look_at({"class_type": "VACEFramePlacement", "inputs": {
        "images": ["imgs", 0], "placement": kind, "width": W, "height": H, "length": length, "k": 2,
        "indices": indices}}, imgs=images)


DROPS = {
    "composing 9 + 5 frames": (
        look_at({"class_type": "VACEComposeVCU", "inputs": {"vcu_a": ["a", 0], "vcu_b": ["b", 0]}},
                a=build_vcu(length=9), b=build_vcu(length=5)), "cannot compose VCUs of 9 and 5"),
    "repeated indices": (placed("indices", fill(0.5, 2), indices="3, 3"), "repeat a position"),
    "first_last at length 1": (placed("first_last", fill(0.5, 2), length=1),
                               "land on the same position of a 1-frame video"),
    "a clip into 'first'": (placed("first", fill(0.5, 5)), "first takes 1 image"),
    "a video into references": (look_at(build_vcu(references=["clip", 0]), clip=fill(0.5, 9)),
                                "is a video wired into references"),
    "layout boxes outside the frame": ({
        "lay": {"class_type": "VACELayoutAnnotator", "inputs": {
            "start_box": "100,100,120,120", "end_box": "4,4,20,20", "width": W, "height": H, "length": FRAMES}},
        "preview": {"class_type": "PreviewImage", "inputs": {"images": ["lay", 0]}}}, "lies outside the 32x32 frame"),
    "an empty frame_range": ({"m": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": W, "height": H}},
                              "op": {"class_type": "VACECompositeMask", "inputs": {
                                  "mask_a": ["m", 0], "operation": "frame_range", "amount": 0, "start": 3, "end": 1}},
                              "preview": {"class_type": "MaskPreview", "inputs": {"mask": ["op", 0]}}},
                             "selects no frames"),
    "SAM2 points outside the frame": ({"px": fill(0.5, 1), "sam": {"class_type": "VACESAM2Masks", "inputs": {
        "frames": ["px", 0], "checkpoint": SAM2_FILE, "frame": 0, "points": "40,10", "negative_points": "",
        "box": ""}}, "preview": {"class_type": "MaskPreview", "inputs": {"mask": ["sam", 0]}}},
        "lie outside the 32x32 frame"),
}


@pytest.mark.parametrize("case", list(DROPS))
def test_what_would_drop_frames_is_refused(comfy, case):
    prompt, phrase = DROPS[case]
    assert phrase in error_of(comfy, prompt)["exception_message"]


# --- memory before work ---------------------------------------------------------------------------------------------

def test_a_request_too_large_for_memory_is_refused_before_work(comfy):
    entry = comfy.run(look_at(build_vcu(length=1025, width=4096, height=4096)))
    events = messages(entry)
    error = events["execution_error"]
    text = error["exception_message"]
    assert error["node_type"] == "VACEBuildVCU" and re.search(r"needs about \d+\.\d GiB of RAM, but \d+\.\d GiB", text)
    assert "fewer frames" in text
    seconds = (error["timestamp"] - events["execution_start"]["timestamp"]) / 1000
    assert seconds < 5  # refused up front, not after an allocator failure


# --- the newer features' bad inputs (issue 22) ----------------------------------------------------------------------

def with_lora(name: str) -> dict:
    prompt = sampler_prompt(width=4096)
    prompt["lora"] = {"class_type": "VACELoRA", "inputs": {"vace_model": ["model", 0], "lora_name": name,
                                                           "strength": 1.0, "context_strength": 1.0}}
    prompt["sample"]["inputs"]["vace_model"] = ["lora", 0]
    return prompt


@pytest.mark.parametrize("name,phrase", [
    (TRUNCATED_LORA, "The file is corrupt, incomplete (an interrupted download?)"),
    (PICKLED_LORA, "the pickle holds more than tensors (objects that run code when loaded)"),
    (NAN_LORA, f"the LoRA {NAN_LORA} holds NaN or infinite values (in "
               "diffusion_model.blocks.0.self_attn.q.lora_up.weight)"),
])
def test_damaged_unsafe_and_nan_loras_are_named(comfy, name, phrase):
    error = error_of(comfy, with_lora(name))
    assert error["node_type"] == "VACELoRA" and phrase in error["exception_message"], error["exception_message"]
    assert name in error["exception_message"] and "weights_only" not in error["exception_message"]


def regional(extra: dict | None = None, mask_value: float = 1.0) -> dict:
    """Regional Prompts (one region over a solid mask) shown through Preview Any."""
    inputs = {"clip": ["clip", 0], "prompt": "a fox and a cat", "prompt_1": "a fox", "mask_1": ["mask", 0],
              "background_prompt": "", "self_strength": 0.3, "cross_strength": 1.0, "end": 0.3,
              "context_blocks": False, "soft_edges": False} | (extra or {})
    return {"clip": {"class_type": "VACETestCLIPLoader", "inputs": {}},
            "mask": {"class_type": "SolidMask", "inputs": {"value": mask_value, "width": W, "height": H}},
            "x": {"class_type": "VACERegionalPrompts", "inputs": inputs},
            "show": {"class_type": "PreviewAny", "inputs": {"source": ["x", 0]}}}


def test_regions_beyond_the_fourth_are_refused_not_dropped(comfy):
    error = error_of(comfy, regional({"prompt_5": "a dog", "mask_5": ["mask", 0]}))
    assert error["node_type"] == "VACERegionalPrompts"
    assert error["exception_message"].startswith("mask_5, prompt_5: are not inputs of Regional Prompts, so they "
                                                 "would be ignored. Its inputs: clip, prompt, prompt_1, mask_1,")


@pytest.mark.parametrize("value,phrase", [
    (0.0, "region 1's mask covers nothing (it is black everywhere): that region would steer nothing"),
    (0.5, "mask_1: the mask is not binary (100.0% of its pixels lie between 0.1 and 0.9"),
])
def test_a_region_mask_that_steers_nothing_is_refused(comfy, value, phrase):
    error = error_of(comfy, regional(mask_value=value))
    assert error["node_type"] == "VACERegionalPrompts" and phrase in error["exception_message"], error


def test_save_job_refuses_a_regional_positive_without_its_regions(comfy):
    prompt = regional()
    del prompt["show"]
    prompt |= {"neg": {"class_type": "VACETestTextEncode", "inputs": {"text": "blurry"}}, "vcu": build_vcu(),
               "save": {"class_type": "VACESaveJob", "inputs": {
                   "positive": ["x", 0], "negative": ["neg", 0], "vcu": ["vcu", 0], "strength": 1.0, "start": 0.0,
                   "end": 1.0, "steps": 1, "cfg": 5.0, "shift": 16.0, "sampler": "unipc", "seed": 0,
                   "filename_prefix": "vace_jobs/regional"}}}
    error = error_of(comfy, prompt)
    assert error["node_type"] == "VACESaveJob" and error["exception_message"].startswith(
        "the positive prompt comes from Regional Prompts, but their regions are not connected: `run --job` would "
        "sample it without them. Connect Regional Prompts' regions output to this node's regions input")


def test_color_match_masks_of_another_size_are_named(comfy):
    prompt = {"px": fill(0.5), "small": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 16, "height": 8}},
              "x": {"class_type": "VACEColorMatch", "inputs": {
                  "images": ["px", 0], "anchor": ["px", 0], "method": "reinhard", "strength": 1.0,
                  "masks": ["small", 0]}},
              "preview": {"class_type": "PreviewImage", "inputs": {"images": ["x", 0]}}}
    error = error_of(comfy, prompt)
    assert error["node_type"] == "VACEColorMatch" and error["exception_message"].strip() == (
        "the masks are 16x8 but the images 32x32: give masks at the images' size (e.g. resize them with the images)")


def test_a_missing_dwpose_file_is_named_with_its_download(comfy):
    """The Missing Models dialog cannot see .onnx files (the workflows' notes carry their links): the node's error
    names the file, the folder and where to get it."""
    prompt = {"px": fill(0.5, 1), "x": {"class_type": "VACEPoseAnnotator", "inputs": {
        "frames": ["px", 0], "backend": "dwpose", "body": True, "face": True, "hands": False,
        "detector": "yolox_l.onnx", "estimator": "dw-ll_ucoco_384.onnx"}},
        "preview": {"class_type": "PreviewImage", "inputs": {"images": ["x", 0]}}}
    text = error_of(comfy, prompt)["exception_message"]
    assert "'yolox_l.onnx' is not a file in ComfyUI's models/annotators folder" in text
    assert "Download it from https://huggingface.co/yzd-v/DWPose" in text
