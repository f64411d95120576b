"""Test-only ComfyUI nodes. VACETestTextEncode stands in for CLIPLoader (umt5, type wan) + CLIPTextEncode;
VACETestCLIPLoader for CLIPLoader where a node takes the CLIP itself (Regional Prompts).

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


def features(text: str, width: int = TEXT_DIM) -> torch.Tensor:
    """Like ComfyUI's Wan encoder, prompts over 512 tokens are not truncated."""
    tokens = len(text.split()) + 1
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    real = torch.randn(tokens, width, generator=torch.Generator().manual_seed(seed)) * 0.2
    return torch.nn.functional.pad(real, (0, 0, 0, max(0, TEXT_LEN - tokens)))[None]


class VACETestTextEncode:
    CATEGORY = "testing"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"multiline": True, "default": ""})},
                "optional": {"width": ("INT", {"default": TEXT_DIM, "min": 1})}}  # another encoder's width

    def encode(self, text, width=TEXT_DIM):
        return ([[features(text, width), {}]],)


class VACETestFill:
    """IMAGE and MASK batches filled with any value (NaN, 200 for 0..255 pixels, 0.7 for a soft mask): what a
    faulty upstream node or API client can send."""

    CATEGORY = "testing"
    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "fill"

    @classmethod
    def INPUT_TYPES(cls):
        size = ("INT", {"default": 64, "min": 1})
        return {"required": {"width": size, "height": size, "frames": ("INT", {"default": 1, "min": 1}),
                             "value": ("FLOAT", {"default": 0.5})}}

    def fill(self, width, height, frames, value):
        return torch.full((frames, height, width, 3), value), torch.full((frames, height, width), value)


class TestClip:
    """The two methods of ComfyUI's CLIP that Regional Prompts uses, shaped as Wan's umT5 ones: tokenize ->
    {"umt5xxl": [[(id, weight), ...]]} (one id per word, the end token 1, pads 0 up to 512; no start token),
    encode_from_tokens -> (1, 512, 4096), zero after the end token. Features depend on the whole token list."""

    def tokenize(self, text):
        ids = [int.from_bytes(hashlib.sha256(w.encode()).digest()[:2], "little") + 2 for w in text.split()][:511]
        ids = ids + [1] + [0] * (TEXT_LEN - len(ids) - 1)
        return {"umt5xxl": [[(i, 1.0) for i in ids]]}

    def encode_from_tokens(self, tokens):
        ids = [t[0] for t in tokens["umt5xxl"][0] if t[0]]
        return features(" ".join(map(str, ids)))


class VACETestCLIPLoader:
    CATEGORY = "testing"
    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def load(self):
        return (TestClip(),)


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


class VACETestLoadedModels:
    """ComfyUI's loaded-models list (model_management.current_loaded_models) as the ui output "models": per model
    its class (an annotator's: the class of the module it holds), device and loaded bytes. need_bytes > 0 first
    asks model management for that much room on its device, the call load_models_gpu makes before loading a model
    on a GPU (a small-VRAM budget: everything that can go, goes), and lists the models before and after."""

    CATEGORY = "testing"
    RETURN_TYPES = ()
    FUNCTION = "list"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"need_bytes": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1e30})},
                "optional": {"images": ("IMAGE",), "latent": ("LATENT",)}}

    @classmethod
    def IS_CHANGED(cls, **_):
        return float("nan")  # never cached: the list changes between prompts

    def list(self, need_bytes, images=None, latent=None):
        import comfy.model_management as mm

        def listed():
            return [{"name": type(getattr(m.model.model, "net", m.model.model)).__name__, "device": str(m.device),
                     "loaded_bytes": m.model_loaded_memory()} for m in mm.current_loaded_models if m.model is not None]
        before = listed()
        if need_bytes > 0:
            mm.free_memory(need_bytes, mm.get_torch_device())
        return {"ui": {"before": before, "after": listed()}}


NODE_CLASS_MAPPINGS = {"VACETestLoadedModels": VACETestLoadedModels,
                       "VACETestTextEncode": VACETestTextEncode, "VACETestSigmas": VACETestSigmas,
                       "VACETestFill": VACETestFill, "VACETestCLIPLoader": VACETestCLIPLoader,
                       "VACETestSaveWeights": VACETestSaveWeights, "VACETestSaveConditioning": VACETestSaveConditioning}
NODE_DISPLAY_NAME_MAPPINGS = {"VACETestLoadedModels": "VACE Test Loaded Models (tests only)",
                              "VACETestTextEncode": "VACE Test Text Encode (tests only)",
                              "VACETestSigmas": "VACE Test Sigmas (tests only)",
                              "VACETestFill": "VACE Test Fill (tests only)",
                              "VACETestCLIPLoader": "VACE Test CLIP Loader (tests only)",
                              "VACETestSaveWeights": "VACE Test Save Weights (tests only)",
                              "VACETestSaveConditioning": "VACE Test Save Conditioning (tests only)"}

if "server" in sys.modules:  # inside ComfyUI (tests also import TestClip and features() outside it)
    from . import base_route, small_sam2  # noqa: F401 (base_route registers POST /vace_test/base)

    small_sam2.install()
