"""GGUF: peak memory of loading a Q4_K file and running it, against the same model in fp16 safetensors.

Both files are written at the real shape (random weights; the Q4_K one as random valid blocks, see
tests/gguf_files.py), then each is loaded by `load_vace_model` and runs one forward in its own fresh process.
CPU: the process's resident memory (kernel high-water mark VmHWM less VmRSS before loading: weights, file pages
read and the forward), and after loading its anonymous part (memory the process owns) and file-backed part (the
mapped file, which the kernel can drop and read again), both less what the process held before. CUDA: torch's
peak allocation. "weights" is the bytes of the model's parameters and buffers (quantized blocks as stored).

    .venv/bin/python benchmarks/bench_gguf.py                    # Wan2.1-VACE-1.3B shape on the CPU
    .venv/bin/python benchmarks/bench_gguf.py --model 14B --device cuda --layers 10
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.harness import _status_kib  # noqa: E402
from vace_core.config import VACE_1_3B, VACE_14B  # noqa: E402
from vace_core.transformer import VaceTransformer  # noqa: E402

MIB = 2**20
CASES = ("fp16", "Q4_K")


def config(args):
    cfg = {"1.3B": VACE_1_3B, "14B": VACE_14B}[args.model]
    if args.layers:  # context blocks as spaced as in the release (1.3B: every 2nd block, 14B: every 5th)
        step = cfg.vace_layers[1] - cfg.vace_layers[0]
        cfg = replace(cfg, num_layers=args.layers, vace_layers=tuple(range(0, args.layers, step)))
    return cfg


def write_files(folder: Path, args) -> dict[str, Path]:
    """The model as fp16 safetensors and as Q4_K GGUF (one tensor made at a time for the GGUF file)."""
    from safetensors.torch import save_file

    sys.path.insert(0, str(ROOT / "tests"))  # tests/ is not a package (another `tests` may be installed)
    from gguf_files import write_random_gguf

    shapes = {k: v.shape for k, v in VaceTransformer(config(args), device="meta").state_dict().items()}
    paths = {"fp16": folder / "vace_fp16.safetensors", "Q4_K": folder / "vace-Q4_K.gguf"}
    g = torch.Generator().manual_seed(0)
    save_file({k: (torch.randn(s, generator=g, dtype=torch.float16) / s[-1] ** 0.5) for k, s in shapes.items()},
              paths["fp16"])
    write_random_gguf(shapes, paths["Q4_K"], "Q4_K")
    return paths


def run_case(path: str, args) -> dict:
    """In the child: load, one forward, the numbers."""
    from vace_core.checkpoints import load_vace_model

    torch.set_num_threads(2)
    device = torch.device(args.device)
    Path("/proc/self/clear_refs").write_text("5")
    base = _status_kib("VmRSS")
    before = {f: _status_kib(f) for f in ("RssAnon", "RssFile")}
    start = time.perf_counter()
    model = load_vace_model(path, device=device)
    load_s = time.perf_counter() - start
    after_load = {f: (_status_kib(f) - before[f]) / 1024 for f in before}
    weights = sum(t.nbytes for t in [*model.parameters(), *model.buffers()])
    t, h, w = args.latent
    g = torch.Generator().manual_seed(1)
    dtype = model.compute_dtype
    x = torch.randn(1, 16, t, h, w, generator=g).to(device, dtype)
    vcu = torch.randn(1, 96, t, h, w, generator=g).to(device, dtype)
    text = torch.randn(1, 64, model.config.text_dim, generator=g).to(device, dtype)
    start = time.perf_counter()
    with torch.no_grad():
        model(x, torch.tensor([500.0], device=device), text, [vcu], [1.0])
    row = {"weights_mib": weights / MIB, "peak_mib": (_status_kib("VmHWM") - base) / 1024,
           "anon_after_load_mib": after_load["RssAnon"], "file_after_load_mib": after_load["RssFile"],
           "load_s": load_s, "forward_s": time.perf_counter() - start}
    if device.type == "cuda":
        row["gpu_peak_mib"] = torch.cuda.max_memory_allocated(device) / MIB
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["1.3B", "14B"], default="1.3B")
    p.add_argument("--layers", type=int, default=0, help="main blocks (0: the release's); fewer to fit small machines")
    p.add_argument("--device", default="cpu")
    p.add_argument("--latent", type=int, nargs=3, default=(2, 30, 52), metavar=("T", "H", "W"),
                   help="latent of the forward (default: 5 frames at 416x240)")
    p.add_argument("--folder", help="keep the files here (default: a temporary folder)")
    p.add_argument("--case-file", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case_file:
        print(json.dumps(run_case(args.case_file, args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.folder or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        paths = write_files(folder, args)
        rows = {}
        for case in CASES:
            out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--case-file", str(paths[case])],
                                 capture_output=True, text=True, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows[case] = row | {"file_mib": paths[case].stat().st_size / MIB}
    cfg = config(args)
    print(f"Wan2.1-VACE {args.model} shape ({cfg.num_layers} blocks, {len(cfg.vace_layers)} context blocks) on "
          f"{args.device}, forward latent {tuple(args.latent)}")
    columns = ("file_mib", "weights_mib", "peak_mib", "anon_after_load_mib", "file_after_load_mib", "load_s",
               "forward_s", *(["gpu_peak_mib"] if args.device.startswith("cuda") else []))
    print(f"{'':6}" + "".join(f"{c:>20}" for c in columns))
    for case, row in rows.items():
        print(f"{case:6}" + "".join(f"{row[c]:20.1f}" if "mib" in c else f"{row[c]:20.2f}" for c in columns))
    ratios = {c: rows["Q4_K"][c] / rows["fp16"][c] for c in columns if "mib" in c}
    print("ratio Q4_K / fp16: " + ", ".join(f"{c.removesuffix('_mib')} {r:.2f}" for c, r in ratios.items()))


if __name__ == "__main__":
    main()
