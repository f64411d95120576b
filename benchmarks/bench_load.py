"""Loading a VACE checkpoint: ours vs diffusers vs ComfyUI, time and memory, each loader in a fresh process.

    .venv/bin/python benchmarks/bench_load.py --shape 1.3B                   # the 1.3B shape (8 GB in fp32)
    .venv/bin/python benchmarks/bench_load.py --shape dev --dtypes fp16      # 1.3B width, 4 blocks (develop)

For each file dtype (fp32, fp16, ComfyUI scaled fp8) the script writes random weights in three layouts, one
tensor at a time (never a whole state dict in memory): a single ComfyUI-style file, a diffusers sharded folder
(diffusers' own layout, 4 shards) and a VACE module file + its T2V base. Each loader then loads each layout on
the CPU, keeping the file's dtype, in its own process:
- ours: `load_vace_model(path[, base])`;
- diffusers: `WanVACETransformer3DModel.from_single_file` (single file) or `from_pretrained` (sharded folder);
- ComfyUI: `comfy.sd.load_diffusion_model`, run in ComfyUI's Python (COMFYUI_PATH / COMFYUI_PYTHON, else
  ~/.cache/vace-comfyui); ComfyUI reads single files only.
Neither reference merges a module onto a base: their module + base rows load the equivalent single file.
Per load: seconds until the loader returns; for ours, seconds until its NaN/inf check (left running in the
background, vace_core.checkpoints.finite) is done, measured by waiting for it right after the load (a sampler
waits for it only before its first step, after encoding text and VCUs); seconds to read every weight byte once
more (what a first forward pays for pages the loader did not read: diffusers reads none, our check reads each
once; for ours this runs after the check, so it reads pages already mapped, and ours' time until every byte was
read once is the check's); peak resident memory above the process before the call, at the load's return (VmHWM
after clearing it);
the anonymous / file-backed memory the process holds then (RssAnon / RssFile); ratios ours / reference; the load
average at the start and the end (the machine may be shared).
Files go to --dir (default /tmp/vace_bench_load) and are deleted after each dtype unless --keep.
"""

import argparse
import functools
import gc
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DTYPES = ("fp32", "fp16", "scaled_fp8")
LAYOUTS = ("single", "sharded", "module_base")
LOADERS = ("ours", "diffusers", "comfyui")
SHARDS = 4
MIB = 2**20


# ------------------------------------------------------------------------------------------- measuring (child)
def status() -> dict:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {k: int(fields[k].split()[0]) * 1024 for k in ("VmRSS", "VmHWM", "RssAnon", "RssFile")}


