"""Writes the small example media the example workflows load (example_media/, committed) from the
Apache-2.0 media in ../shared/media:

    .venv/bin/python scripts/example_media.py [--source ../shared/media]

clip: the boxing-cats video (81 frames, 16 fps) at 416x240 (half the 1.3B model's 832x480), h264 CRF 32;
first / last: its first and last frames; mask: the cat's mask at the clip's size (white = generate);
reference: the girl portrait, reference_2: the snake (RGBA, composited on white by VCU Add References).
"""

import argparse
import sys
from pathlib import Path

import av
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vace_core.example_media import FILES, MEDIA_DIR  # noqa: E402

SIZE = (416, 240)  # (width, height)
REFERENCE_SIDE = 320


def clip_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [np.asarray(f.to_image().resize(SIZE, Image.LANCZOS)) for f in container.decode(video=0)]


def write_clip(frames: list[np.ndarray], path: Path, fps: int = 16):
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = *SIZE, "yuv420p"
        stream.options = {"crf": "32", "preset": "veryslow"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def reference(path: Path) -> Image.Image:
    image = Image.open(path)
    image.thumbnail((REFERENCE_SIDE, REFERENCE_SIDE), Image.LANCZOS)
    return image


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=ROOT.parent / "shared" / "media")
    source = parser.parse_args().source
    MEDIA_DIR.mkdir(exist_ok=True)
    frames = clip_frames(source / "boxing_cats_720p_81f.mp4")
    write_clip(frames, MEDIA_DIR / FILES["clip"])
    Image.fromarray(frames[0]).save(MEDIA_DIR / FILES["first"], quality=88)
    Image.fromarray(frames[-1]).save(MEDIA_DIR / FILES["last"], quality=88)
    mask = Image.open(source / "mask_720p.png").convert("L").resize(SIZE, Image.LANCZOS)
    mask.point(lambda v: 255 if v >= 128 else 0).save(MEDIA_DIR / FILES["mask"], optimize=True)
    reference(source / "ref_girl.png").convert("RGB").save(MEDIA_DIR / FILES["reference"], quality=88)
    reference(source / "ref_snake_rgba.png").save(MEDIA_DIR / FILES["reference_2"], optimize=True)
    for name in FILES.values():
        print(MEDIA_DIR / name, (MEDIA_DIR / name).stat().st_size // 1024, "KiB")


if __name__ == "__main__":
    main()
