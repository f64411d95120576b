"""Communication per step for multi-GPU sampling, and a projected speed-up ON PAPER (no GPU run).

    .venv/bin/python benchmarks/comm_volume.py [--step-time 36] [--bandwidth 300]

Bytes per process per step come from vace_core.distributed.volume (the tests check that formula
against the bytes the gloo ranks really send). The projection: step time on N ranks = the single-rank
step time / N + bytes sent / link bandwidth, with no compute/communication overlap. The single-rank
time is one measured figure (default: the official code's 14B 720p x 81 frames on one H100, ~30 min for
50 steps = 36 s/step) turned into a throughput by the step's FLOPs and applied to every shape.
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vace_core.config import VACE_1_3B, VACE_14B  # noqa: E402
from vace_core.distributed import plan_degrees  # noqa: E402
from vace_core.distributed.volume import projected_step_time, step_flops, step_volume  # noqa: E402
from vace_core.errors import VaceError  # noqa: E402
from vace_core.transformer import VaceTransformer  # noqa: E402

MODELS = {"1.3B": VACE_1_3B, "14B": VACE_14B}
SHAPES = {"480p": 21 * 30 * 52, "720p": 21 * 45 * 80}  # tokens of 832x480 / 1280x720 x 81 frames
LAYOUTS = {"ulysses": ("ulysses", False), "ring": ("ring", False), "usp": ("usp", False),
           "cfg+usp": ("usp", True)}


def params(cfg) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in VaceTransformer(cfg).parameters())


def rows(step_time: float, bandwidth: float):
    """(model, shape, ranks, layout, degrees, GB sent per step, FSDP GB, projected s/step, speed-up)."""
    throughput = step_flops(VACE_14B, SHAPES["720p"]) / step_time
    for name, cfg in MODELS.items():
        n_params = params(cfg)
        for shape, tokens in SHAPES.items():
            single = step_flops(cfg, tokens) / throughput
            for ranks in (2, 4, 8):
                for layout, (mode, cfg_parallel) in LAYOUTS.items():
                    try:
                        degrees = plan_degrees(ranks, cfg.num_heads, mode, cfg_parallel)
                    except VaceError:
                        yield name, shape, ranks, layout, "impossible", None, None, None, None
                        continue
                    volume = step_volume(cfg, tokens, degrees)
                    fsdp = step_volume(cfg, tokens, degrees, weight_bytes=2, params=n_params).weights
                    t = projected_step_time(single, volume, ranks, bandwidth)
                    split = f"{degrees.cfg}x{degrees.ring}x{degrees.ulysses}"
                    yield name, shape, ranks, layout, split, volume.total / 1e9, fsdp / 1e9, t, single / t


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--step-time", type=float, default=36.0,
                   help="measured single-GPU seconds per step of 14B at 720p x 81 frames with CFG (default: "
                   "the official figure, ~30 min / 50 steps on one H100)")
    p.add_argument("--bandwidth", type=float, default=300.0, help="GB/s each GPU sends (NVLink4 ~450 peak)")
    args = p.parse_args()
    print(f"ON PAPER: single-rank step time from {args.step_time} s/step (14B 720p) scaled by FLOPs; "
          f"link {args.bandwidth} GB/s per GPU; no overlap. Layout = CFG x ring x Ulysses.\n")
    print("| model | video | GPUs | layout | CFG x ring x Ulysses | GB sent / GPU / step | + FSDP2 bf16 weights GB "
          "| projected s/step | projected speed-up |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, shape, ranks, layout, split, gb, fsdp, t, speedup in rows(args.step_time, args.bandwidth * 1e9):
        if gb is None:
            print(f"| {name} | {shape} | {ranks} | {layout} | impossible (heads) | | | | |")
        else:
            cells = (name, shape, ranks, layout, split, f"{gb:.2f}", f"{fsdp:.1f}", f"{t:.2f}", f"{speedup:.2f}x")
            print("| " + " | ".join(map(str, cells)) + " |")


if __name__ == "__main__":
    main()
