"""Speed switches for the DiT, each off by default (the exact path) until a GPU run measures it faster.

- `compile`: regional torch.compile: each block's forward is compiled; blocks of one kind share the compiled
  graph (their weights are graph inputs), so a 30-block model compiles once per block kind, not 30 times.
- `fp8_compute`: Linear layers whose weights are stored in fp8 e4m3 multiply in fp8 (`torch._scaled_mm`, per-
  tensor scales) instead of upcasting the weight (layers with an `fp8_compute` switch: `vace_core.ops.Linear`, the
  default of load_vace_model, and the nodes' ComfyUI layers, nodes/speed.py).
- `lean` + `ffn_chunk`: in-place / fused modulation and residual adds, and the FFN run `ffn_chunk` tokens at a
  time (see `WanBlock`): fewer fp32 temporaries and a (B, L, ffn_dim) hidden that exists one chunk at a time.

`HostSyncs` counts the calls that make a GPU wait for the host (`.item()`, `.cpu()`, `float(t)`...), so
a test can show on CPU that a sampling step has none.
"""

from dataclasses import dataclass

import torch
from torch.overrides import TorchFunctionMode

from . import ops
from .errors import VaceError
from .settings import check, knob


@dataclass(frozen=True, kw_only=True)
class Speed:
    """The switches; Speed() is the exact path. The VACE Speed node and the command line's --compile, --lean,
    --ffn-chunk and --fp8-compute set them."""

    compile: bool = knob(False, "Compile each DiT block with torch.compile (regional: one graph per block kind). "
                         "The first step compiles (a minute or more); later steps run faster on a GPU.")
    compile_mode: str | None = None  # torch.compile's mode ("max-autotune-no-cudagraphs", ...); None: default
    lean: bool = knob(False, "In-place modulation and fused residual adds (fewer fp32 temporaries); with ffn_chunk, "
                      "the FFN runs a chunk of tokens at a time. Same result up to float rounding.")
    ffn_chunk: int = knob(0, "With lean: tokens per FFN call (e.g. 8192), so the FFN's wide hidden exists one chunk "
                          "at a time; 0 = all tokens at once.", min=0, max=1 << 20, step=256)
    fp8_compute: bool = knob(False, "Linear layers whose weights are stored in fp8 e4m3 (weight_dtype fp8_e4m3fn, "
                             "or an fp8 file) multiply in fp8 instead of upcasting the weight (Ada/Hopper GPUs). "
                             "Approximate: activations are quantised too.")

    def __post_init__(self):
        check(self)
        if self.ffn_chunk and not self.lean:
            raise VaceError(f"ffn_chunk {self.ffn_chunk}: chunking the FFN needs lean on (--lean; the VACE Speed "
                            "node's lean): the chunks are written into the residual stream in place")


def blocks(model) -> list[torch.nn.Module]:
    return [*model.blocks, *model.vace_blocks]


def fp8_layers(model) -> list[torch.nn.Module]:
    """The layers with an fp8 compute switch (see the module docstring)."""
    return [layer for layer in model.modules() if hasattr(type(layer), "fp8_compute")]


def check_speed(model, speed: Speed) -> None:
    """Refuses a switch that would change nothing on `model`: fp8 compute without fp8 e4m3 weights."""
    if speed.fp8_compute and not any(layer.weight.dtype == ops.E4M3 for layer in fp8_layers(model)):
        raise VaceError("fp8 compute multiplies fp8 e4m3 weights, and this model holds none: load it with weight "
                        "dtype fp8_e4m3fn (Load VACE Model's weight_dtype, --weight-dtype) or from an fp8 e4m3 file, "
                        "or turn fp8 compute off")


def apply_speed(model, speed: Speed = Speed()):
    """Sets the switches on `model` (a VaceTransformer) in place and returns it; Speed() restores the exact path."""
    check_speed(model, speed)
    for block in blocks(model):
        block.__dict__.pop("forward", None)  # undo an earlier compile
        block.lean, block.ffn_chunk = speed.lean, speed.ffn_chunk
        if speed.compile:
            block.forward = torch.compile(block.forward, mode=speed.compile_mode)
    for layer in fp8_layers(model):
        layer.fp8_compute = speed.fp8_compute
    model.speed = speed  # the memory estimate reads it (vace_core.memory)
    return model


HOST_SYNCS = frozenset({"item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__",
                        "nonzero", "__array__"})


class HostSyncs(TorchFunctionMode):
    """While active (`with HostSyncs() as syncs:`, or entered and exited by hand around some steps), records in
    `calls` the name of every tensor call that copies a value to the host: on a GPU, a sync point. Works on
    CPU, where those calls are cheap but still counted (`.to("cpu")` only for device tensors: layers cast their
    weights with `.to(device=x.device)`, a no-op for a CPU input)."""

    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        moves_to_host = (name == "to" and isinstance(args[0], torch.Tensor) and args[0].device.type != "cpu"
                         and any(str(a).startswith("cpu") for a in [*args[1:], *(kwargs or {}).values()]))
        if name in HOST_SYNCS or moves_to_host:
            self.calls.append(name)
        return func(*args, **(kwargs or {}))
