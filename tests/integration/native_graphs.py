"""ComfyUI graphs (API format) for our VACE Sampler and for native WanVaceToVideo + KSampler on the same files
and inputs: used by tests/test_comfy_native_parity.py and benchmarks/bench_comfy_native.py."""

import torch
from safetensors.torch import load_file

from .comfy_server import ComfyServer, messages, output_files
from .examples import CLIP, MASK, REFERENCE
from .fixtures import DIT_NAME, VAE_NAME

H = W = 64
FRAMES, SHIFT, CFG = 9, 5.0, 5.0


def shared() -> dict:
    """Text, the clip, per-frame masks (the mask image repeated) and the reference, with native nodes."""
    return {
        "pos": {"class_type": "VACETestTextEncode", "inputs": {"text": "a cup of coffee in front of an astronaut"}},
        "neg": {"class_type": "VACETestTextEncode", "inputs": {"text": "blurry, static"}},
        "video": {"class_type": "LoadVideo", "inputs": {"file": CLIP}},
        "frames": {"class_type": "GetVideoComponents", "inputs": {"video": ["video", 0]}},
        "mask": {"class_type": "LoadImageMask", "inputs": {"image": MASK, "channel": "red"}},
        "mask_image": {"class_type": "MaskToImage", "inputs": {"mask": ["mask", 0]}},
        "mask_images": {"class_type": "RepeatImageBatch", "inputs": {"image": ["mask_image", 0], "amount": FRAMES}},
        "masks": {"class_type": "ImageToMask", "inputs": {"image": ["mask_images", 0], "channel": "red"}},
        "ref": {"class_type": "LoadImage", "inputs": {"image": REFERENCE}},
    }


def ours(steps: int, seed: int, shift: float = SHIFT) -> dict:
    return {**shared(),
            "model": {"class_type": "VACEModelLoader", "inputs": {
                "model_name": DIT_NAME, "base_model": "none (the file is a full VACE model)", "weight_dtype": "default",
                "compute_dtype": "fp32", "attention": "sdpa", "block_swap": 0}},
            "vae": {"class_type": "VACEVAELoader", "inputs": {"vae_name": VAE_NAME, "dtype": "fp32"}},
            "vcu": {"class_type": "VACEBuildVCU", "inputs": {
                "width": W, "height": H, "length": FRAMES, "reference_mode": "letterbox", "frames": ["frames", 0],
                "masks": ["masks", 0], "references": ["ref", 0]}},
            "sample": {"class_type": "VACESampler", "inputs": {
                "vace_model": ["model", 0], "vace_vae": ["vae", 0], "positive": ["pos", 0], "negative": ["neg", 0],
                "vcu": ["vcu", 0], "strength": 1.0, "start": 0.0, "end": 1.0, "steps": steps, "cfg": CFG,
                "shift": shift, "sampler": "euler", "seed": seed, "offload_after": False}},
            "save": {"class_type": "SaveLatent", "inputs": {"samples": ["sample", 0], "filename_prefix": "ours"}}}


def native(steps: int, seed: int, shift: float = SHIFT) -> dict:
    return {**shared(),
            "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": DIT_NAME, "weight_dtype": "default"}},
            "shifted": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["unet", 0], "shift": shift}},
            "vae": {"class_type": "VAELoader", "inputs": {"vae_name": VAE_NAME}},
            "vace": {"class_type": "WanVaceToVideo", "inputs": {
                "positive": ["pos", 0], "negative": ["neg", 0], "vae": ["vae", 0], "width": W, "height": H,
                "length": FRAMES, "batch_size": 1, "strength": 1.0, "control_video": ["frames", 0],
                "control_masks": ["masks", 0], "reference_image": ["ref", 0]}},
            "sample": {"class_type": "KSampler", "inputs": {
                "model": ["shifted", 0], "seed": seed, "steps": steps, "cfg": CFG, "sampler_name": "euler",
                "scheduler": "simple", "positive": ["vace", 0], "negative": ["vace", 1], "latent_image": ["vace", 2],
                "denoise": 1.0}},
            "trim": {"class_type": "TrimVideoLatent", "inputs": {"samples": ["sample", 0], "trim_amount": ["vace", 3]}},
            "save": {"class_type": "SaveLatent", "inputs": {"samples": ["trim", 0], "filename_prefix": "native"}}}


def native_same_sigmas(steps: int, seed: int, shift: float) -> dict:
    """Native conditioning and model through SamplerCustom on our sigma grid (test-only VACETestSigmas)."""
    graph = native(steps, seed, shift)
    graph["sigmas"] = {"class_type": "VACETestSigmas", "inputs": {"steps": steps, "shift": shift}}
    graph["euler"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}}
    graph["sample"] = {"class_type": "SamplerCustom", "inputs": {
        "model": ["shifted", 0], "add_noise": True, "noise_seed": seed, "cfg": CFG, "positive": ["vace", 0],
        "negative": ["vace", 1], "sampler": ["euler", 0], "sigmas": ["sigmas", 0], "latent_image": ["vace", 2]}}
    return graph


def run_latent(comfy: ComfyServer, prompt: dict) -> tuple[torch.Tensor, float]:
    """(the saved LATENT, the sampler node's share of the run in seconds: the prompt's run time, with every
    other node cached from the previous prompt of the same graph)."""
    entry = comfy.run(prompt, timeout=600)
    assert entry["status"]["status_str"] == "success", messages(entry).get("execution_error")
    events = messages(entry)
    seconds = (events["execution_success"]["timestamp"] - events["execution_start"]["timestamp"]) / 1000
    [path] = output_files(comfy.base_dir, entry)
    return load_file(path)["latent_tensor"], seconds
