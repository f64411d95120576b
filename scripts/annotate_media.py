"""Run every offline annotator on the videos in ../shared/media/ and write a contact sheet per video.

    .venv/bin/python scripts/annotate_media.py                     # ../shared/media -> annotated_media/
    .venv/bin/python scripts/annotate_media.py --frames 9 --height 240 --width 416

Rows are frames (evenly spaced), columns the annotators: input, gray, canny, xdog, DIS flow, MediaPipe pose,
person mask, layout tracks of the person mask, and the hull / bbox / feather operations on that mask.
"""

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from annotators.flow import DISFlow  # noqa: E402
from annotators.gray import Gray  # noqa: E402
from annotators.layout import mask_tracks  # noqa: E402
from annotators.masks import bbox, feather, hull  # noqa: E402
from annotators.masks.person import PersonMask  # noqa: E402
from annotators.pose import MediaPipePose  # noqa: E402
from annotators.scribble import Canny, XDoG  # noqa: E402


def read_video(path: Path, frames: int, height: int, width: int) -> torch.Tensor:
    cap, out = cv2.VideoCapture(str(path)), []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(cv2.resize(frame[..., ::-1], (width, height), interpolation=cv2.INTER_AREA))
    cap.release()
    clip = np.stack(out[:frames])
    return torch.from_numpy(clip).float() / 255


def annotate(clip: torch.Tensor) -> dict[str, torch.Tensor]:
    columns, times = {"input": clip}, {}
    for name, ann in [
        ("gray", Gray()),
        ("canny", Canny()),
        ("xdog", XDoG()),
        ("flow (DIS)", DISFlow()),
        ("pose (MediaPipe)", MediaPipePose(hands=True)),
        ("person mask", PersonMask()),
    ]:
        start = time.perf_counter()
        out = ann(clip)
        times[name] = (time.perf_counter() - start) / len(clip) * 1000
        columns[name] = out if out.ndim == 4 else out[..., None].expand(*out.shape, 3)
    mask = columns["person mask"][..., 0]
    columns["layout tracks"] = mask_tracks(mask)
    for name, op in [("hull", hull), ("bbox", bbox), ("feather 15", lambda m: feather(m, 15))]:
        columns[name] = op(mask)[..., None].expand(*mask.shape, 3)
    print("  ms per frame: " + ", ".join(f"{k} {v:.1f}" for k, v in times.items()))
    return columns


def contact_sheet(columns: dict[str, torch.Tensor], rows: int) -> np.ndarray:
    t = next(iter(columns.values())).shape[0]
    picks = np.linspace(0, t - 1, rows).round().astype(int)
    tiles = []
    for name, frames in columns.items():
        col = (frames[picks].numpy() * 255).astype(np.uint8)
        col = np.concatenate(list(col), 0).copy()
        cv2.putText(col, name, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 0, 255), 2)
        tiles.append(col)
    return np.concatenate(tiles, 1)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--media", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "media"
    )
    parser.add_argument("--out", type=Path, default=Path("annotated_media"))
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--width", type=int, default=416)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for video in sorted(args.media.glob("*.mp4")):
        print(video.name)
        clip = read_video(video, args.frames, args.height, args.width)
        sheet = contact_sheet(annotate(clip), min(args.rows, len(clip)))
        target = args.out / f"{video.stem}_annotators.jpg"
        cv2.imwrite(str(target), sheet[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
        print(f"  wrote {target}")


if __name__ == "__main__":
    main()