def measure(load) -> dict:
    """One call of load(): seconds, peak resident bytes above the start, anonymous / file bytes held after."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = status()
    start = time.perf_counter()
    model = load()
    seconds = time.perf_counter() - start
    after = status()
    checked = getattr(model, "weights_checked", None)  # ours: the NaN/inf check left running in the background
    if checked is not None:
        checked()
    return {"seconds": seconds, "checked_seconds": time.perf_counter() - start if checked else None,
            "read_seconds": read_every_byte(model), "peak": after["VmHWM"] - before["VmRSS"],
            "anon": after["RssAnon"] - before["RssAnon"], "file_rss": after["RssFile"] - before["RssFile"]}


def read_every_byte(model) -> float:
    """Seconds to read each weight byte once after loading: what the first forward pays for pages a loader did not
    read (diffusers reads none at load time, we read each once for the NaN/inf check)."""
    module = model if isinstance(model, torch.nn.Module) else model.model  # ComfyUI: a ModelPatcher
    start = time.perf_counter()
    for tensor in module.state_dict().values():
        if tensor.numel():
            tensor.reshape(-1).view(torch.uint8).amax()
    return time.perf_counter() - start


def load_ours(path: str, base: str | None, torch_dtype):
    from vace_core.checkpoints import load_vace_model

    return lambda: load_vace_model(path, base, device="cpu")


def load_diffusers(path: str, config_dir: str, torch_dtype):
    from diffusers import WanVACETransformer3DModel

    if Path(path).is_dir():
        return lambda: WanVACETransformer3DModel.from_pretrained(path, torch_dtype=torch_dtype)
    return lambda: WanVACETransformer3DModel.from_single_file(path, config=config_dir, torch_dtype=torch_dtype,
                                                              local_files_only=True)


def load_comfyui(path: str, torch_dtype):
    """ComfyUI's diffusion-model loader on the CPU, weights in the file's dtype (scaled fp8: its own choice)."""
    comfy_path = os.environ["COMFYUI_PATH"]
    sys.path.insert(0, comfy_path)
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # before model_management reads it
    import comfy.sd

    options = {} if torch_dtype is None else {"dtype": torch_dtype}
    return lambda: comfy.sd.load_diffusion_model(path, model_options=options)


def child(args) -> dict:
    torch_dtype = {"fp32": torch.float32, "fp16": torch.float16, "scaled_fp8": None}[args.dtype]
    if args.loader == "ours":
        load = load_ours(args.path, args.base, torch_dtype)
    elif args.loader == "diffusers":
        load = load_diffusers(args.path, args.config_dir, torch_dtype or torch.float8_e4m3fn)
    else:
        load = load_comfyui(args.path, torch_dtype)
    return measure(load)


# --------------------------------------------------------------------------------------- writing files (parent)
def model_config(shape: str):
    from vace_core.config import VACE_1_3B, VaceConfig

    if shape == "1.3B":
        return VACE_1_3B
    return VaceConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=4, vace_layers=(0, 2))


def tensor_specs(cfg, dtype: str) -> list[tuple[str, tuple, object]]:
    """(official key, shape, torch dtype) of every tensor the file holds, scales and marker included."""
    from vace_core.transformer import VaceTransformer

    specs = []
    for key, meta in VaceTransformer(cfg, device="meta").state_dict().items():
        matrix = key.endswith(".weight") and meta.ndim == 2
        if dtype == "scaled_fp8" and matrix:
            specs += [(key, tuple(meta.shape), torch.float8_e4m3fn), (key[:-7] + ".scale_weight", (), torch.float32)]
        else:
            specs.append((key, tuple(meta.shape), torch.float16 if dtype == "fp16" else torch.float32))
    if dtype == "scaled_fp8":
        specs.append(("scaled_fp8", (0,), torch.float8_e4m3fn))
    return specs


POOL = 2**24 + 7  # N(0, 1) values drawn once; tensors take windows of it (randn of 2 billion values takes minutes)


@functools.cache
def normal_pool() -> torch.Tensor:
    return torch.randn(POOL, generator=torch.Generator().manual_seed(0))


def normal_values(n: int, seed: int) -> torch.Tensor:
    """n standard normal values: a window of a pool drawn once, starting at a place set by `seed`."""
    start = seed * 7919 % POOL
    return normal_pool().repeat(-(-(start + n) // POOL))[start:start + n]


def make_tensor(key: str, shape: tuple, dtype, seed: int, shapes: dict):
    """Random weights like trained layers (N(0, 1/fan_in)); fp8 matrices as ComfyUI writes them: weight / scale
    in fp8 with a float32 scale, here the one mapping 5 standard deviations to the fp8 maximum."""
    fp8_max = torch.finfo(torch.float8_e4m3fn).max
    if key.endswith(".scale_weight"):
        return torch.tensor(5 / math.sqrt(shapes[key[:-13] + ".weight"][-1]) / fp8_max)
    std = 1 / math.sqrt(shape[-1] if len(shape) > 1 else 64)
    value = normal_values(math.prod(shape), seed).reshape(shape) * std
    if dtype == torch.float8_e4m3fn:
        return (value / (5 * std / fp8_max)).clamp(-fp8_max, fp8_max).to(dtype)
    return value.to(dtype)


SAFETENSORS_NAMES = {"float32": "F32", "float16": "F16", "float8_e4m3fn": "F8_E4M3"}


class StreamedSafetensors:
    """A safetensors file written tensor by tensor: the header (offsets from the shapes) first, then the data."""

    def __init__(self, path: Path, specs: list):
        self.path, self.keys = path, {key for key, _, _ in specs}
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for key, shape, dtype in specs:
            nbytes = math.prod(shape) * dtype.itemsize
            header[key] = {"dtype": SAFETENSORS_NAMES[str(dtype).removeprefix("torch.")], "shape": list(shape),
                           "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
        text = json.dumps(header).encode()
        text += b" " * (-len(text) % 8)  # data 8-byte aligned, as the safetensors library writes it
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path.open("wb")
        self.file.write(len(text).to_bytes(8, "little") + text)

    def write(self, value) -> None:
        self.file.write(value.reshape(-1).view(torch.uint8).numpy().data)


def write_files(cfg, dtype: str, folder: Path, layouts=LAYOUTS) -> dict:
    """`layouts` of one random model in `dtype` (the single file always: the references' module + base rows
    read it), written in one pass over its tensors. Returns the paths."""
    from vace_core.checkpoints.keymap import is_vace_module_key, official_to_diffusers_name
    from vace_core.checkpoints.save import diffusers_config_json

    specs = sorted(tensor_specs(cfg, dtype), key=lambda s: -s[2].itemsize)  # aligned: wide dtypes first
    total = sum(math.prod(shape) * dt.itemsize for _, shape, dt in specs)
    shard_of, size, shard = {}, 0, 0
    for key, shape, dt in specs:
        if size > (shard + 1) * total / SHARDS:
            shard += 1
        shard_of[key] = shard
        size += math.prod(shape) * dt.itemsize
    n = shard + 1
    names = [f"diffusion_pytorch_model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    diffusers_key = {k: k if k == "scaled_fp8" else official_to_diffusers_name(k) for k, _, _ in specs}
    paths = {"single": folder / "vace.safetensors", "sharded": folder / "diffusers",
             "module": folder / "vace_module.safetensors", "base": folder / "t2v.safetensors"}
    module_keys = {k for k, _, _ in specs if is_vace_module_key(k) or k == "scaled_fp8"}
    writers = {"single": StreamedSafetensors(paths["single"], specs)}
    if "module_base" in layouts:
        writers |= {"module": StreamedSafetensors(paths["module"], [s for s in specs if s[0] in module_keys]),
                    "base": StreamedSafetensors(paths["base"], [s for s in specs if s[0] not in module_keys or
                                                                s[0] == "scaled_fp8"])}
    shards = [StreamedSafetensors(paths["sharded"] / name, [(diffusers_key[k], s, d) for k, s, d in specs
                                                            if shard_of[k] == i])
              for i, name in enumerate(names)] if "sharded" in layouts else []
    shapes = {key: shape for key, shape, _ in specs}
    for seed, (key, shape, dt) in enumerate(specs):
        value = make_tensor(key, shape, dt, seed, shapes)
        if shards:
            shards[shard_of[key]].write(value)
        for writer in writers.values():
            if key in writer.keys:
                writer.write(value)
    for writer in (*writers.values(), *shards):
        writer.file.close()
    config = json.dumps(diffusers_config_json(cfg))
    if shards:
        index = {"metadata": {"total_size": total},
                 "weight_map": {diffusers_key[k]: names[shard_of[k]] for k in shard_of}}
        (paths["sharded"] / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
        (paths["sharded"] / "config.json").write_text(config)
    (folder / "config" / "transformer").mkdir(parents=True)  # from_single_file's config=: a model folder
    (folder / "config" / "transformer" / "config.json").write_text(config)
    (folder / "config" / "config.json").write_text(config)
    return paths | {"config": folder / "config", "bytes": total}


# ----------------------------------------------------------------------------------------------- running (parent)
def comfy_runtime():
    """The test suite's ComfyUI runtime, its module loaded by path (site-packages may hold another `tests`)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("comfy_server", ROOT / "tests" / "integration" / "comfy_server.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.find_runtime()


