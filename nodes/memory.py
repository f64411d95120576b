"""GPU memory the ComfyUI way: models live in ModelPatchers and are loaded through load_models_gpu, so
ComfyUI can offload them for other models and stream weights (low VRAM) when they do not fit."""

import math

import comfy.model_management as mm
import comfy.model_patcher
import torch

from ..vace_core.denoiser import Wrapper
from ..vace_core.errors import VaceError
from ..vace_core.memory import activation_bytes as estimate_activations
from ..vace_core.vae.tiling import WORK_PER_PIXEL

GIB = 2**30


def patch(model: torch.nn.Module, load_device, offload_device) -> comfy.model_patcher.ModelPatcher:
    return comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)


def swap_reserve(model, swapped_blocks: int) -> int:
    """Bytes to keep free so ComfyUI leaves `swapped_blocks` DiT blocks off the GPU and streams their
    weights in per layer (block swap): how a 14B model runs on a 24 GB card."""
    return swapped_blocks * mm.module_size(model.blocks[0])


def load(patcher, reserve_bytes: int = 0) -> torch.nn.Module:
    """Loads the model for inference (fully, or partly when memory is short) and returns it."""
    mm.load_models_gpu([patcher], memory_required=reserve_bytes, force_full_load=False)
    return patcher.model


class Managed(Wrapper):
    """A ModelPatcher's DiT as a denoiser (vace_core.denoiser), loaded through ComfyUI whenever it runs: the DiT
    and the VAE take turns every long-video window, and Wan2.2's experts every boundary, so ComfyUI may offload
    one for the other (low VRAM). Config and compute dtype are read without loading."""

    staged = True

    def __init__(self, patcher, reserve_bytes: int = 0):  # no Wrapper.__init__: `inner` is loaded on access
        self.patcher, self.reserve = patcher, reserve_bytes

    @property
    def inner(self) -> torch.nn.Module:
        return load(self.patcher, self.reserve)

    device = property(lambda self: mm.get_torch_device())
    compute_dtype = property(lambda self: self.patcher.model.compute_dtype)
    config = property(lambda self: self.patcher.model.config)


class ManagedVAE:
    """A ModelPatcher's VACE VAE, loaded through ComfyUI for each encode / decode."""

    def __init__(self, patcher):
        self.patcher = patcher

    def encode(self, video, tiling=None):
        return load(self.patcher).encode(video.to(mm.vae_device()), tiling=tiling)

    def decode(self, latent, tiling=None):
        return load(self.patcher).decode(latent.to(mm.vae_device()), tiling=tiling).to(mm.intermediate_device())


def offload(patcher) -> None:
    """Moves the model back to its offload device now (on request, after sampling), and tells ComfyUI."""
    for i, loaded in enumerate(mm.current_loaded_models):
        if loaded.model is patcher:
            mm.current_loaded_models.pop(i).model_unload()
            break
    mm.soft_empty_cache()


def available(device) -> int:
    """Bytes a request can have on `device`: free now, plus the models ComfyUI holds there and can offload
    (on the CPU, offloading frees nothing)."""
    device = torch.device(device)
    freeable = 0 if device.type == "cpu" else sum(
        m.model_loaded_memory() for m in mm.current_loaded_models if m.model is not None and m.device == device)
    return mm.get_free_memory(device) + freeable


def require(needed: int, device, what: str, suggestions: str) -> None:
    """Refuses, before any work, a request that cannot fit: the size, what is free, what to change."""
    free = available(device)
    if needed > free:
        raise VaceError(f"{what} needs about {needed / GIB:.1f} GiB on {torch.device(device)}, but only "
                        f"{free / GIB:.1f} GiB are free there (after offloading models). {suggestions}")


def activation_bytes(model, latent_shape, guided: bool, streams: int) -> int:
    """The peak activations of one forward pass (CFG batched), measured-calibrated (vace_core.memory);
    latent_shape (T, h, w)."""
    return estimate_activations(model.config, latent_shape, 2 if guided else 1, streams, model.compute_dtype,
                                getattr(model, "speed", None))


def sampling_bytes(model, latent_shape, guided: bool, streams: int) -> int:
    """Activations plus the float32 latents the loop keeps (x, v, the solver's history: about 8 copies) and the
    context latents (96 channels per stream)."""
    latent = math.prod(latent_shape) * 4
    return activation_bytes(model, latent_shape, guided, streams) + 8 * 16 * latent + streams * 96 * latent


def decode_bytes(vae_config: dict, dtype: torch.dtype, frame_px: tuple[int, int], tile: int | None) -> int:
    """The VAE decoder's working memory for one (tile of a) frame, as vace_core's automatic tiling counts it."""
    pixels = tile * tile if tile else frame_px[0] * frame_px[1]
    return WORK_PER_PIXEL["decode"] * vae_config["dim"] * vae_config["dim_mult"][0] * dtype.itemsize * pixels
