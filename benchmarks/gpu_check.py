"""The GPU check: correctness, speed and memory of the CUDA path in one run (under 8 minutes on an H100/H200).

    .venv/bin/python benchmarks/gpu_check.py                # on a CUDA machine: make gpu-check
    .venv/bin/python benchmarks/gpu_check.py --dry-run      # every shape tiny, on CPU (what the test runs)
    .venv/bin/python benchmarks/gpu_check.py --only speed,vram --peak-tflops 989

Needs the project and a CUDA torch; random weights are made on the device at the real shapes (no downloads).
diffusers (for the side-by-side speed and VAE rows) and ComfyUI (native model, block swap, the VACE Sampler
node end to end; found from COMFYUI_PATH / COMFYUI_PYTHON) are used when present, else their rows say
"skipped". Each part (benchmarks/gpu_parts.py) runs in its own process under its own time limit, so a hang, an
out-of-memory or a crash ends that process (the driver frees its memory; a memory cap dies with it) and the
next part starts on a clean GPU. Writes report.json and report.md to --out (default out/gpu_check).
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# part -> seconds allowed on a GPU: upper bounds (13.5 min in all); estimated typical total under 8 min (unmeasured)
LIMITS = {"env": 30, "precision": 60, "noise": 20, "attention": 30, "syncs": 40, "speed": 90, "switches": 180,
          "estimate": 30, "vram": 120, "vae": 120, "e2e": 90, "load": 120}
DRY_LIMIT = 600  # per part on a CPU (a busy 2-core machine: the dry run checks the script, not the speed)
DRY_JOBS = 2  # dry-run parts running at once
COMFY_PARTS = ("vram", "e2e", "load")  # run with ComfyUI's Python when one is found (its memory manager, node API)


def child_command(part: str, args) -> list[str]:
    python = sys.executable
    if part in COMFY_PARTS:
        from tests.integration.comfy_server import find_runtime

        runtime = find_runtime()
        python = str(runtime.python) if runtime else python
    command = [python, str(Path(__file__).resolve()), "--part", part]
    return command + ["--dry-run"] * args.dry_run


def run_child(part: str, args) -> dict:
    """The part's result from a child process, or why there is none (time limit, crash)."""
    limit = DRY_LIMIT if args.dry_run else LIMITS[part]
    # glibc returns freed blocks over 64 KiB to the system at once, so CPU peaks of resident memory are real
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MALLOC_MMAP_THRESHOLD_": "65536"}
    if args.peak_tflops:
        env["GPU_CHECK_PEAK_TFLOPS"] = str(args.peak_tflops)
    start = time.perf_counter()
    proc = subprocess.Popen(child_command(part, args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole group: compile workers too
        proc.communicate()
        return {"status": f"timeout: over {limit} s (killed)", "seconds": limit}
    seconds = round(time.perf_counter() - start, 1)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (err or out).strip().splitlines()[-3:]
        return {"status": f"crashed (exit {proc.returncode})", "error": " | ".join(tail)[-600:], "seconds": seconds}
    return json.loads(lines[-1]) | {"seconds": seconds}


def markdown(report: dict) -> str:
    """The report as Markdown: one section per part, its status first, numbers as a flat table."""
    lines = [f"# GPU check ({'dry run on CPU' if report['dry_run'] else 'full'})", "",
             f"Command: `{report['command']}`  ", f"Total: {report['seconds']:.0f} s", ""]
    for part, result in report["parts"].items():
        lines += [f"## {part}: {result['status']} ({result['seconds']} s)", "", "| key | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
                  for k, v in flatten(result).items() if k not in ("status", "seconds")]
        lines.append("")
    return "\n".join(lines)


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="tiny shapes on CPU: checks the script itself")
    p.add_argument("--only", help="comma-separated parts (default: all): " + ", ".join(LIMITS))
    p.add_argument("--out", type=Path, default=ROOT / "out" / "gpu_check")
    p.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, when its name is not in the table")
    p.add_argument("--part", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.part:  # child: one part, its result as the last line
        from benchmarks.gpu_parts import run_part

        print(json.dumps(run_part(args.part, args.dry_run)), flush=True)
        return
    parts = args.only.split(",") if args.only else list(LIMITS)
    unknown = set(parts) - set(LIMITS)
    if unknown:
        p.error(f"unknown parts {sorted(unknown)}: choose from {', '.join(LIMITS)}")
    start = time.perf_counter()
    report = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "dry_run": args.dry_run, "parts": {}}
    # a dry run's parts two at a time, the longest (compiling) first: on a CPU each is mostly imports and compiling,
    # and every number checked (errors, peaks of its own process) holds whatever runs beside it; on a GPU one at a
    # time (timings, free memory). Reported in the parts' order.
    with ThreadPoolExecutor(max_workers=DRY_JOBS if args.dry_run else 1) as pool:
        started = {part: pool.submit(run_child, part, args)
                   for part in sorted(parts, key=lambda part: args.dry_run and part != "switches")}
        for part in parts:
            report["parts"][part] = result = started[part].result()
            print(f"{part:10} {result['status']} ({result['seconds']} s)", flush=True)
    report["seconds"] = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=1))
    (args.out / "report.md").write_text(markdown(report))
    print(f"report: {args.out / 'report.md'}")


if __name__ == "__main__":
    main()
