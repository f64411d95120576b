"""What users run to go faster, on the pipeline benchmark's config (bench_pipeline.py's defaults): the official
50 steps at cfg 5, 8 steps at cfg 1 (the speed-LoRA recipe), and 50 steps at cfg 5 with TeaCache, TeaCache with its
context blocks run every step (context_every_step), MagCache or EasyCache.

    .venv/bin/python benchmarks/bench_fast_paths.py [--dim 256 --layers 4 --size 128 192 --frames 17 \
        --threshold 0.08 --runs cfg5_50 cfg5_50_easycache ...]

Times the sampling (the DiT evaluations; VAE encode/decode is the same for all three and left out), each in its
own subprocess, one timed run after a one-step warm-up. Reports model evaluations (one per CFG branch per step, as
TeaCache counts them; "+ N context" = evaluations that ran only the context blocks), seconds, the speed-up over the
official run, and the difference of the final latent from the official run's. The table's header also states the
context blocks' share of a forward's FLOPs (DESIGN.md's per-block count): what each skipped step of the
context-every-step row costs. The weights are random (no real checkpoint here): TeaCache uses the published Wan2.1
1.3B polynomial on them, so how many steps it skips and the difference it makes are a sanity figure for the
plumbing, not a quality or speed claim for real models; the 8-step run is a different sampling altogether
(its latent difference is shown for scale only).
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RUNS = {"cfg5_50": (50, 5.0, None), "cfg1_8": (8, 1.0, None), "cfg5_50_teacache": (50, 5.0, "teacache"),
        "cfg5_50_teacache_context": (50, 5.0, "teacache context"), "cfg5_50_magcache": (50, 5.0, "magcache"),
        "cfg5_50_easycache": (50, 5.0, "easycache")}
TITLES = {"cfg5_50": "50 steps, cfg 5 (official)", "cfg1_8": "8 steps, cfg 1",
          "cfg5_50_teacache": "50 steps, cfg 5, TeaCache",
          "cfg5_50_teacache_context": "50 steps, cfg 5, TeaCache, context blocks every step",
          "cfg5_50_magcache": "50 steps, cfg 5, MagCache", "cfg5_50_easycache": "50 steps, cfg 5, EasyCache"}


def context_share(dim: int, ffn: int, layers: int, context: int, tokens: int, streams: int = 1) -> float:
    """The context blocks' share of one forward's FLOPs (DESIGN.md section 8: every block, main or context, costs
    2 L (4 d^2 + 2 d ffn) + 4 L^2 d + cross-attention 4 L 512 d; a context block adds its after_proj, 2 L d^2)."""
    block = 2 * tokens * (4 * dim ** 2 + 2 * dim * ffn) + 4 * tokens ** 2 * dim + 4 * tokens * 512 * dim
    hints = context * streams * (block + 2 * tokens * dim ** 2)
    return hints / (layers * block + hints)


def run_one(impl: str, args) -> dict:
    import torch

    from vace_core.config import VaceConfig
    from vace_core.easycache import EasyCache
    from vace_core.magcache import MAG_RATIOS, MagCache
    from vace_core.pipeline import SamplerSettings, sample_latent
    from vace_core.step_cache import COEFFICIENTS, TeaCache
    from vace_core.transformer import VaceTransformer

    torch.set_num_threads(args.threads)
    h, w = args.size
    torch.manual_seed(0)  # the same random DiT in every run
    config = VaceConfig(dim=args.dim, ffn_dim=4 * args.dim, num_heads=args.dim // 128, num_layers=args.layers,
                        vace_layers=tuple(range(0, args.layers, 2)), text_dim=4096)
    dit = VaceTransformer(config).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    contexts = [torch.randn(1, 96, (args.frames - 1) // 4 + 1, h // 8, w // 8, generator=g)]
    positive, negative = torch.randn(1, 512, 4096, generator=g), torch.randn(1, 512, 4096, generator=g)
    steps, guidance, cached = RUNS[impl]
    cache = {"teacache": TeaCache(args.threshold, coefficients=COEFFICIENTS["t_emb", 1536]),
             "teacache context": TeaCache(args.threshold, coefficients=COEFFICIENTS["t_emb", 1536],
                                          context_every_step=True),
             "magcache": MagCache(args.mag_threshold, ratios=MAG_RATIOS[1536]),
             "easycache": EasyCache(args.easy_threshold), None: None}[cached]
    settings = SamplerSettings(steps=steps, guidance=guidance, shift=16.0, seed=1, step_cache=cache)
    warm = SamplerSettings(steps=1, guidance=guidance, shift=16.0, seed=1)
    sample_latent(dit, contexts, positive, negative, settings=warm)  # one step: allocator and kernels warm
    start = time.perf_counter()
    latent = sample_latent(dit, contexts, positive, negative, settings=settings)
    seconds = time.perf_counter() - start
    torch.save(latent, Path(args.latents) / f"{impl}.pt")
    evaluations = cache.stats.computed if cached else steps * (2 if guidance != 1 else 1)
    context_only = cache.stats.skipped if cached == "teacache context" else 0
    return {"seconds": seconds, "evaluations": evaluations, "context_only": context_only}


def main():
    import torch

    from benchmarks.harness import side_by_side

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--size", type=int, nargs=2, default=(128, 192), metavar=("H", "W"))
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--threshold", type=float, default=0.08, help="TeaCache threshold (1.3B 'fast': 0.08)")
    p.add_argument("--mag-threshold", type=float, default=0.12, help="MagCache threshold (published default 0.12)")
    p.add_argument("--easy-threshold", type=float, default=0.05, help="EasyCache threshold (published default 0.05)")
    p.add_argument("--runs", nargs="+", choices=tuple(RUNS), default=tuple(RUNS),
                   help="which runs (the official one is always run: the others are compared with it)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--latents", default=tempfile.gettempdir(), help=argparse.SUPPRESS)
    p.add_argument("--impl", choices=tuple(RUNS), help=argparse.SUPPRESS)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.impl is None:
            sys.argv += ["--latents", tmp]
        runs = ("cfg5_50", *(r for r in args.runs if r != "cfg5_50"))
        rows = side_by_side(__file__, args, run_one, impls=runs)
        latents = {k: torch.load(Path(tmp) / f"{k}.pt") for k in runs}
    base = rows["cfg5_50"]
    print(f"DiT dim {args.dim}, {args.layers} layers (random weights); {args.frames} frames {args.size[0]}x"
          f"{args.size[1]}; shift 16, UniPC; TeaCache threshold {args.threshold}, MagCache {args.mag_threshold} "
          f"(published Wan2.1 1.3B ratios), EasyCache {args.easy_threshold}; {args.threads} threads")
    tokens = ((args.frames - 1) // 4 + 1) * (args.size[0] // 16) * (args.size[1] // 16)
    share = context_share(args.dim, 4 * args.dim, args.layers, len(range(0, args.layers, 2)), tokens)
    print(f"context blocks: {share:.1%} of a forward's FLOPs here (1.3B at 832x480x81: "
          f"{context_share(1536, 8960, 30, 15, 32760):.1%}; 14B: {context_share(5120, 13824, 40, 8, 32760):.1%})")
    print("| run | model evaluations | seconds | speed-up | latent rel. diff vs official |")
    print("|---|---|---|---|---|")
    for k, row in rows.items():
        diff = ((latents[k] - latents["cfg5_50"]).norm() / latents["cfg5_50"].norm()).item()
        extra = f" + {row['context_only']} context" if row.get("context_only") else ""
        print(f"| {TITLES[k]} | {row['evaluations']}{extra} | {row['seconds']:.2f} | "
              f"{base['seconds'] / row['seconds']:.2f}x | {diff:.3g} |")


if __name__ == "__main__":
    main()
