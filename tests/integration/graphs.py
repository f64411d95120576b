"""API-format graphs the real-server tests share: the small T2V prompt, the shipped example workflows made runnable
here (the test text node for umt5, sizes and steps shrunk for the CPU), and the success check.

Text: no real umt5-xxl text encoder exists here, so when an example workflow is converted to the API format its
CLIPLoader + CLIPTextEncode pair is replaced by the test-only node VACETestTextEncode (tests/integration/
test_text_node), which returns CONDITIONING shaped as ComfyUI's Wan encoder does. Sizes and steps are shrunk for
the CPU (64x64, 9 frames, 2 steps), the VAE runs in fp32 (bf16 convolutions crawl on a CPU), the depth annotator
uses its MiDaS backend with a tiny random DPT-hybrid folder, and the layout boxes / SAM2 clicks move inside the
small frame; everything else runs as shipped.
"""

import json

from .comfy_server import messages
from .fixtures import DIT_NAME, SAM2_NAME, VAE_NAME
from .workflow_api import to_api

H, W, FRAMES, STEPS = 64, 64, 9, 2
SHRINK = {"width": W, "height": H, "length": FRAMES}  # on VACE nodes (0 = "keep the input's" stays 0)
# bf16 (the VAE loader's default, right for GPUs) runs convolutions ~6x slower than fp32 on a CPU
PER_CLASS = {"VACESampler": {"steps": STEPS}, "VACEVAELoader": {"dtype": "fp32"}, "ImageFromBatch": {"length": 5},
             "VACELongVideoSampler": {"steps": STEPS},  # window 81 > 9 frames: one window (multi-window: its own test)
             "ImageScale": {"width": W, "height": H},  # end frames at the video's (shrunk) size
             "VACEDepthAnnotator": {"model": "dpt-hybrid-midas"},
             "VACESAM2Masks": {"points": "48,32", "checkpoint": SAM2_NAME},
             "VACELayoutAnnotator": {"start_box": "4,16,28,40", "end_box": "36,16,60,40"}}
# a loop needs two windows: the 9-frame run gets two 5-frame windows (one frame carried, one looped)
PER_EXAMPLE = {"vace_long_loop": {"VACELongVideoSampler": {"window": 5, "overlap": 1}}}


def with_test_text(api: dict) -> dict:
    """CLIPLoader + CLIPTextEncode -> VACETestTextEncode; a CLIPLoader other nodes take -> VACETestCLIPLoader
    (see the module docstring)."""
    for node in api.values():
        if node["class_type"] == "CLIPLoader":
            node["class_type"], node["inputs"] = "VACETestCLIPLoader", {}
    for node in api.values():
        if node["class_type"] == "CLIPTextEncode":
            node["class_type"] = "VACETestTextEncode"
            node["inputs"] = {"text": node["inputs"]["text"]}
    return api


def shrink(api: dict, sizes: dict = SHRINK) -> dict:
    """Sizes (`sizes` on VACE nodes) and steps shrunk for the CPU; a 0 ("keep the input's") stays 0."""
    for node in api.values():
        node_sizes = sizes if node["class_type"].startswith("VACE") else {}
        for name, value in {**node_sizes, **PER_CLASS.get(node["class_type"], {})}.items():
            if isinstance(node["inputs"].get(name), int | float | str) and node["inputs"][name]:
                node["inputs"][name] = value
    return api


def runnable(workflow: dict, info: dict, sizes: dict = SHRINK) -> dict:
    """A UI-format workflow as an API prompt that runs on the test server (test text node, shrunk)."""
    return shrink(with_test_text(to_api(workflow, info)), sizes)


def t2v_prompt(seed: int = 0, steps: int = 1) -> dict:
    """A small T2V graph in API format, written the way API users write them (unused streams left out)."""
    return {
        "model": {"class_type": "VACEModelLoader", "inputs": {
            "model_name": DIT_NAME, "base_model": "none (the file is a full VACE model)", "weight_dtype": "default",
            "compute_dtype": "auto", "attention": "auto", "block_swap": 0}},
        "vae": {"class_type": "VACEVAELoader", "inputs": {"vae_name": VAE_NAME, "dtype": "fp32"}},
        "pos": {"class_type": "VACETestTextEncode", "inputs": {"text": "a fox in the snow"}},
        "neg": {"class_type": "VACETestTextEncode", "inputs": {"text": "blurry"}},
        "vcu": {"class_type": "VACEBuildVCU", "inputs": {"width": W, "height": H, "length": FRAMES,
                                                          "reference_mode": "letterbox"}},
        "sample": {"class_type": "VACESampler", "inputs": {
            "vace_model": ["model", 0], "vace_vae": ["vae", 0], "positive": ["pos", 0], "negative": ["neg", 0],
            "vcu": ["vcu", 0], "strength": 1.0, "start": 0.0, "end": 1.0, "steps": steps, "cfg": 5.0, "shift": 16.0,
            "sampler": "unipc", "seed": seed, "offload_after": False}},
        "decode": {"class_type": "VACEDecode", "inputs": {
            "vace_vae": ["vae", 0], "samples": ["sample", 0], "tiling": "auto", "tile_size": 272, "tile_overlap": 64,
            "trim_latent": 0, "feather": 8}},
        "save": {"class_type": "SaveAnimatedWEBP", "inputs": {
            "images": ["decode", 0], "filename_prefix": f"t2v_{seed}", "fps": 16.0, "lossless": False,
            "quality": 80, "method": "fastest"}},
    }


def assert_success(entry: dict):
    """The /history entry finished successfully (else: the execution error, in the assertion message)."""
    events = messages(entry)
    assert entry["status"]["status_str"] == "success", json.dumps(events.get("execution_error", events))[:3000]
