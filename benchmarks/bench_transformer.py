"""One DiT forward pass: ours vs diffusers' WanVACETransformer3DModel, same weights, side by side.

    .venv/bin/python benchmarks/bench_transformer.py [--dim 512 --layers 8 --context-blocks 4 --latent 6 32 56]

Each implementation runs in its own subprocess (fresh allocator); the table gives median time of 3 runs
after a warm-up, and the peak extra resident memory of the forward pass (see memory.py).
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_one(impl: str, args) -> dict:
    import torch

    from benchmarks.memory import measure
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
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--context-blocks", type=int, default=4)
    p.add_argument("--latent", type=int, nargs=3, default=(6, 32, 56), metavar=("T", "H", "W"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--impl", choices=("ours", "diffusers"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.impl:
        print(json.dumps(run_one(args.impl, args)))
        return
    rows = {}
    for impl in ("diffusers", "ours"):
        out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--impl", impl],
                             capture_output=True, text=True, check=True)
        rows[impl] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"DiT forward, dim {args.dim}, {args.layers} layers, {args.context_blocks} context blocks, "
          f"{rows['ours']['tokens']} tokens, {args.threads} threads")
    print(f"{'':10}{'seconds':>10}{'peak MiB':>10}")
    for impl, r in rows.items():
        print(f"{impl:10}{r['seconds']:10.3f}{r['peak_mib']:10.1f}")
    print(f"ratio ours/diffusers: time {rows['ours']['seconds'] / rows['diffusers']['seconds']:.2f}, "
          f"peak memory {rows['ours']['peak_mib'] / rows['diffusers']['peak_mib']:.2f}")


if __name__ == "__main__":
    main()
