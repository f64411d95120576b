"""VACE Decode: LATENT -> IMAGE with the tiled Wan VAE, optionally pasting kept pixels back."""

import comfy.model_management as mm
from comfy_api.latest import io

from ..vace_core.pipeline import composite
from ..vace_core.vae import Tiling, from_comfy_latent
from ..vace_core.vcu import to_images
from . import memory
from .types import CATEGORY, VCU, VaceVAE


class VaceDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VACEDecode", display_name="VACE Decode", category=CATEGORY,
            description="Decodes a Wan 2.1 LATENT with spatial tiles (bounded memory) and can paste the VCU's kept "
                        "pixels back so unmasked regions stay exactly as they were.",
            inputs=[
                VaceVAE.Input("vace_vae", tooltip="From Load VACE VAE."),
                io.Latent.Input("samples", tooltip="From VACE Sampler (or a native Wan sampler)."),
                io.Combo.Input("tiling", options=["auto", "off", "custom"], default="auto",
                               tooltip="auto: tiles sized to the free memory; off: whole frames; custom: below."),
                io.Int.Input("tile_size", default=272, min=64, max=2048, step=16,
                             tooltip="Custom tile size in pixels (spatial)."),
                io.Int.Input("tile_overlap", default=64, min=0, max=1024, step=8,
                             tooltip="Custom tile overlap in pixels, blended linearly."),
                io.Int.Input("trim_latent", default=0, min=0, max=64,
                             tooltip="Latent frames to drop from the start first: reference frames of a LATENT "
                                     "from native WanVaceToVideo (VACE Sampler already removes them)."),
                VCU.Input("vcu", optional=True, tooltip="Paste this VCU's kept pixels (mask 0) back over the output."),
                io.Int.Input("feather", default=8, min=0, max=256,
                             tooltip="Soft edge in pixels where pasted pixels blend into generated ones."),
            ],
            outputs=[io.Image.Output(display_name="images")],
        )

    @classmethod
    def execute(cls, vace_vae, samples, tiling, tile_size, tile_overlap, trim_latent, feather,
                vcu=None) -> io.NodeOutput:
        vae = memory.load(vace_vae)
        latent = from_comfy_latent(samples["samples"][:, :, trim_latent:].to(mm.vae_device()))
        plan = {"auto": "auto", "off": None, "custom": Tiling(tile=tile_size, overlap=tile_overlap)}[tiling]
        video = vae.decode(latent, tiling=plan)[0].to(mm.intermediate_device())
        if vcu is not None:
            video = composite(video, vcu, feather)
        return io.NodeOutput(to_images(video))


NODES = [VaceDecode]
