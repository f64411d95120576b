"""Multi-process sampling on torch.distributed: sequence parallel (Ulysses, ring, USP), CFG parallel and
FSDP2 weight sharding, launched by torchrun. See README "Multi-GPU"."""

from .layout import (
    MODES,
    Degrees,
    ParallelLayout,
    check_environment,
    init_parallel,
    launched,
    local_device,
    plan_degrees,
)
from .model import ParallelVace, shard_tokens
from .weights import shard_weights

__all__ = ["MODES", "Degrees", "ParallelLayout", "ParallelVace", "check_environment", "init_parallel", "launched",
           "local_device", "plan_degrees", "shard_tokens", "shard_weights"]
