"""How N processes split one video's DiT: CFG groups x ring x Ulysses (xDiT's USP layout).

The world is a DeviceMesh of shape (cfg, ring, ulysses). The conditional and unconditional batch halves
run on the two `cfg` slices; inside a slice the tokens are split over ring x ulysses ranks, sequence shard
index = ring_rank * ulysses + ulysses_rank, so a Ulysses all-to-all gathers one contiguous ring block.
Ulysses needs the head count to divide by its degree; ring attention works for any head count.
"""

import math
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from ..errors import VaceError

MODES = ("ulysses", "ring", "usp")


@dataclass(frozen=True)
class Degrees:
    cfg: int
    ring: int
    ulysses: int

    @property
    def sequence(self) -> int:
        return self.ring * self.ulysses


def plan_degrees(world: int, heads: int, mode: str = "usp", cfg_parallel: bool = False,
                 ulysses: int | None = None) -> Degrees:
    """The split of `world` processes, or a VaceError saying why the layout is impossible and what works.

    ulysses: the Ulysses degree for "usp" (default: the largest divisor of both the sequence ranks and the
    heads, so 12 heads on 8 ranks -> Ulysses 4 x ring 2).
    """
    if mode not in MODES:
        raise VaceError(f"unknown parallel mode {mode!r}: choose one of {', '.join(MODES)}")
    if world < 1:
        raise VaceError(f"need at least 1 process, got {world}")
    cfg = 2 if cfg_parallel else 1
    if world % cfg:
        raise VaceError(f"--cfg-parallel runs the conditional and unconditional passes on two halves of the "
                        f"processes: {world} processes do not split in two; use an even number")
    sp = world // cfg
    if mode == "ring":
        return Degrees(cfg, sp, 1)
    if mode == "ulysses":
        if heads % sp:
            raise VaceError(f"Ulysses splits the {heads} attention heads over {sp} sequence-parallel processes, "
                            f"and {heads} does not divide by {sp}: use --parallel ring or usp (ring attention "
                            "works for any head count), or a process count that divides the heads")
        return Degrees(cfg, 1, sp)
    u = math.gcd(sp, heads) if ulysses is None else ulysses
    if u < 1 or sp % u or heads % u:
        raise VaceError(f"Ulysses degree {u} must divide both the {sp} sequence-parallel processes and the "
                        f"{heads} heads (try {math.gcd(sp, heads)})")
    return Degrees(cfg, sp // u, u)


@dataclass(frozen=True)
class ParallelLayout:
    """This process's place in the mesh. Groups of size 1 are never used for communication."""

    degrees: Degrees
    mesh: DeviceMesh

    def group(self, dim: str):
        return self.mesh.get_group(dim)

    def rank(self, dim: str) -> int:
        return self.mesh.get_local_rank(dim)

    @property
    def shard(self) -> int:
        """This process's token shard in its CFG slice."""
        return self.rank("ring") * self.degrees.ulysses + self.rank("ulysses")

    @property
    def device(self) -> torch.device:
        return torch.device(self.mesh.device_type, torch.cuda.current_device()) if self.mesh.device_type == "cuda" \
            else torch.device(self.mesh.device_type)


def launched() -> bool:
    """Whether torchrun (or another launcher with the same variables) started this process."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def check_environment() -> None:
    """torchrun's variables, complete and consistent, or a message saying which is missing (torch's own error is
    a raw ValueError from deep in its rendezvous)."""
    missing = [name for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise VaceError(f"RANK and WORLD_SIZE are set but {' and '.join(missing)} {verb} not: start the processes "
                        "with torchrun (torchrun --nproc-per-node N -m vace_core run ... "
                        "--parallel usp), which sets them all, or set MASTER_ADDR and MASTER_PORT (the address and "
                        "a free port of the rank-0 machine)")
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    except ValueError:
        raise VaceError(f"RANK={os.environ['RANK']!r} and WORLD_SIZE={os.environ['WORLD_SIZE']!r} must be whole "
                        "numbers (torchrun sets them)") from None
    if not 0 <= rank < world:
        raise VaceError(f"RANK={rank} is not among the WORLD_SIZE={world} processes (0 to {world - 1})")


def local_device() -> str:
    """This process's device under torchrun: cuda:LOCAL_RANK when CUDA is there, else cpu."""
    return f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if torch.cuda.is_available() else "cpu"


def init_parallel(heads: int, mode: str = "usp", cfg_parallel: bool = False, ulysses: int | None = None,
                  backend: str | None = None) -> ParallelLayout:
    """Joins (or starts, from torchrun's environment) the process group and builds the mesh.

    backend: "nccl" on CUDA, "gloo" on CPU by default; each process uses cuda:LOCAL_RANK when CUDA is there.
    """
    if not dist.is_initialized():
        if not launched():
            raise VaceError("multi-process sampling runs under torchrun: "
                            "torchrun --nproc-per-node N -m vace_core run ... --parallel usp")
        check_environment()
        cuda = torch.cuda.is_available() and backend != "gloo"
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend or ("nccl" if cuda else "gloo"))
    degrees = plan_degrees(dist.get_world_size(), heads, mode, cfg_parallel, ulysses)
    device_type = "cuda" if dist.get_backend() == "nccl" else "cpu"
    mesh = init_device_mesh(device_type, (degrees.cfg, degrees.ring, degrees.ulysses),
                            mesh_dim_names=("cfg", "ring", "ulysses"))
    return ParallelLayout(degrees, mesh)
