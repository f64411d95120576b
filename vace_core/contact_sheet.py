"""A contact sheet PNG: for each VCU its frames, masks and references, next to the output video."""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .vcu import VCU, to_images

THUMB = 128
COLUMNS = 6


def _thumb(frame: np.ndarray) -> Image.Image:
    """(H, W, 3) or (H, W) floats in 0..1 -> a thumbnail THUMB px high."""
    img = Image.fromarray((np.clip(frame, 0, 1) * 255).round().astype(np.uint8))
    img = img.convert("RGB").resize((max(1, round(img.width * THUMB / img.height)), THUMB))
    ImageDraw.Draw(img).rectangle([0, 0, img.width - 1, img.height - 1], outline=(160, 160, 160))  # white masks show
    return img


def _picks(count: int) -> list[int]:
    return sorted({round(i * (count - 1) / (COLUMNS - 1)) for i in range(COLUMNS)}) if count > 1 else [0]


def _row(label: str, frames: list[np.ndarray]) -> tuple[str, list[Image.Image]]:
    return label, [_thumb(frames[i]) for i in _picks(len(frames))] if frames else []


def rows_for(name: str, vcu: VCU, output) -> list[tuple[str, list[Image.Image]]]:
    """Rows: VCU frames, masks, references, output frames. output: (3, T, H, W) in [-1, 1]."""
    pixels = lambda v: list(to_images(v).numpy())  # noqa: E731
    return [
        _row(f"{name}: frames F", pixels(vcu.frames)),
        _row(f"{name}: masks M (white = generate)", list(vcu.masks.float().numpy())),
        (f"{name}: references", [_thumb(to_images(r[:, None])[0].numpy()) for r in vcu.references]),
        _row(f"{name}: output", pixels(output)),
    ]


def write(path: str | Path, rows: list[tuple[str, list[Image.Image]]]) -> Path:
    label_h, pad = 18, 4
    rows = [(label, thumbs) for label, thumbs in rows if thumbs]
    width = max(sum(t.width + pad for t in thumbs) for _, thumbs in rows) + pad
    sheet = Image.new("RGB", (width, len(rows) * (THUMB + label_h + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    y = pad
    for label, thumbs in rows:
        draw.text((pad, y), label, fill="black")
        x = pad
        for thumb in thumbs:
            sheet.paste(thumb, (x, y + label_h))
            x += thumb.width + pad
        y += THUMB + label_h + pad
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
