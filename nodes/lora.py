"""VACE LoRA: a LoRA from models/loras on the VACE_MODEL, as ComfyUI ModelPatcher patches.

The weights are not copied: ComfyUI applies the patches when it loads the model (and on the fly, per layer,
when it streams weights in low-VRAM mode), so fp8 storage, offloading and unloading keep working, and the
unpatched model stays shared with every other branch of the graph. vace_core.lora resolves the file's key
layout and refuses LoRAs of another family or size; ComfyUI's own weight adapters (LoRA, LoHa, LoKr, diff...)
do the math, as its native LoRA loaders do.
"""

import dataclasses
import logging

import comfy.lora
from comfy.patcher_extension import CallbacksMP
from comfy_api.latest import io

from ..vace_core.errors import VaceError
from ..vace_core.lora import CONTEXT_PREFIXES, plan_lora
from ..vace_core.lora.apply import param_shapes, read_lora
from ..vace_core.lora.region import region_lora
from .files import FileInput, resolve
from .types import CATEGORY, VaceModel

log = logging.getLogger("vace")


def non_leaf_params(model) -> set[str]:
    """Parameters held by modules that also have children (the blocks' and the head's modulation tables)."""
    return {f"{name}.{param}" if name else param for name, module in model.named_modules()
            if next(module.children(), None) is not None for param, _ in module.named_parameters(recurse=False)}


def patch_non_leaf(patcher, device_to, *_):
    """ON_LOAD: ComfyUI's loader patches only the parameters of leaf modules (it skips the others, native Wan
    models included), so a LoRA's modulation deltas (.diff) would be dropped silently; patch them here. They are
    backed up like every patched weight, so unloading restores them."""
    for key in non_leaf_params(patcher.model) & patcher.patches.keys():
        if key not in patcher.backup:
            patcher.patch_weight_to_device(key, device_to)


def with_lora(patcher, lora: dict, name: str, strength: float, context_strength: float):
    """A clone of a VACE ModelPatcher with a LoRA's patches (main blocks and the rest at `strength`, context
    blocks at `context_strength`) -> (the clone, the report). The one entry point for applying a LoRA in the
    nodes (e.g. per expert of a two-expert model)."""
    plan = plan_lora(lora, param_shapes(patcher.model), name)
    patches = comfy.lora.load_lora(plan.weights, plan.targets, log_missing=False)
    context = {k: v for k, v in patches.items() if k.startswith(CONTEXT_PREFIXES)}
    patched = patcher.clone()
    patched.add_patches({k: v for k, v in patches.items() if k not in context}, strength)
    patched.add_patches(context, context_strength)
    patched.remove_callbacks_with_key(CallbacksMP.ON_LOAD, "vace_lora")  # once per stack of LoRAs
    patched.add_callback_with_key(CallbacksMP.ON_LOAD, "vace_lora", patch_non_leaf)
    return patched, plan.report()


def with_region_lora(patcher, lora: dict, name: str, strength: float, context_strength: float, region):
    """A clone of a VACE ModelPatcher whose sampling applies the LoRA only to the tokens of `region` (a MASK or a
    Regional Prompts index): an object patch `region_loras` (ComfyUI sets it on the model when it loads this
    clone and restores it after), applied per token by the sampler (vace_core.lora.region); no weight changes."""
    scoped = region_lora(patcher.model, lora, strength, context_strength, region, name)
    patched = patcher.clone()
    patched.add_object_patch("region_loras", (*patched.get_model_object("region_loras"), scoped))
    return patched, scoped.plan.report() + f"; confined to {describe(region)}"


def describe(region) -> str:
    return f"Regional Prompts region {region}" if isinstance(region, int) else "a mask"


class VaceLora(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VACELoRA", display_name="VACE LoRA", category=CATEGORY,
            description="Applies a Wan2.1 LoRA (style, subject, or a speed LoRA such as CausVid / lightx2v) to the "
                        "VACE model. Chain several for a stack. Reads ComfyUI, kohya, diffusers/PEFT and LyCORIS "
                        "files; keys that do not apply are listed in the log.",
            inputs=[
                VaceModel.Input("vace_model", tooltip="From Load VACE Model (or another VACE LoRA)."),
                FileInput("lora_name", "loras",
                          tooltip="A Wan2.1 LoRA from models/loras (T2V LoRAs work on VACE; I2V-only image "
                                  "layers are skipped)."),
                io.Float.Input("strength", default=1.0, min=-100.0, max=100.0, step=0.01,
                               tooltip="How strongly the LoRA changes the main blocks. Speed LoRAs: see the "
                                       "README's presets (e.g. CausVid 0.3 at 12 steps, lightx2v 1.0)."),
                io.Float.Input("context_strength", default=1.0, min=-100.0, max=100.0, step=0.01,
                               tooltip="How strongly it changes VACE's context blocks, when it has layers there "
                                       "(most Wan LoRAs have none). 0 leaves the context blocks as they are."),
                io.Mask.Input("region", optional=True,
                              tooltip="Optional: apply the LoRA only inside this mask (white), at the video's size, "
                                      "one mask for all frames or one per frame: e.g. a character LoRA on its "
                                      "character, so two character LoRAs coexist. Not with region_index."),
                io.Int.Input("region_index", default=0, min=0, max=4, optional=True,
                             tooltip="Optional: apply the LoRA only inside region N of the Regional Prompts "
                                     "connected to the sampler (1-4). 0: no region (the whole model, or `region`)."),
            ],
            outputs=[VaceModel.Output(display_name="vace_model")],
        )

    @classmethod
    def execute(cls, vace_model, lora_name, strength, context_strength, region=None,
                region_index=0) -> io.NodeOutput:
        if region is not None and region_index:
            raise VaceError("VACE LoRA: give either a region mask or a region_index, not both")
        if strength == 0 and context_strength == 0:
            return io.NodeOutput(vace_model)
        lora = read_lora(resolve("loras", lora_name))  # the pack's checks: damaged, unsafe or NaN files named
        if region is not None or region_index:
            patcher, report = with_region_lora(vace_model.patcher, lora, lora_name, strength, context_strength,
                                               region_index or region)
        else:
            patcher, report = with_lora(vace_model.patcher, lora, lora_name, strength, context_strength)
        (log.warning if "skipped" in report else log.info)("VACE LoRA %s", report)
        return io.NodeOutput(dataclasses.replace(vace_model, patcher=patcher))


NODES = [VaceLora]
