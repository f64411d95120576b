"""Per-frame time of each offline annotator backend at 480x832 on a clip panned over a real photo.

    .venv/bin/python benchmarks/bench_annotators.py                 # 9 frames, 480x832
    .venv/bin/python benchmarks/bench_annotators.py --frames 17 --height 720 --width 1280

Each backend runs once to warm up, then once timed over the clip; the time is divided by the frame count
(flow: by the frame count too, so it includes T-1 pairs). MediaPipe runs on CPU (XNNPACK).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from skimage import data

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from annotators.flow import DISFlow  # noqa: E402
from annotators.gray import Gray  # noqa: E402
from annotators.masks import expand, feather, hull  # noqa: E402
from annotators.masks.person import PersonMask  # noqa: E402
from annotators.pose import MediaPipePose  # noqa: E402
from annotators.scribble import Canny, XDoG  # noqa: E402


def clip(frames: int, height: int, width: int) -> torch.Tensor:
    img = cv2.resize(
        data.astronaut(), (width + 4 * frames, height + 2 * frames), interpolation=cv2.INTER_CUBIC
    )
    return (
        torch.from_numpy(
            np.stack([img[2 * i : 2 * i + height, 4 * i : 4 * i + width] for i in range(frames)])
        ).float()
        / 255
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=832)
    args = parser.parse_args()
    frames = clip(args.frames, args.height, args.width)
    mask = PersonMask()(frames)
    cases = {
        "gray": lambda: Gray()(frames),
        "canny": lambda: Canny()(frames),
        "xdog": lambda: XDoG()(frames),
        "flow DIS ultrafast": lambda: DISFlow("ultrafast")(frames),
        "flow DIS fast": lambda: DISFlow("fast")(frames),
        "flow DIS medium": lambda: DISFlow("medium")(frames),
        "pose MediaPipe (body+face+hands)": lambda: MediaPipePose(hands=True)(frames),
        "person mask MediaPipe pose": lambda: PersonMask("pose")(frames),
        "person mask MediaPipe selfie": lambda: PersonMask("selfie")(frames),
        "mask expand 10 + hull + feather 8": lambda: feather(hull(expand(mask, 10)), 8),
    }
    results = {}
    for name, run in cases.items():
        run()
        start = time.perf_counter()
        run()
        results[name] = round((time.perf_counter() - start) / args.frames * 1000, 2)
        print(f"{name:36s} {results[name]:8.2f} ms/frame", flush=True)
    print(
        json.dumps(
            {
                "size": [args.height, args.width],
                "frames": args.frames,
                "threads": torch.get_num_threads(),
                "ms_per_frame": results,
            }
        )
    )


if __name__ == "__main__":
    main()
