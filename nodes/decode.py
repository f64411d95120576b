"""VACE Decode: LATENT -> IMAGE with the tiled Wan VAE, optionally pasting kept pixels back."""

import comfy.model_management as mm
import torch
from comfy_api.latest import io

from ..vace_core.errors import VaceError
from ..vace_core.pipeline import FEATHER, composite
from ..vace_core.vae import Tiling, from_comfy_latent
from ..vace_core.vcu import to_images
from . import memory
from .inputs import widget
from .types import CATEGORY, VCU, VaceVAE


def wan_latent(samples: dict, trim: int, z_dim: int) -> torch.Tensor:
    """The (B, z_dim, T, H/8, W/8) samples of a Wan 2.1 LATENT after dropping `trim` latent frames."""
    x = samples["samples"]
    if x.ndim != 5 or x.shape[1] != z_dim:
        raise VaceError(f"this LATENT is shaped {tuple(x.shape)}, not a Wan 2.1 video latent "
                        f"(B, {z_dim}, T, H/8, W/8): it comes from another model (e.g. SD's 4-channel image "
                        "latents). Decode it with that model's VAE, or connect VACE Sampler's output.")
    if trim >= x.shape[2]:
        raise VaceError(f"trim_latent {trim} would remove all {x.shape[2]} latent frames: use a smaller value")
    return x[:, :, trim:]


def check_memory(vae, latent_shape, tile) -> None:
    """The decoded video (kept as IMAGE) must fit in RAM; without automatic tiling the decoder's working memory
    must fit on its device too."""
    frames, height, width = 1 + (latent_shape[2] - 1) * 4, latent_shape[3] * 8, latent_shape[4] * 8
    video = latent_shape[0] * 3 * frames * height * width * 4
    what = f"decoding {frames} frames at {height}x{width}"
    memory.require(2 * video, mm.intermediate_device(), what, "Decode fewer frames or a smaller size.")
    if tile != "auto":
        work = memory.decode_bytes(vae.config, vae.dtype, (height, width), tile) + video
        memory.require(work, mm.vae_device(), what + (f" in {tile} px tiles" if tile else " without tiles"),
                       "Set tiling to auto (tiles sized to the free memory) or choose a smaller tile_size.")


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
                widget(FEATHER),
            ],
            outputs=[io.Image.Output(display_name="images")],
        )

    @classmethod
    def execute(cls, vace_vae, samples, tiling, tile_size, tile_overlap, trim_latent, feather,
                vcu=None) -> io.NodeOutput:
        latent = wan_latent(samples, trim_latent, vace_vae.model.config["z_dim"])
        check_memory(vace_vae.model, latent.shape, {"auto": "auto", "off": None, "custom": tile_size}[tiling])
        vae = memory.load(vace_vae)
        latent = from_comfy_latent(latent.to(mm.vae_device()))
        plan = {"auto": "auto", "off": None, "custom": Tiling(tile=tile_size, overlap=tile_overlap)}[tiling]
        video = vae.decode(latent, tiling=plan)[0].to(mm.intermediate_device())
        if vcu is not None:
            video = composite(video, vcu, feather)
        return io.NodeOutput(to_images(video))


NODES = [VaceDecode]