# resident peak per file byte each loader needs (measured at the dev shape), to skip a load the RAM cannot hold
PEAK_PER_BYTE = {"ours": 1.1, "diffusers": 1.1, "comfyui": 2.1}
RAM_MARGIN = 3 * 2**30  # left to the rest of the machine (other processes share it)


def available_ram() -> int:
    fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return int(fields["MemAvailable"].split()[0]) * 1024


def run_child(loader: str, dtype: str, path: Path, base: Path | None, config: Path, size: int) -> dict:
    """One load in a fresh process; an error (e.g. a format the loader cannot read) is a row, not a crash."""
    needed = PEAK_PER_BYTE[loader] * size + RAM_MARGIN
    if available_ram() < needed:
        return {"error": f"skipped: needs about {needed / 2**30:.1f} GiB, {available_ram() / 2**30:.1f} available"}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MALLOC_MMAP_THRESHOLD_": "65536"}
    python = sys.executable
    if loader == "comfyui":
        runtime = comfy_runtime()
        if runtime is None:
            return {"error": "no ComfyUI runtime"}
        python, env["COMFYUI_PATH"] = str(runtime.python), str(runtime.path)
    command = [python, str(Path(__file__).resolve()), "--child", loader, "--dtype", dtype, "--path", str(path),
               "--config-dir", str(config)] + (["--base", str(base)] if base else [])
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or not lines:
        return {"error": (out.stderr.strip().splitlines() or [f"exit {out.returncode}"])[-1][:160]}
    return json.loads(lines[-1])


def targets(layout: str, loader: str, paths: dict) -> tuple[Path, Path | None, str] | None:
    """(path, base, note) a loader reads for a layout; None where it has no way to."""
    if layout == "single":
        return paths["single"], None, ""
    if layout == "sharded":
        return None if loader == "comfyui" else (paths["sharded"], None, "")
    if loader == "ours":
        return paths["module"], paths["base"], ""
    return paths["single"], None, "the equivalent single file"


