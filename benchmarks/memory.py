"""Peak resident memory of one call, measured with the kernel's high-water mark (Linux).

Writing 5 to /proc/self/clear_refs resets VmHWM, so the peak of the call alone is VmHWM after it minus
VmRSS before it. Run each implementation in its own process so allocator caches do not mix.
"""

import time
from pathlib import Path

import torch


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure(fn, repeats: int = 3) -> dict:
    """Runs fn once to warm up, then `repeats` times: median seconds and the call's peak extra memory."""
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
