"""`python -m vace_core demo`, the main job on the embedded default (tiny models, CPU):

1. the tiny DiT written in every checkpoint layout and dtype users have, each loaded back (config detected
   from the weights) and run for one forward pass;
2. two VACE tasks through the command line's task runner, from input files the demo draws: a composition
   (reference + inpaint + temporal extension) and a control task (a layout track), written as mp4 with a
   contact sheet PNG of each VCU's frames, masks and references next to the output.
"""

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from . import contact_sheet
from .checkpoints import load_vace_model, save_checkpoint
from .embedded import TINY, tiny_model, tiny_vae
from .pipeline import SamplerSettings
from .tasks import TaskInputs, run
from .video_io import write_video

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
H, W, CLIP, LENGTH = 64, 96, 5, 13
SETTINGS = SamplerSettings(steps=8, guidance=5.0, shift=16.0, seed=0)


def demo_inputs(seed: int = 0, frames: int = 3, height: int = 16, width: int = 20):
    """A latent of `frames` x height x width (a 9-frame 128x160 video), timestep, text, one VCU."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, TINY.in_dim, frames, height, width, generator=g)
    vcu = torch.randn(1, TINY.vace_in_dim, frames, height, width, generator=g)
    return x, torch.tensor([500.0]), torch.randn(1, 24, TINY.text_dim, generator=g), vcu


def checkpoint_formats(folder: Path | None = None) -> list[dict]:
    model = tiny_model()
    x, t, text, vcu = demo_inputs()
    with torch.no_grad():
        reference = model(x, t, text, [vcu], [1.0])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(folder or tmp)
        print(f"1. Checkpoint formats: tiny DiT {TINY.dim}-dim, {TINY.num_layers} blocks, context blocks after "
              f"{list(TINY.vace_layers)}; latent {tuple(x.shape)}")
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


def _scene(t: int) -> np.ndarray:
    """A drawn landscape with a red box moving right: frame t as (H, W, 3) uint8."""
    img = Image.new("RGB", (W, H))
    draw = ImageDraw.Draw(img)
    for y in range(H):
        draw.line([(0, y), (W, y)], fill=(70 + y, 130 + y, 230) if y < H * 0.6 else (60, 140 - y // 2, 50))
    draw.ellipse([W - 30, 6, W - 12, 24], fill=(255, 220, 90))
    x = 8 + 6 * t
    draw.rectangle([x, 30, x + 18, 50], fill=(200, 40, 40))
    return np.asarray(img)


def write_inputs(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    clip = torch.from_numpy(np.stack([_scene(t) for t in range(LENGTH)])).float() / 255
    paths = {name: folder / name for name in ("clip.mp4", "mask.png", "ref.png", "layout.mp4")}
    write_video(paths["clip.mp4"], clip[:CLIP], 16)
    mask = Image.new("L", (W, H))
    ImageDraw.Draw(mask).rectangle([W // 3, H // 4, 2 * W // 3, 3 * H // 4], fill=255)  # white = regenerate
    mask.save(paths["mask.png"])
    ref = Image.new("RGBA", (48, 48), (0, 0, 0, 0))  # a subject on a transparent background
    ImageDraw.Draw(ref).ellipse([6, 6, 42, 42], fill=(30, 90, 220, 255))
    ref.save(paths["ref.png"])
    layout = torch.ones(LENGTH, H, W, 3)  # VACE's layout control: a box track drawn on white
    for t in range(LENGTH):
        x = 10 + 5 * t
        layout[t, 24:44, x:x + 20] = torch.tensor([0.9, 0.2, 0.2])
    write_video(paths["layout.mp4"], layout, 16)
    return paths


def tasks(out: Path) -> Path:
    from .text import tiny_text_encoder

    inputs = write_inputs(out / "inputs")
    model, vae, text = tiny_model(), tiny_vae(), tiny_text_encoder()
    jobs = {
        "compose_ref_inpaint_extend": TaskInputs(
            prompt="a blue ball rolls over the meadow", video=str(inputs["clip.mp4"]), mask=str(inputs["mask.png"]),
            refs=[str(inputs["ref.png"])], extend_to=LENGTH, height=H, width=W),
        "control_layout": TaskInputs(prompt="a red car drives to the right", video=str(inputs["layout.mp4"]),
                                     height=H, width=W, length=LENGTH),
    }
    print(f"\n2. VACE tasks on the embedded tiny models ({SETTINGS.steps} steps, CFG {SETTINGS.guidance}; "
          "random weights, so the videos show the plumbing, not content)")
    rows = []
    for name, job in jobs.items():
        start = time.perf_counter()
        unit, video = run(job, model, vae, text, str(out / f"{name}.mp4"), SETTINGS, feather=2)
        print(f"{name:28} {unit.kind:9} {unit.length} frames {unit.size[0]}x{unit.size[1]}, "
              f"{len(unit.references)} ref -> {out / f'{name}.mp4'} ({time.perf_counter() - start:.1f} s)")
        rows += contact_sheet.rows_for(name, unit, video)
    sheet = contact_sheet.write(out / "contact_sheet.png", rows)
    print(f"contact sheet: {sheet}")
    return sheet


def main(out: str = "out/demo", checkpoints: str | None = None):
    checkpoint_formats(Path(checkpoints) if checkpoints else None)
    tasks(Path(out))
