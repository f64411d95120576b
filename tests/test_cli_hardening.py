"""The command line validated like the nodes (issue 22): the memory check and a size check before work, a
warning for hours of work, one clear line for every mistake found trying it as a new user, each before any model
loads (the embedded model's loader is made to fail, so a check that came late would show)."""

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vace_core.embedded
from vace_core import preflight
from vace_core.__main__ import main
from vace_core.video_io import write_video

ROOT = Path(__file__).resolve().parents[1]
GIB = 2**30


def cli_error(*args: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    return str(exit_.value)


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model is work: every check here must come first."""
    def refuse(*_, **__):
        raise AssertionError("a model was loaded before the check")
    monkeypatch.setattr(vace_core.embedded, "tiny_model", refuse)


@pytest.fixture
def clip(tmp_path) -> str:
    path = tmp_path / "clip.mp4"
    write_video(path, torch.rand(5, 64, 64, 3, generator=torch.Generator().manual_seed(0)), 16)
    return str(path)


def run(*args: str, out: Path) -> str:
    return cli_error("run", "--width", "64", "--height", "64", "--steps", "1", *args, "--out", str(out))


def test_the_frames_memory_is_checked_before_work(tmp_path, clip, no_model, monkeypatch, capsys):
    monkeypatch.setattr(preflight, "free_memory", lambda device: 4 * GIB)
    assert run("--video", clip, "--extend-to", "100001", out=tmp_path / "x.mp4") == (
        "error: 100001 frames at 64x64 need about 30.5 GiB of RAM for the frames, masks and output video, but 4.0 GiB "
        "are free. Generate fewer frames (--length / --extend-to) or a smaller size (--width/--height; VACE was "
        "trained at 832x480 and 1280x720, 81 frames)")
    # --length holds the node's range (at most 1025 frames) before any estimate
    assert run("--length", "100000", out=tmp_path / "x.mp4") == "2"  # argparse prints the node's range, exits 2
    assert "argument --length: 100000 is outside the range from 1 to 1025 (as on the node)" in capsys.readouterr().err
    assert run("--length", "1025", "--width", "1280", "--height", "720", out=tmp_path / "x.mp4").startswith(
        "error: 1025 frames at 1280x720 need about")
    assert not (tmp_path / "x.mp4").exists()


PEAK = """
import sys, torch
from vace_core.long_video import _Output
from vace_core.tasks import TaskInputs, build_vcu
from vace_core.video_io import write_video
T, H, W = 1001, 128, 128
inputs = TaskInputs(length=T, width=W, height=H)
if sys.argv[1] == "extension":
    write_video(sys.argv[2], torch.rand(9, H, W, 3), 16)
    inputs = TaskInputs(video=sys.argv[2], extend_to=T, width=W, height=H)
def status(key):  # KiB
    return int(next(line for line in open("/proc/self/status") if line.startswith(key)).split()[1])
open("/proc/self/clear_refs", "w").write("5")  # the peak (VmHWM) restarts here: the imports' own peak is not counted
before = status("VmRSS:")
unit, _ = build_vcu(inputs)
output = _Output(unit.length, unit.size)  # the long-video output the frames are written into...
output.video += 1  # ...all of it (zeros are only resident once written)
print((status("VmHWM:") - before) * 1024 / (T * H * W))
"""


@pytest.mark.parametrize("task,least", [("text", 0), ("extension", 48)])
def test_the_frames_estimate_covers_what_is_allocated(tmp_path, task, least):
    """Peak RSS of building the VCU and the output video, per output pixel, measured in a fresh process: within
    the estimate; an extension (three full-length VCUs) not far below it. Text-to-video holds the VCU (16 B/px) and
    the output (12). The peak is counted from just before the build (VmHWM reset through /proc/self/clear_refs)."""
    measured = float(subprocess.run([sys.executable, "-c", PEAK, task, str(tmp_path / "clip.mp4")], cwd=ROOT,
                                    capture_output=True, text=True, check=True).stdout.split()[-1])
    assert least < measured <= preflight.RUN_BYTES_PER_PIXEL, measured


def warnings_before_loading(caplog, *args: str) -> str:
    """What `run ARGS` warns before it loads a model (the no_model fixture stops it there)."""
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vace"), pytest.raises(AssertionError, match="a model was loaded"):
        main(["run", "--width", "64", "--height", "64", *args])
    return caplog.text


def test_hours_of_work_are_announced_before_they_start(tmp_path, no_model, caplog):
    text = warnings_before_loading(caplog, "--length", "1025", "--out", str(tmp_path / "x.mp4"))
    assert ("VACE: 1025 frames is 14 windows of 81 frames, 700 sampling steps in all: 14x the work of one video "
            "(the official 1.3B takes about 5 min per window at 832x480 on an A100): hours of work. Press Ctrl-C to "
            "stop; the output file is only written when the run finishes.") in text
    text = warnings_before_loading(caplog, "--length", "161", "--out", str(tmp_path / "x.mp4"))
    assert "hours of work" not in text  # two windows: no alarm


def test_sizes_far_from_training_are_refused_before_work(tmp_path, clip, no_model):
    assert run("--video", clip, "--outpaint", "4096", "4096", "4096", "4096", out=tmp_path / "x.mp4") == (
        "error: outpainting 64x64 by 4096, 4096, 4096, 4096 px (left, right, top, bottom) makes 8256x8256 frames, "
        "74x the pixels of the largest size VACE was trained at (1280x720 for the 14B, 832x480 for the 1.3B): it has "
        "never seen frames near that size, and attention memory grows with the square of the pixels. Stay within "
        "3.7 megapixels (e.g. 2560x1440), ideally 1280x720 or 832x480.")
    line = cli_error("run", "--width", "4096", "--height", "4096", "--out", str(tmp_path / "x.mp4"))
    assert line.startswith("error: --width 4096 --height 4096 makes 4096x4096 frames, 18x the pixels")


def test_extend_to_says_the_clips_real_length(tmp_path, clip, no_model):
    for extend_to in ("3", "5", "8"):
        assert run("--video", clip, "--extend-to", extend_to, out=tmp_path / "x.mp4") == (
            f"error: --extend-to {extend_to}: the clip has 5 frames, and --extend-to is the length of the whole "
            "extended video (4n+1; other counts are rounded down), so it must be more than 5: give 9 or more "
            "(e.g. 81)")


def test_convert_to_a_path_that_cannot_be_written_is_one_line(tmp_path):
    from safetensors.torch import save_file

    src = tmp_path / "src.safetensors"
    save_file({"head.head.weight": torch.zeros(4, 4)}, src)
    (tmp_path / "a_file").write_text("")
    dst = tmp_path / "a_file" / "out.safetensors"
    line = cli_error("convert", str(src), str(dst))
    assert line.startswith(f"error: cannot write {dst}: its folder cannot be created (") and "\n" not in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "src.safetensors"]


TORCHRUN = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}


def test_torchrun_without_a_parallel_flag_is_refused(tmp_path, no_model, monkeypatch):
    for name, value in TORCHRUN.items():
        monkeypatch.setenv(name, value)
    assert run(out=tmp_path / "x.mp4") == (
        "error: this process was started by torchrun (RANK and WORLD_SIZE are set) without --parallel, --cfg-parallel "
        "or --fsdp: every process would sample the whole video and write the same file. Add --parallel usp (split "
        "each video over the processes), or run without torchrun")


@pytest.mark.parametrize("flags", [(), ("--parallel", "usp")])
def test_rank_and_world_size_without_master_addr_is_one_line(tmp_path, no_model, monkeypatch, flags):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert run(*flags, out=tmp_path / "x.mp4") == (
        "error: RANK and WORLD_SIZE are set but MASTER_ADDR and MASTER_PORT are not: start the processes with "
        "torchrun (torchrun --nproc-per-node N -m vace_core run ... --parallel usp), which sets them all, or set "
        "MASTER_ADDR and MASTER_PORT (the address and a free port of the rank-0 machine)")


@pytest.mark.parametrize("flags,named", [
    (("--model-low", "low.safetensors"), "--model-low sets"),
    (("--boundary", "0.9"), "--boundary sets"),
    (("--cfg-low", "3", "--boundary", "0.9"), "--boundary, --cfg-low set"),
])
def test_expert_flags_without_model_are_refused(tmp_path, no_model, flags, named):
    assert run(*flags, out=tmp_path / "x.mp4") == (
        f"error: {named} up the model given with --model (Wan2.2: --model is the high-noise expert, --model-low the "
        "low-noise one), but there is no --model: the embedded tiny default would run and ignore them. Give --model, "
        "or drop them")


def test_expert_flags_with_one_model_are_refused(tmp_path, no_model):
    line = run("--model", str(tmp_path / "vace.safetensors"), "--vae", "vae.safetensors", "--text-encoder", "t5",
               "--boundary", "0.9", "--cfg-low", "3", out=tmp_path / "x.mp4")
    assert line == ("error: --boundary, --cfg-low only apply to Wan2.2's two experts: give the low-noise one with "
                    "--model-low (or a --model folder with high_noise_model/ and low_noise_model/), or drop "
                    "--boundary, --cfg-low")


def test_a_speed_preset_without_its_lora_is_a_warning(tmp_path, no_model, caplog):
    text = warnings_before_loading(caplog, "--preset", "lightx2v", "--out", str(tmp_path / "x.mp4"))
    assert ("VACE: --preset lightx2v runs 4 steps at cfg 1, the settings of the lightx2v LoRA, but no --lora is "
            "given: unless --model has that LoRA merged in, so few steps make a blurry, unfinished video. Add it "
            "with --lora FILE:STRENGTH, or drop --preset.") in text