def bench_dtype(args, cfg, dtype: str) -> list[dict]:
    folder = args.dir / dtype
    shutil.rmtree(folder, ignore_errors=True)
    start = time.perf_counter()
    paths = write_files(cfg, dtype, folder, args.layouts)
    os.sync()  # the first load must not wait for the written files' writeback (it did: 15 s for 4 GiB)
    print(f"{dtype}: wrote {paths['bytes'] / 2**30:.2f} GiB per layout ({', '.join(args.layouts)}) in "
          f"{time.perf_counter() - start:.0f} s",
          flush=True)
    rows = []
    try:
        for layout in args.layouts:
            for loader in args.loaders:
                target = targets(layout, loader, paths)
                if target is None:
                    rows.append({"dtype": dtype, "layout": layout, "loader": loader,
                                 "error": "cannot read this layout"})
                    continue
                path, base, note = target
                row = {"dtype": dtype, "layout": layout, "loader": loader, "note": note, "file": paths["bytes"]}
                rows.append(row | run_child(loader, dtype, path, base, paths["config"], paths["bytes"]))
                print(format_row(rows[-1]), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return rows


def format_row(r: dict) -> str:
    if "error" in r:
        return f"| {r['dtype']} | {r['layout']} | {r['loader']} | n/a: {r['error']} | | | | | |"
    f = r["file"]
    checked = "-" if r.get("checked_seconds") is None else f"{r['checked_seconds']:.2f}"
    return (f"| {r['dtype']} | {r['layout']} | {r['loader']}{' (' + r['note'] + ')' if r.get('note') else ''} | "
            f"{r['seconds']:.2f} | {checked} | {r['seconds'] + r['read_seconds']:.2f} | "
            f"{r['peak'] / MIB:.0f} ({r['peak'] / f:.2f}x) | "
            f"{r['anon'] / MIB:.0f} ({r['anon'] / f:.1%}) | {r['file_rss'] / MIB:.0f} |")


def ratios(rows: list[dict]) -> list[str]:
    """ours / reference, time and peak, per dtype and layout."""
    lines = ["| dtype | layout | reference | load time ours/ref | every byte read: check done ours / load + first "
             "read ref | peak ours/ref | anonymous after ours/ref |", "|---|---|---|---|---|---|---|"]
    ours = {(r["dtype"], r["layout"]): r for r in rows if r["loader"] == "ours" and "error" not in r}
    for r in rows:
        mine = ours.get((r["dtype"], r["layout"]))
        if r["loader"] != "ours" and mine and "error" not in r:
            read = mine["checked_seconds"] / (r["seconds"] + r["read_seconds"])
            lines.append(f"| {r['dtype']} | {r['layout']} | {r['loader']} | {mine['seconds'] / r['seconds']:.2f} | "
                         f"{read:.2f} | {mine['peak'] / r['peak']:.2f} | {mine['anon'] / max(r['anon'], MIB):.2f} |")
    return lines


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=("dev", "1.3B"), default="dev")
    p.add_argument("--dtypes", default=",".join(DTYPES))
    p.add_argument("--layouts", default=",".join(LAYOUTS))
    p.add_argument("--loaders", default=",".join(LOADERS))
    p.add_argument("--dir", type=Path, default=Path("/tmp/vace_bench_load"))
    p.add_argument("--keep", action="store_true", help="keep the written files")
    p.add_argument("--out", type=Path, default=ROOT / "out" / "bench_load.json")
    for name in ("child", "path", "base", "dtype", "config-dir"):
        p.add_argument(f"--{name}", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        args.loader = args.child
        print(json.dumps(child(args)), flush=True)
        return
    args.layouts, args.loaders = args.layouts.split(","), args.loaders.split(",")
    cfg = model_config(args.shape)
    args.load_at_start = Path("/proc/loadavg").read_text().split()[:3]
    header = ["| dtype | layout | loader | load s | check done s | load + first read s | peak MiB (x file) | "
              "anonymous after MiB (% of file) | file-backed after MiB |", "|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(header), flush=True)
    rows = [row for dtype in args.dtypes.split(",") for row in bench_dtype(args, cfg, dtype)]
    table = "\n".join(header + [format_row(r) for r in rows] + [""] + ratios(rows))
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"\n{table}\n\nload average at the end: {' '.join(load)} (at the start: {' '.join(args.load_at_start)})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": " ".join(sys.argv), "shape": args.shape, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
