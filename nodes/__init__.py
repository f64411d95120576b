"""ComfyUI nodes (V3 schema): thin wrappers over vace_core and annotators."""

import os

import folder_paths
from comfy_api.latest import ComfyExtension, io
from typing_extensions import override

from ..vace_core import example_media
from . import (
    annotator_nodes,
    caching,
    decode,
    experts,
    guidance,
    job,
    loaders,
    long_video,
    lora,
    native,
    regional,
    sampler,
    speed,
    timeline,
    vcu_nodes,
)
from .files import register_gguf_folder
from .guard import guard

# annotator weights live in their own model folders (models/annotators, models/sam2)
for _kind in ("annotators", "sam2"):
    folder_paths.add_model_folder_path(_kind, os.path.join(folder_paths.models_dir, _kind))
register_gguf_folder()  # .gguf transformers in diffusion_models / unet


class VaceExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        nodes = [*loaders.NODES, *vcu_nodes.NODES, *annotator_nodes.NODES, *sampler.NODES, *decode.NODES,
                 *long_video.NODES, *regional.NODES, *lora.NODES, *native.NODES, *caching.NODES, *experts.NODES,
                 *job.NODES, *speed.NODES, *timeline.NODES, *guidance.NODES]
        return [guard(node) for node in nodes]  # every node of the pack gets the input guard (nodes/guard.py)


async def comfy_entrypoint() -> VaceExtension:
    example_media.install(folder_paths.get_input_directory())  # the example workflows' files, never overwriting
    return VaceExtension()
