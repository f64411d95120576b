"""VCU to Native Conditioning: our VCUs as the CONDITIONING and LATENT that ComfyUI's native Wan VACE model reads.

Native WanVaceToVideo puts, per context stream, `vace_frames` (1, 32, T, h, w: inactive + reactive latents in
ComfyUI's raw LATENT space, reference latents first along time), `vace_mask` (1, 64, T, h, w) and
`vace_strength` on both conditionings, appending to what is there (so streams stack), and returns an empty
latent of the full length plus how many reference frames to trim. This node does the same from VCUs, encoded
with the native VAE, so every native node (UNETLoader, LoRA loaders, TorchCompileModel, EasyCache, KSampler,
SamplerCustomAdvanced) works with our VCU builders, annotators and compositions; several references are
supported (native takes one). What native cannot do (start/end windows per stream, the official sigma grid,
long video, regional prompts) stays in the VACE Sampler.
"""

import comfy.model_management as mm
import node_helpers
import torch
from comfy_api.latest import io

from ..vace_core.errors import VaceError
from ..vace_core.pipeline import encode_contexts
from ..vace_core.vae import from_comfy_latent, to_comfy_latent
from ..vace_core.vcu.pixels import to_images
from .types import CATEGORY, VCU

STREAMS = 3


def native_encoder(vae):
    """Our encoder interface ((1, 3, T, H, W) in [-1, 1] -> normalised latent) over a native VAE."""
    def encode(video):
        latent = vae.encode(to_images(video[0])).float()
        if latent.ndim != 5 or latent.shape[1] != 16:
            raise VaceError(f"the VAE gave a latent of shape {tuple(latent.shape)}; VACE needs the Wan2.1 VAE "
                            "(16 channels, wan_2.1_vae.safetensors), also with Wan2.2-VACE-Fun")
        return from_comfy_latent(latent)
    return encode


def native_context(context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Our (1, 96, T, h, w) context latent -> native (vace_frames (1, 32, ...) raw, vace_mask (1, 64, ...))."""
    frames = torch.cat([to_comfy_latent(context[:, :16]), to_comfy_latent(context[:, 16:32])], dim=1)
    return frames, context[:, 32:]


class VcuToNativeConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        streams = [inp for i in range(2, STREAMS + 1) for inp in (
            VCU.Input(f"vcu_{i}", optional=True, tooltip="Another VCU as its own context stream (same size, length "
                                                          "and number of references as the first)."),
            io.Float.Input(f"strength_{i}", default=1.0, min=0.0, max=1000.0, step=0.01, optional=True,
                           tooltip="This VCU's strength."))]
        return io.Schema(
            node_id="VACEToNativeConditioning", display_name="VCU to Native Conditioning", category=CATEGORY,
            description="Turns VCUs into the conditioning ComfyUI's native Wan VACE model reads (as WanVaceToVideo "
                        "makes it) plus the empty latent, for native loaders, LoRA loaders and samplers. Trim the "
                        "sampled latent by trim_latent (Trim Video Latent) before decoding.",
            inputs=[
                io.Conditioning.Input("positive", tooltip="CLIP Text Encode with a Wan umt5 text encoder."),
                io.Conditioning.Input("negative", tooltip="The negative prompt."),
                io.Vae.Input("vae", tooltip="The native Wan2.1 VAE (Load VAE, wan_2.1_vae.safetensors)."),
                VCU.Input("vcu", tooltip="A VCU (Build VCU, Compose VCUs, annotators...)."),
                io.Float.Input("strength", default=1.0, min=0.0, max=1000.0, step=0.01,
                               tooltip="How strongly this VCU steers the video (context scale)."),
                *streams,
                io.Int.Input("batch_size", default=1, min=1, max=4096, tooltip="Videos per run."),
            ],
            outputs=[io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative"),
                     io.Latent.Output(display_name="latent"), io.Int.Output(display_name="trim_latent")],
        )

    @classmethod
    def execute(cls, positive, negative, vae, vcu, strength, batch_size, **more) -> io.NodeOutput:
        units = [(vcu, strength)] + [(more[f"vcu_{i}"], more.get(f"strength_{i}", 1.0))
                                     for i in range(2, STREAMS + 1) if more.get(f"vcu_{i}") is not None]
        contexts = encode_contexts([u for u, _ in units], native_encoder(vae))
        values = {"vace_frames": [], "vace_mask": [], "vace_strength": []}
        for context, (_, s) in zip(contexts, units, strict=True):
            frames, mask = native_context(context)
            values["vace_frames"].append(frames)
            values["vace_mask"].append(mask)
            values["vace_strength"].append(s)
        positive, negative = (node_helpers.conditioning_set_values(c, values, append=True)
                              for c in (positive, negative))
        latent = torch.zeros([batch_size, 16, *contexts[0].shape[2:]], device=mm.intermediate_device())
        return io.NodeOutput(positive, negative, {"samples": latent}, len(vcu.references))


NODES = [VcuToNativeConditioning]
