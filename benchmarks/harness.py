"""Benchmark harness: side-by-side runs in subprocesses, time and peak resident memory of one call.

Peak memory is measured with the kernel's high-water mark (Linux).

Writing 5 to /proc/self/clear_refs resets VmHWM, so the peak of the call alone is VmHWM after it minus
VmRSS before it. Run each implementation in its own process so allocator caches do not mix.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import torch


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure(fn, repeats: int = 3, warmup: bool = True) -> dict:
    """Runs fn once to warm up (unless told not to: calls of minutes), then `repeats` times: median seconds and
    the call's peak extra memory."""
    if warmup:
        fn()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base_gpu = torch.cuda.memory_allocated()
    Path("/proc/self/clear_refs").write_text("5")
    base = _status_kib("VmRSS")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    result = {"seconds": sorted(times)[len(times) // 2], "peak_mib": (_status_kib("VmHWM") - base) / 1024}
    if cuda:
        result["gpu_peak_mib"] = (torch.cuda.max_memory_allocated() - base_gpu) / 2**20
    return result


def side_by_side(script: str, args, run_one, impls=("diffusers", "ours")) -> dict[str, dict]:
    """Runs `run_one(impl, args)` for each implementation in its own subprocess (fresh allocator); in the
    child (called with --impl) prints that implementation's result as JSON instead."""
    if args.impl:
        print(json.dumps(run_one(args.impl, args)))
        sys.exit(0)
    rows = {}
    for impl in impls:
        out = subprocess.run([sys.executable, script, *sys.argv[1:], "--impl", impl],
                             capture_output=True, text=True, check=True)
        rows[impl] = json.loads(out.stdout.strip().splitlines()[-1])
    return rows


def print_table(title: str, rows: dict[str, dict]) -> None:
    """Seconds and peak MiB per implementation, and ours/reference ratios."""
    print(title)
    print(f"{'':10}{'seconds':>10}{'peak MiB':>10}")
    for impl, r in rows.items():
        print(f"{impl:10}{r['seconds']:10.3f}{r['peak_mib']:10.1f}")
    ours, ref = rows["ours"], rows["diffusers"]
    print(f"ratio ours/diffusers: time {ours['seconds'] / ref['seconds']:.2f}, "
          f"peak memory {ours['peak_mib'] / ref['peak_mib']:.2f}")
