"""GPU memory the ComfyUI way: models live in ModelPatchers and are loaded through load_models_gpu, so
ComfyUI can offload them for other models and stream weights (low VRAM) when they do not fit.

A model with GGUF-quantized Linear weights gets a `QuantizedPatcher`: ComfyUI's patches (LoRAs) on those
weights are never merged into the blocks; each layer applies them to its weight after dequantizing it, whether
the layer is loaded on the GPU or streamed in low-VRAM mode.
"""

import comfy.model_management as mm
import comfy.model_patcher
import torch

from ..vace_core import ops
from ..vace_core.denoiser import Wrapper
from ..vace_core.errors import VaceError
from ..vace_core.memory import sampling_bytes  # noqa: F401 (the nodes' reserve before sampling)
from ..vace_core.vae.tiling import WORK_PER_PIXEL

GIB = 2**30


class QuantizedPatcher(comfy.model_patcher.ModelPatcher):
    """ModelPatcher whose patches on GGUF-quantized weights stay unmerged (ComfyUI-GGUF does the same): the layer's
    `weight_patches` get ComfyUI's own LowVramPatch (calculate_weight on the dequantized weight)."""

    def patch_weight_to_device(self, key, device_to=None, inplace_update=False):
        layer, _, attr = key.rpartition(".")
        module = self.model.get_submodule(layer) if layer else None
        if attr != "weight" or module is None or not ops.is_quantized(module):
            return super().patch_weight_to_device(key, device_to, inplace_update)
        if key in self.patches:
            module.weight_patches = [comfy.model_patcher.LowVramPatch(key, self.patches)]

    def load(self, device_to=None, lowvram_model_memory=0, force_patch_weights=False, full_load=False):
        # streamed layers too: their patches go through patch_weight_to_device, never into weight_function
        super().load(device_to, lowvram_model_memory, True, full_load)

    def unpatch_model(self, device_to=None, unpatch_weights=True):
        if unpatch_weights:
            for module in self.model.modules():
                if ops.is_quantized(module):
                    module.weight_patches = []
        super().unpatch_model(device_to, unpatch_weights)


def patch(model: torch.nn.Module, load_device, offload_device) -> comfy.model_patcher.ModelPatcher:
    quantized = any(ops.is_quantized(m) for m in model.modules())
    patcher = QuantizedPatcher if quantized else comfy.model_patcher.ModelPatcher
    return patcher(model, load_device=load_device, offload_device=offload_device)


class AnnotatorWeights(torch.nn.Module):
    """An annotator's module as model management holds it. ModelPatcher writes its bookkeeping (device, loaded
    bytes) onto the module it manages; this holder takes it, so the annotator's own module (SAM2's `device`
    property, for one) is left alone."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net


def annotator_patcher(annotator) -> comfy.model_patcher.ModelPatcher:
    """A ModelPatcher over a `TorchAnnotator`'s weights, built on ComfyUI's offload device: they reach the GPU
    only when the annotator runs (`load_annotator`)."""
    annotator.to(mm.unet_offload_device())
    return patch(AnnotatorWeights(annotator.model), mm.get_torch_device(), mm.unet_offload_device())


def load_annotator(annotator, patcher) -> None:
    """Loads the annotator's weights whole (its layers are plain torch ones, which ComfyUI cannot stream) through
    load_models_gpu, which offloads other models when the room is short; they stay listed among ComfyUI's loaded
    models, so its memory checks count them as freeable and it offloads them when another model needs the room."""
    mm.load_models_gpu([patcher], force_full_load=True)
    annotator.to(patcher.load_device)


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

    def weights_checked(self) -> None:  # without loading the model
        self.patcher.model.weights_checked()


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


def decode_bytes(vae_config: dict, dtype: torch.dtype, frame_px: tuple[int, int], tile: int | None) -> int:
    """The VAE decoder's working memory for one (tile of a) frame, as vace_core's automatic tiling counts it."""
    pixels = tile * tile if tile else frame_px[0] * frame_px[1]
    return WORK_PER_PIXEL["decode"] * vae_config["dim"] * vae_config["dim_mult"][0] * dtype.itemsize * pixels
