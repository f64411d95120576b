"""Regional Prompts: a prompt per masked region (VideoGrain's ST-Layout attention) for the VACE Sampler."""

import torch
from comfy_api.latest import io

from ..vace_core.errors import VaceError
from ..vace_core.regional import Regions, check_coverage, encode_text
from ..vace_core.settings import knobs
from .guard import BinaryMaskInput
from .inputs import widget
from .types import CATEGORY, RegionsType

REGIONS = 4
REGIONAL = "vace_regional"  # a CONDITIONING entry key: this text is the regional prompts' composed one
PAD = 0  # umT5's pad id (ComfyUI pads Wan prompts to 512 tokens with it)


def clip_encoder(clip):
    """ComfyUI's CLIP (Load CLIP, type wan) as text -> (token ids ending with EOS, features (L, 4096)).

    The ids come from clip.tokenize (umT5: no start token, the prompt's tokens, EOS, then pads), so a region's
    prompt can be found word for word inside the global prompt."""
    def encode(text: str):
        tokens = clip.tokenize(text)
        batches = next(iter(tokens.values()))
        if len(batches) != 1:
            raise VaceError("a regional prompt is longer than the text encoder's window: shorten it")
        ids = [int(t[0]) if not torch.is_tensor(t[0]) else -1 for t in batches[0]]
        while ids and ids[-1] == PAD:
            ids.pop()
        features = clip.encode_from_tokens(tokens)
        return ids, features.reshape(-1, features.shape[-1])[: len(ids)].float().cpu()
    return encode


def region_inputs(i: int):
    first = i == 1
    return [
        io.String.Input(f"prompt_{i}", multiline=True, default="", optional=not first,
                        tooltip=f"What region {i} shows. Best written word for word inside the global prompt "
                                "(e.g. 'a man in an Iron Man suit'): it then replaces those words' features."),
        BinaryMaskInput(f"mask_{i}", optional=not first,
                      tooltip=f"Where region {i} is (white), at the video's size: one mask for all frames or one "
                              "per frame (SAM2 Video Masks, Person Masks, Composite Mask, a loaded mask)."),
    ]


class RegionalPrompts(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VACERegionalPrompts", display_name="Regional Prompts", category=CATEGORY,
            description="A prompt per masked region (VideoGrain's space-time layout attention): cross-attention "
                        "sends each region's prompt to its own pixels and self-attention keeps the regions apart, "
                        "during the first steps. Connect `positive` to the sampler's positive and `regions` to "
                        "its regions input.",
            inputs=[
                io.Clip.Input("clip", tooltip="The Wan text encoder (Load CLIP, type wan): every prompt is encoded "
                                              "on its own, and its tokens located in the global prompt."),
                io.String.Input("prompt", multiline=True, default="",
                                tooltip="The global prompt: the whole scene, ideally naming each region's prompt "
                                        "word for word."),
                *[inp for i in range(1, REGIONS + 1) for inp in region_inputs(i)],
                io.String.Input("background_prompt", multiline=True, default="",
                                tooltip="Optional: what the area outside every mask shows (e.g. 'a sunny beach'). "
                                        "Empty: the background is not steered to a prompt."),
                *(widget(spec) for spec in knobs(Regions).values()),
            ],
            outputs=[io.Conditioning.Output(display_name="positive"), RegionsType.Output(display_name="regions")],
        )

    @classmethod
    def execute(cls, clip, prompt, self_strength, cross_strength, end, context_blocks, soft_edges,
                background_prompt="", **regions) -> io.NodeOutput:
        prompts, masks = [], []
        for i in range(1, REGIONS + 1):
            text, mask = (regions.get(f"prompt_{i}") or "").strip(), regions.get(f"mask_{i}")
            if (mask is None) != (not text):
                raise VaceError(f"region {i} has a {'mask' if text == '' else 'prompt'} but no "
                                f"{'prompt' if text == '' else 'mask'}: give both, or neither")
            if mask is not None:
                prompts.append(text)
                masks.append(mask)
        if not prompts:
            raise VaceError("Regional Prompts needs at least one region: a prompt and a mask")
        if not prompt.strip():
            raise VaceError("the global prompt is empty: describe the whole scene (naming each region's prompt)")
        text = encode_text(clip_encoder(clip), prompt, prompts, background_prompt or "")
        check_coverage(masks)
        result = Regions(text, masks, self_strength=self_strength, cross_strength=cross_strength, end=end,
                         context_blocks=context_blocks, soft_edges=soft_edges)
        # the marker lets Save VACE Job see that this positive needs its regions (a job file does not carry them)
        return io.NodeOutput([[text.features[None], {REGIONAL: True}]], result)


NODES = [RegionalPrompts]
