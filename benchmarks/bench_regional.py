"""Regional prompts (ST-Layout attention): cost against the same model unmodulated, each in its own process.

    .venv/bin/python benchmarks/bench_regional.py layer   # one self-attention layer of the 1.3B shape, 832x480x81
    .venv/bin/python benchmarks/bench_regional.py step    # one CFG step (batch 2) of bench_transformer's config

`layer`: dim 1536, 12 heads, 32,760 tokens (21 x 30 x 52), batch 1, random weights, on the CPU: the peak
extra memory of one call of the modulated layer, the chunk it chose, and the L x L score matrix it never builds
(--with-plain: the unmodulated layer too, in its own process).
`step`: a whole DiT forward with batch 2 (positive + negative, as a CFG step) on bench_transformer.py's default
config (dim 512, 8 layers, 4 context blocks, latent 6x32x56), self- and cross-attention of every main block
modulated (two regions, left/right) against the same forward unmodulated.
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def regions(grid, text_dim=8, frames=None):
    """Two regions on the grid: the left half in every frame, the right third from the second latent frame."""
    import torch

    from vace_core.regional import Regions, compose_text

    t, h, w = grid
    length = frames or (t - 1) * 4 + 1
    masks = torch.zeros(2, length, h * 16, w * 16)
    masks[0, :, :, : w * 8] = 1
    masks[1, 5:, :, -(w * 16) // 3:] = 1
    ids = list(range(2, 14)) + [1]
    prompt = (ids, torch.randn(len(ids), text_dim))
    text = compose_text(prompt, [None, ([2, 3, 4, 1], torch.randn(4, text_dim)), ([8, 9, 1], torch.randn(3, text_dim))])
    return Regions(text, masks, end=1.0)


def run_layer(impl: str, args) -> dict:
    import torch

    from benchmarks.harness import measure
    from vace_core.rope import rope_angles, rope_cos_sin
    from vace_core.transformer import Attention

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    grid, dim, heads = (21, 30, 52), 1536, 12
    layer = Attention(dim, heads, 1e-6, torch.nn, {}, "sdpa").eval()
    rope = rope_cos_sin(rope_angles(grid, dim // heads), torch.float32)
    x = torch.randn(1, grid[0] * grid[1] * grid[2], dim)
    bias = regions(grid).layout(grid).biases(999.0, 0, 50, 1)["self_bias"] if impl == "regional" else None
    if bias is not None:
        bias.chunk = args.chunk

    def fn():
        with torch.no_grad():
            return layer(x, rope=rope, bias=bias)
    result = measure(fn, repeats=1, warmup=False)  # minutes per call on a CPU: one call
    length = x.shape[1]
    result["tokens"] = length
    result["lxl_mib"] = heads * length * length * 4 / 2**20
    if bias is not None:
        from vace_core.regional import chunk_rows

        result["chunk"] = args.chunk or chunk_rows(1, heads, length, 4, x.device)
    return result


def run_step(impl: str, args) -> dict:
    import torch

    from benchmarks.harness import measure
    from vace_core.config import VaceConfig
    from vace_core.transformer import VaceTransformer

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    cfg = VaceConfig(dim=512, ffn_dim=4 * 512, num_heads=4, num_layers=8, vace_layers=(0, 2, 4, 6), text_dim=4096)
    model = VaceTransformer(cfg).eval()
    T, H, W = 6, 32, 56
    grid = (T, H // 2, W // 2)
    x, vcu = torch.randn(2, 16, T, H, W), torch.randn(1, 96, T, H, W)
    rg = regions(grid, text_dim=4096)
    text = rg.text.features[None].expand(2, -1, -1)
    t = torch.tensor([999.0, 999.0])
    bias = rg.layout(grid).biases(999.0, 0, 50, 2) if impl == "regional" else {}

    def fn():
        with torch.no_grad():
            return model(x, t, text, [vcu], [1.0], **bias)
    result = measure(fn, repeats=args.repeats)
    result["tokens"] = grid[0] * grid[1] * grid[2]
    return result


def main():
    from benchmarks.harness import side_by_side

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("layer", "step"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--chunk", type=int, help="query rows per chunk (default: from free memory)")
    p.add_argument("--repeats", type=int, default=3, help="step: timed forwards after the warm-up (median)")
    p.add_argument("--with-plain", action="store_true", help="layer: also run the unmodulated layer (minutes more)")
    p.add_argument("--impl", choices=("plain", "regional"), help=argparse.SUPPRESS)
    args = p.parse_args()
    impls = ("plain", "regional") if args.what == "step" or args.with_plain else ("regional",)
    rows = side_by_side(__file__, args, run_layer if args.what == "layer" else run_step, impls=impls)
    print(f"{args.what}: {rows['regional']['tokens']} tokens, {args.threads} threads")
    print(f"{'':10}{'seconds':>10}{'peak MiB':>10}")
    for impl, r in rows.items():
        print(f"{impl:10}{r['seconds']:10.3f}{r['peak_mib']:10.1f}")
    if "plain" in rows:
        plain, regional = rows["plain"], rows["regional"]
        print(f"ratio regional/plain: time {regional['seconds'] / plain['seconds']:.2f}, "
              f"peak memory {regional['peak_mib'] / max(plain['peak_mib'], 1e-9):.2f}")
    if args.what == "layer":
        regional = rows["regional"]
        print(f"chunk {regional['chunk']} query rows; the L x L scores it never builds: {regional['lxl_mib']:.0f} MiB "
              "(12 heads, fp32, batch 1)")


if __name__ == "__main__":
    main()
