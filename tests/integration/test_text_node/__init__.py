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


NODE_CLASS_MAPPINGS = {"VACETestTextEncode": VACETestTextEncode, "VACETestSigmas": VACETestSigmas,
                       "VACETestFill": VACETestFill}
NODE_DISPLAY_NAME_MAPPINGS = {"VACETestTextEncode": "VACE Test Text Encode (tests only)",
                              "VACETestSigmas": "VACE Test Sigmas (tests only)",
                              "VACETestFill": "VACE Test Fill (tests only)"}
