"""Load VACE Model and Load VACE VAE: files from ComfyUI's model folders, wrapped for its memory manager."""

from dataclasses import dataclass

import comfy.model_management as mm
import comfy.model_patcher
import comfy.ops
import torch
from comfy_api.latest import io

from ..vace_core.checkpoints import load_vace_model
from ..vace_core.vae import load_vae
from .files import FileInput, resolve
from .memory import patch
from .types import CATEGORY, VaceModel, VaceVAE

DTYPES = {"default": None, "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16,
          "fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}
COMPUTE = {"auto": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
NO_BASE = "none (the file is a full VACE model)"


@dataclass
class LoadedVace:
    """What flows through a VACE_MODEL socket."""

    patcher: comfy.model_patcher.ModelPatcher
    block_swap: int = 0


def pick_compute_dtype(choice: str, device) -> torch.dtype:
    if COMPUTE[choice] is not None:
        return COMPUTE[choice]
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
                io.Combo.Input("weight_dtype", options=list(DTYPES), default="default",
                               tooltip="How weights are stored in memory. default keeps the file's dtype (GGUF: "
                                       "quantized, each layer dequantized when it runs); fp8 halves the memory of "
                                       "fp16 (each layer is upcast when it runs). Another choice dequantizes a GGUF "
                                       "file to that dtype."),
                io.Combo.Input("compute_dtype", options=list(COMPUTE), default="auto",
                               tooltip="Activations' dtype. auto: bf16 where supported, else fp16, fp32 on CPU."),
                io.Combo.Input("attention", options=["auto", "sdpa", "flash", "sage"], default="auto",
                               tooltip="Attention kernel. auto uses flash-attn when installed, else PyTorch SDPA. "
                                       "sage (SageAttention) is faster but approximate."),
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
        model = load_vace_model(path, base, storage_dtype=DTYPES[weight_dtype],
                                compute_dtype=pick_compute_dtype(compute_dtype, device),
                                device=mm.unet_offload_device(), operations=comfy.ops.manual_cast,
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
                io.Combo.Input("dtype", options=["auto", "bf16", "fp16", "fp32"], default="auto",
                               tooltip="VAE precision. auto: ComfyUI's choice for the device (bf16 on recent "
                                       "GPUs, fp32 on CPU, where bf16 convolutions are slow)."),
            ],
            outputs=[VaceVAE.Output(display_name="vace_vae")],
        )

    @classmethod
    def execute(cls, vae_name, dtype) -> io.NodeOutput:
        path = resolve("vae", vae_name)
        dtype = mm.vae_dtype(mm.vae_device(), [torch.bfloat16, torch.float32]) if dtype == "auto" else DTYPES[dtype]
        vae = load_vae(path, dtype=dtype, device=mm.vae_offload_device(), operations=comfy.ops.manual_cast)
        return io.NodeOutput(patch(vae, mm.vae_device(), mm.vae_offload_device()))


NODES = [LoadVaceModel, LoadVaceVAE]
