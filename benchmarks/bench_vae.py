"""Wan2.1 VAE: peak memory and time, untiled vs tiled, ours vs diffusers' tiled AutoencoderKLWan.

Real architecture (base_dim 96), random weights. Each case runs in a fresh process, so peaks do not mix:
on CPU the peak is the process's peak RSS (`ru_maxrss`, weights included); "work" subtracts the RSS just
before the call (weights + input). On CUDA both come from torch's allocator statistics.

    .venv/bin/python benchmarks/bench_vae.py                         # 480x832, 17 frames (the issue's size)
    .venv/bin/python benchmarks/bench_vae.py --height 240 --width 416 --frames 5 --tile 128 --overlap 32
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vace_core.vae import Tiling, WanVAE  # noqa: E402

CASES = ["decode", "decode-tiled", "diffusers-decode-tiled", "encode", "encode-tiled", "diffusers-encode-tiled"]


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def build(case: str, args, device: torch.device):
    """The model and the call to time."""
    torch.manual_seed(0)
    lat_shape = (1, 16, 1 + (args.frames - 1) // 4, args.height // 8, args.width // 8)
    x = (torch.randn(lat_shape) if "decode" in case else torch.rand(1, 3, args.frames, args.height, args.width) * 2 - 1)
    x = x.to(device)
    if case.startswith("diffusers"):
        from diffusers import AutoencoderKLWan

        ref = AutoencoderKLWan().eval().to(device)
        # diffusers cuts tiles of tile px every (tile - overlap) px
        ref.enable_tiling(args.tile, args.tile, args.tile - args.overlap, args.tile - args.overlap)
        return (lambda: ref.decode(x).sample) if "decode" in case else (lambda: ref.encode(x).latent_dist.mode())
    vae = WanVAE().eval().to(device)
    tiling = Tiling(args.tile, args.overlap) if case.endswith("tiled") else None
    return (lambda: vae.decode(x, tiling=tiling)) if "decode" in case else (lambda: vae.encode(x, tiling=tiling))


def run_case(case: str, args) -> dict:
    device = torch.device(args.device)
    call = build(case, args, device)
    before = torch.cuda.memory_allocated(device) if device.type == "cuda" else rss_bytes()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    with torch.no_grad():
        out = call()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    peak = peak_bytes(device)
    return dict(case=case, seconds=seconds, peak_gib=peak / 2**30, work_gib=(peak - before) / 2**30,
                out_shape=list(out.shape))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=832)
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--tile", type=int, default=256, help="tile size in px, ours and diffusers'")
    p.add_argument("--overlap", type=int, default=64, help="tile overlap in px (diffusers: tile - stride)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--cases", nargs="+", default=CASES, choices=CASES)
    p.add_argument("--one", choices=CASES, help=argparse.SUPPRESS)  # internal: run one case in this process
    args = p.parse_args()
    if args.one:
        print(json.dumps(run_case(args.one, args)))
        return
    print(f"{args.frames}x{args.height}x{args.width}, tile {args.tile} overlap {args.overlap}, "
          f"device {args.device}, {torch.get_num_threads()} threads")
    results = {}
    for case in args.cases:
        cmd = [sys.executable, __file__, *sys.argv[1:], "--one", case]
        results[case] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        r = results[case]
        print(f"{case:24s} {r['seconds']:8.1f} s   peak {r['peak_gib']:6.2f} GiB   work {r['work_gib']:6.2f} GiB",
              flush=True)
    for mode in ("decode", "encode"):
        if {mode, f"{mode}-tiled", f"diffusers-{mode}-tiled"} <= results.keys():
            plain, tiled, ref = (results[c] for c in (mode, f"{mode}-tiled", f"diffusers-{mode}-tiled"))
            print(f"{mode}: tiled/untiled peak {tiled['peak_gib'] / plain['peak_gib']:.2f} "
                  f"(work {tiled['work_gib'] / plain['work_gib']:.2f}); "
                  f"time ours/diffusers tiled {tiled['seconds'] / ref['seconds']:.2f}")


if __name__ == "__main__":
    main()
