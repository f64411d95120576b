"""Load VACE Model and Load VACE VAE: files from ComfyUI's model folders, wrapped for its memory manager."""

from dataclasses import dataclass

import comfy.model_management as mm
import comfy.model_patcher
import comfy.ops
import torch
from comfy_api.latest import io

from ..vace_core.checkpoints import COMPUTE_DTYPES, DTYPES, LoadSettings, load_vace_model
from ..vace_core.settings import knobs
from ..vace_core.speed import Speed
from ..vace_core.vae import load_vae
from .files import FileInput, resolve
from .inputs import widget
from .memory import patch
from .speed import speed_ops
from .types import CATEGORY, VaceModel, VaceVAE

LOAD = knobs(LoadSettings)
NO_BASE = "none (the file is a full VACE model)"


@dataclass
class LoadedVace:
    """What flows through a VACE_MODEL socket."""

    patcher: comfy.model_patcher.ModelPatcher
    block_swap: int = 0
    speed: Speed = Speed()  # the VACE Speed node's switches, set on the model when a sampler runs it


def pick_compute_dtype(choice: str, device) -> torch.dtype:
    if choice in COMPUTE_DTYPES:
        return COMPUTE_DTYPES[choice]
    if mm.should_use_bf16(device):
        return torch.bfloat16
    return torch.float16 if mm.should_use_fp16(device) else torch.float32


class LoadVaceModel(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VACEModelLoader", display_name="Load VACE Model", category=CATEGORY,
            description="Loads Wan2.1-VACE (1.3B or 14B) or a Wan2.2-VACE-Fun expert from models/diffusion_models "
                        "(or models/unet): a full VACE file, or a VACE module file merged onto its Wan2.1 T2V base; "
                        "safetensors, fp8 or GGUF (Q8_0 ... Q4_K_M, kept quantized). The shape is read from the "
                        "weights.",
            inputs=[
                FileInput("model_name", "diffusion_models",
                          tooltip="wan2.1_vace_1.3B_fp16.safetensors, wan2.1_vace_14B_fp16.safetensors, an "
                                  "fp8 / scaled fp8 variant, a GGUF file (e.g. Wan2.1_14B_VACE-Q4_K_M.gguf), or a "
                                  "VACE module file (then choose its base)."),
                FileInput("base_model", "diffusion_models", extra=(NO_BASE,), default=NO_BASE,
                          tooltip="Only for a VACE module file (context blocks only): the Wan2.1 T2V base it "
                                  "extends, e.g. wan2.1_t2v_14B_fp16.safetensors or a T2V GGUF. An I2V base will "
                                  "not work."),
                widget(LOAD["weight_dtype"]),
                widget(LOAD["compute_dtype"]),
                widget(LOAD["attention"]),
                io.Int.Input("block_swap", default=0, min=0, max=40,
                             tooltip="Blocks whose weights stay off the GPU and stream in per layer while "
                                     "sampling: saves VRAM at some speed (e.g. 14B fp16 on 24 GB: about 20)."),
            ],
            outputs=[VaceModel.Output(display_name="vace_model")],
        )

    @classmethod
    def execute(cls, model_name, base_model, weight_dtype, compute_dtype, attention, block_swap) -> io.NodeOutput:
        path = resolve("diffusion_models", model_name)
        base = None if base_model == NO_BASE else resolve("diffusion_models", base_model)
        device = mm.get_torch_device()
        model = load_vace_model(path, base, storage_dtype=DTYPES.get(weight_dtype),
                                compute_dtype=pick_compute_dtype(compute_dtype, device),
                                device=mm.unet_offload_device(), operations=speed_ops,
                                attention_backend=attention)
        return io.NodeOutput(LoadedVace(patch(model, device, mm.unet_offload_device()), block_swap))


class LoadVaceVAE(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VACEVAELoader", display_name="Load VACE VAE", category=CATEGORY,
            description="Loads the Wan2.1 VAE (wan_2.1_vae.safetensors, Wan2.1_VAE.pth or diffusers') from "
                        "models/vae for VCU encoding and tiled decoding.",
            inputs=[
                FileInput("vae_name", "vae",
                          tooltip="wan_2.1_vae.safetensors (ComfyUI) or Wan2.1_VAE.pth (official)."),
                widget(LOAD["vae_dtype"], "dtype"),
            ],
            outputs=[VaceVAE.Output(display_name="vace_vae")],
        )

    @classmethod
    def execute(cls, vae_name, dtype) -> io.NodeOutput:
        path = resolve("vae", vae_name)
        dtype = mm.vae_dtype(mm.vae_device(), [torch.bfloat16, torch.float32]) if dtype == "auto" \
            else COMPUTE_DTYPES[dtype]
        vae = load_vae(path, dtype=dtype, device=mm.vae_offload_device(), operations=comfy.ops.manual_cast)
        return io.NodeOutput(patch(vae, mm.vae_device(), mm.vae_offload_device()))


NODES = [LoadVaceModel, LoadVaceVAE]
