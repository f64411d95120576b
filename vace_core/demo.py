"""`python -m vace_core demo`: the embedded default written in every checkpoint layout and dtype users
have, each loaded back (config detected from the weights) and run for one forward pass."""

import tempfile
import time
from pathlib import Path

import torch

from .checkpoints import load_vace_model, save_checkpoint
from .embedded import TINY, tiny_model

# (name, layout, dtype, scaled): the files users bring, in tiny
VARIANTS = [
    ("official safetensors", "official", None, False),
    ("official sharded + index", "official_sharded", None, False),
    ("official .pth pickle", "pth", None, False),
    ("ComfyUI fp16", "official", torch.float16, False),
    ("ComfyUI bf16, prefixed", "comfy", torch.bfloat16, False),
    ("ComfyUI fp8_e4m3fn", "official", torch.float8_e4m3fn, False),
    ("ComfyUI scaled fp8", "official", torch.float8_e4m3fn, True),
    ("diffusers folder", "diffusers", None, False),
    ("diffusers single file", "diffusers_single", None, False),
]
FILE_NAMES = {"official_sharded": "sharded", "diffusers": "diffusers", "pth": "model.pth"}


def demo_inputs(seed: int = 0, frames: int = 3, height: int = 16, width: int = 20):
    """A latent of `frames` x height x width (a 9-frame 128x160 video), timestep, text, one VCU."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, TINY.in_dim, frames, height, width, generator=g)
    vcu = torch.randn(1, TINY.vace_in_dim, frames, height, width, generator=g)
    return x, torch.tensor([500.0]), torch.randn(1, 24, TINY.text_dim, generator=g), vcu


def run(folder: Path | None = None) -> list[dict]:
    model = tiny_model()
    x, t, text, vcu = demo_inputs()
    with torch.no_grad():
        reference = model(x, t, text, [vcu], [1.0])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(folder or tmp)
        print(f"VACE demo: tiny DiT {TINY.dim}-dim, {TINY.num_layers} blocks, context blocks after "
              f"{list(TINY.vace_layers)}; latent {tuple(x.shape)}; checkpoints in {folder}")
        print(f"{'format':28}{'file MiB':>10}{'load s':>9}{'forward s':>11}{'rel. diff':>11}  output")
        for name, layout, dtype, scaled in VARIANTS:
            path = save_checkpoint(model.state_dict(), folder / FILE_NAMES.get(layout, f"{layout}.safetensors"),
                                   layout, dtype, scaled=scaled, config=TINY)
            start = time.perf_counter()
            loaded = load_vace_model(path, device="cpu")
            loaded_s = time.perf_counter() - start
            start = time.perf_counter()
            with torch.no_grad():
                out = loaded(x, t, text, [vcu], [1.0])
            row = {"format": name, "mib": _size(path) / 2**20, "load_s": loaded_s,
                   "forward_s": time.perf_counter() - start,
                   "rel_diff": ((out - reference).norm() / reference.norm()).item(), "shape": tuple(out.shape)}
            rows.append(row)
            print(f"{name:28}{row['mib']:10.2f}{row['load_s']:9.3f}{row['forward_s']:11.3f}"
                  f"{row['rel_diff']:11.1e}  {row['shape']}")
    return rows


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*")) if path.is_dir() else path.stat().st_size
