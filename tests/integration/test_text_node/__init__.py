"""Test-only ComfyUI nodes. VACETestTextEncode stands in for CLIPLoader (umt5, type wan) + CLIPTextEncode.

No real umt5-xxl encoder (~6 GB) exists on a test machine, so the tests swap the text pair of each example
workflow for this node. It returns what ComfyUI's Wan text encoder returns in shape and layout: CONDITIONING
[[features (1, 512, 4096), {}]], one feature row per word (+ the end token), zeros after them (ComfyUI pads
umt5 tokens to 512 and zeroes the padded features). The values are deterministic in the prompt text.
"""

import hashlib
import sys
from pathlib import Path

import torch

TEXT_LEN, TEXT_DIM = 512, 4096


def features(text: str) -> torch.Tensor:
    tokens = min(len(text.split()) + 1, TEXT_LEN)
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    real = torch.randn(tokens, TEXT_DIM, generator=torch.Generator().manual_seed(seed)) * 0.2
    return torch.nn.functional.pad(real, (0, 0, 0, TEXT_LEN - tokens))[None]


class VACETestTextEncode:
    CATEGORY = "testing"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"multiline": True, "default": ""})}}

    def encode(self, text):
        return ([[features(text), {}]],)


class VACETestSigmas:
    """Our sampler's sigmas (the official Wan grid) as SIGMAS, so native SamplerCustom can run the same grid."""

    CATEGORY = "testing"
    RETURN_TYPES = ("SIGMAS",)
    FUNCTION = "sigmas"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"steps": ("INT", {"default": 4, "min": 1}), "shift": ("FLOAT", {"default": 5.0})}}

    def sigmas(self, steps, shift):
        sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository root, for vace_core
        from vace_core.sampling import flow_sigmas

        return (flow_sigmas(steps, shift, "wan").float(),)


def save_output(tensors: dict, name: str) -> dict:
    """Writes tensors to ComfyUI's output folder; the ui entry lets tests find the file in /history."""
    import folder_paths
    from safetensors.torch import save_file

    folder = Path(folder_paths.get_output_directory())
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().float().contiguous().cpu() for k, v in tensors.items()}, folder / f"{name}.safetensors")
    return {"ui": {"latents": [{"filename": f"{name}.safetensors", "subfolder": "", "type": "output"}]}}


class SaveNode:
    """An output node that writes tensors for the test to read (see save_output)."""

    CATEGORY = "testing"
    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True


class VACETestSaveWeights(SaveNode):
    """The DiT weights as ComfyUI runs them (its patches, e.g. LoRAs, applied on load), official keys: from a
    native MODEL or our VACE_MODEL."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"name": ("STRING", {"default": "weights"})},
                "optional": {"model": ("MODEL",), "vace_model": ("VACE_MODEL",)}}

    def save(self, name, model=None, vace_model=None):
        import comfy.model_management as mm

        patcher = model if model is not None else vace_model.patcher
        mm.load_models_gpu([patcher], force_full_load=True)
        weights = {k.removeprefix("diffusion_model."): v for k, v in patcher.model.state_dict().items()
                   if model is None or k.startswith("diffusion_model.")}
        return save_output(weights, name)


class VACETestSaveConditioning(SaveNode):
    """The VACE entries of a CONDITIONING (vace_frames / vace_mask per stream, strengths) and a LATENT's shape."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning": ("CONDITIONING",), "latent": ("LATENT",), "trim": ("INT", {"default": 0}),
                             "name": ("STRING", {"default": "conditioning"})}}

    def save(self, conditioning, latent, trim, name):
        values = conditioning[0][1]
        tensors = {f"{key}_{i}": t for key in ("vace_frames", "vace_mask") for i, t in enumerate(values[key])}
        tensors["vace_strength"] = torch.tensor(values["vace_strength"])
        tensors["latent_shape"] = torch.tensor(latent["samples"].shape)
        tensors["trim"] = torch.tensor(trim)
        return save_output(tensors, name)


NODE_CLASS_MAPPINGS = {"VACETestTextEncode": VACETestTextEncode, "VACETestSigmas": VACETestSigmas,
                       "VACETestSaveWeights": VACETestSaveWeights, "VACETestSaveConditioning": VACETestSaveConditioning}
NODE_DISPLAY_NAME_MAPPINGS = {"VACETestTextEncode": "VACE Test Text Encode (tests only)",
                              "VACETestSigmas": "VACE Test Sigmas (tests only)",
                              "VACETestSaveWeights": "VACE Test Save Weights (tests only)",
                              "VACETestSaveConditioning": "VACE Test Save Conditioning (tests only)"}
