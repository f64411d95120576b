"""The command line (`python -m vace_core`), on the embedded tiny default."""

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from vace_core.__main__ import main
from vace_core.video_io import read_video, write_video

ROOT = Path(__file__).resolve().parents[1]


def test_run_inpaint_with_reference_writes_the_video(tmp_path):
    import torch

    clip = torch.rand(5, 32, 48, 3, generator=torch.Generator().manual_seed(0))
    write_video(tmp_path / "in.mp4", clip, 16)
    mask = np.zeros((32, 48), np.uint8)
    mask[8:24, 16:32] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    Image.fromarray(np.full((20, 20, 3), 200, np.uint8)).save(tmp_path / "ref.png")
    out = tmp_path / "out.mp4"
    main(["run", "--prompt", "a cat", "--video", str(tmp_path / "in.mp4"), "--mask", str(tmp_path / "mask.png"),
          "--ref", str(tmp_path / "ref.png"), "--width", "48", "--height", "32", "--steps", "2",
          "--composite", "0", "--out", str(out)])
    frames, fps = read_video(out)
    assert frames.shape == (5, 32, 48, 3) and fps == 16
    keep = torch.from_numpy(mask == 0)
    # kept pixels pasted back: equal to the input up to the codec's loss
    assert (frames[:, keep] - read_video(tmp_path / "in.mp4")[0][:, keep]).abs().mean() < 0.03


def test_bad_input_is_a_message_not_a_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "vace_core", "run", "--mask", "m.png", "--steps", "1",
                             "--out", str(tmp_path / "x.mp4")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == "error: --mask and --outpaint edit a video: give it with --video"
    assert "Traceback" not in result.stderr
    missing = subprocess.run([sys.executable, "-m", "vace_core", "info", str(tmp_path / "none.safetensors")],
                             cwd=ROOT, capture_output=True, text=True)
    assert missing.returncode != 0 and "none.safetensors" in missing.stderr and "Traceback" not in missing.stderr


def test_run_long_video_streams_each_window_to_the_file(tmp_path, monkeypatch):
    """`run --length N` longer than `--window`: long video, each window's frames written as they are final."""
    from vace_core import tasks

    writes = []

    class Recording(tasks.VideoStream):
        def write(self, frames):
            writes.append(len(frames))
            super().write(frames)
    monkeypatch.setattr(tasks, "VideoStream", Recording)
    out = tmp_path / "long.mp4"
    main(["run", "--prompt", "a fox", "--length", "17", "--window", "9", "--overlap", "5", "--mode", "autoregressive",
          "--width", "16", "--height", "16", "--steps", "1", "--cfg", "1", "--out", str(out)])
    assert writes == [9, 4, 4]  # windows (0, 9), (4, 13), (8, 17), written as each finished
    frames, fps = read_video(out)
    assert frames.shape == (17, 16, 16, 3) and fps == 16


def test_bad_long_video_flags_are_a_message(tmp_path):
    result = subprocess.run([sys.executable, "-m", "vace_core", "run", "--length", "161", "--window", "80",
                             "--out", str(tmp_path / "x.mp4")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: window 80: a window is 4n+1 frames")
