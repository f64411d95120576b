"""The Wan2.1 VAE: causal chunked encode/decode with spatial tiling, and its file formats."""

from .formats import diffusers_to_official, load_vae, vae_config
from .model import LATENTS_MEAN, LATENTS_STD, WanVAE, check_frame_count, from_comfy_latent, to_comfy_latent
from .tiling import Tiling

__all__ = ["LATENTS_MEAN", "LATENTS_STD", "Tiling", "WanVAE", "check_frame_count", "diffusers_to_official",
           "from_comfy_latent", "load_vae", "to_comfy_latent", "vae_config"]
