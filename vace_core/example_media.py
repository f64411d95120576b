"""The example workflows' media (example_media/, small Apache-2.0 files) copied into ComfyUI's input folder
when the pack loads, so the native Load Image / Load Video nodes of every example find them on the first
Run. A file already there is never overwritten (the user's own file of that name wins)."""

import logging
import shutil
from pathlib import Path

MEDIA_DIR = Path(__file__).resolve().parents[1] / "example_media"  # the pack root's
FILES = {
    "clip": "vace_example_clip.mp4",
    "first": "vace_example_first.jpg",
    "last": "vace_example_last.jpg",
    "mask": "vace_example_mask.png",
    "reference": "vace_example_reference.jpg",
    "reference_2": "vace_example_reference_2.png",
}

log = logging.getLogger("vace")


def install(input_dir: str | Path) -> list[Path]:
    """Copies the example media missing from `input_dir`; returns the files copied."""
    input_dir = Path(input_dir)
    copied = []
    for name in FILES.values():
        target = input_dir / name
        if target.exists() or not (MEDIA_DIR / name).is_file():
            continue
        try:
            input_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(MEDIA_DIR / name, target)
            copied.append(target)
        except OSError as e:  # a read-only input folder: the examples then need the user's own files
            log.warning("VACE: could not copy the example media %s into %s: %s", name, input_dir, e)
    return copied
