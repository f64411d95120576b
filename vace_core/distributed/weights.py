"""FSDP2 weight sharding for inference: each rank keeps 1/N of every block; a block's weights are
gathered just before it runs and freed after (torch.distributed.fsdp.fully_shard), so a 14B model
(28 GB in bf16) fits where a replica does not, at the cost of one all-gather of each block per forward.

Shards every module the transformer's stages call on their own (embeddings, head, each main and context
block), not the root: the stages are called directly, without the root's forward hook.
"""

from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from ..transformer import VaceTransformer
from .layout import ParallelLayout


def shard_weights(model: VaceTransformer, layout: ParallelLayout) -> VaceTransformer:
    """Shards the model's weights over all processes of `layout` in place (every rank runs every block in
    the same order, whatever its CFG group or token shard); returns the model."""
    mesh = init_device_mesh(layout.mesh.device_type, (layout.mesh.size(),), mesh_dim_names=("fsdp",))
    units = [model.patch_embedding, model.vace_patch_embedding, model.text_embedding, model.time_embedding,
             model.time_projection, model.head, *model.blocks, *model.vace_blocks]
    for unit in units:
        fully_shard(unit, mesh=mesh, reshard_after_forward=True)
    return model
