"""GPU memory the ComfyUI way: models live in ModelPatchers and are loaded through load_models_gpu, so
ComfyUI can offload them for other models and stream weights (low VRAM) when they do not fit."""

import comfy.model_management as mm
import comfy.model_patcher
import torch


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


def offload(patcher) -> None:
    """Moves the model back to its offload device now (on request, after sampling), and tells ComfyUI."""
    for i, loaded in enumerate(mm.current_loaded_models):
        if loaded.model is patcher:
            mm.current_loaded_models.pop(i).model_unload()
            break
    mm.soft_empty_cache()
