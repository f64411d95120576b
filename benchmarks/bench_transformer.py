"""One DiT forward pass: ours vs diffusers' WanVACETransformer3DModel, same weights, side by side.

    .venv/bin/python benchmarks/bench_transformer.py [--dim 512 --layers 8 --context-blocks 4 --latent 6 32 56]

Each implementation runs in its own subprocess (fresh allocator); the table gives median time of 3 runs
after a warm-up, and the peak extra resident memory of the forward pass (see harness.py).
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_one(impl: str, args) -> dict:
    import torch

    from benchmarks.harness import measure
    from tests.reference import diffusers_vace, reference_forward
    from vace_core.transformer import VaceTransformer

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    heads = args.dim // 128
    layers = tuple(range(0, args.layers, args.layers // args.context_blocks))
    ref, cfg, sd = diffusers_vace(heads, 128, args.layers, layers, ffn=4 * args.dim, text_dim=4096)
    T, H, W = args.latent
    x, vcu = torch.randn(1, 16, T, H, W), torch.randn(1, 96, T, H, W)
    t, text = torch.tensor([500.0]), torch.randn(1, 512, 4096)
    if impl == "ours":
        model = VaceTransformer(cfg).eval()
        model.load_state_dict(sd)
        del ref

        def fn():
            with torch.no_grad():
                return model(x, t, text, [vcu], [1.0])
    else:
        def fn():
            return reference_forward(ref, x, t, text, vcu, 1.0)
    result = measure(fn)
    result["tokens"] = T * (H // 2) * (W // 2)
    return result


def main():
    from benchmarks.harness import print_table, side_by_side

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--context-blocks", type=int, default=4)
    p.add_argument("--latent", type=int, nargs=3, default=(6, 32, 56), metavar=("T", "H", "W"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--impl", choices=("ours", "diffusers"), help=argparse.SUPPRESS)
    args = p.parse_args()
    rows = side_by_side(__file__, args, run_one)
    print_table(f"DiT forward, dim {args.dim}, {args.layers} layers, {args.context_blocks} context blocks, "
                f"{rows['ours']['tokens']} tokens, {args.threads} threads", rows)


if __name__ == "__main__":
    main()
