"""Hardening outside the server (issue 9): the command line's one-line errors, checked before the run; files
written whole or not at all with normal permissions; unsafe pickles refused without advice to lift the
protection; NaN stopped at the step that made it; weight-file hints; memory refused up front."""

import errno
import math
import os
import pickle
import stat
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from annotators.base import AnnotatorError, load_weights
from annotators.weights import resolve_weight
from vace_core.__main__ import main
from vace_core.errors import VaceError
from vace_core.sampling import flow_sigmas, sample
from vace_core.vae import WanVAE, load_vae

TINY_RUN = ["run", "--steps", "1", "--width", "32", "--height", "32", "--length", "1"]


def cli_error(*args: str) -> str:
    """The one-line message `python -m vace_core ...` exits with (sys.exit prints it, without a traceback)."""
    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    return str(exit_.value)


def test_cli_refuses_bad_settings_before_any_work(tmp_path):
    (tmp_path / "a_file").write_text("")
    cases = {  # arguments -> the start of the one-line error
        ("--model", "m.safetensors", "--vae", "v.safetensors"): "error: --text-encoder missing: with your own model",
        ("--device", "tpu"): "error: --device 'tpu'",
        ("--device", "cuda:x"): "error: --device 'cuda:x' is not a device",
        ("--out", str(tmp_path / "a_file" / "out.mp4")): "error: cannot write",
        ("--out", str(tmp_path / "out.avi")): "error: cannot write 'out.avi': choose an extension among",
    }
    if not torch.cuda.is_available():
        cases[("--device", "cuda")] = "error: --device cuda: this PyTorch sees no CUDA GPU"
    for args, start in cases.items():
        args = (*args, "--out", str(tmp_path / "x.mp4")) if "--out" not in args else args
        line = cli_error(*TINY_RUN, *args)
        assert line.startswith(start) and "\n" not in line, (args, line)
    assert not list(tmp_path.glob("*.mp4"))


def full_disk(path, *args, **kwargs):
    """A writer that starts the file, then hits a full disk."""
    Path(path).write_bytes(b"\0" * 1000)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_is_one_line_and_leaves_no_partial_file(tmp_path, monkeypatch):
    import safetensors.torch

    import vace_core.video_io as video_io

    monkeypatch.setattr(video_io, "write_mp4", full_disk)
    out = tmp_path / "out.mp4"
    with pytest.raises(VaceError) as failed:  # `run` writes its video with this
        video_io.write_video(out, torch.rand(1, 16, 16, 3), 16)
    assert str(failed.value) == f"could not write {out}: No space left on device. Nothing was written."
    assert list(tmp_path.iterdir()) == []

    src = tmp_path / "src.safetensors"
    save_file({"head.head.weight": torch.zeros(4, 4)}, src)
    monkeypatch.setattr(safetensors.torch, "save_file", safetensors_full_disk)  # convert writes with this
    dst = tmp_path / "dst.safetensors"
    assert cli_error("convert", str(src), str(dst)) == (
        f"error: could not write {dst}: I/O error: No space left on device (os error 28). Nothing was written.")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.safetensors"]


def safetensors_full_disk(tensors, path, metadata=None):
    """safetensors' writer on a full disk (seen on a 64 KiB tmpfs): part of the file, then its own error type."""
    from safetensors import SafetensorError

    Path(path).write_bytes(b"\0" * 1000)
    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


def test_converted_files_get_normal_permissions(tmp_path):
    from vace_core.embedded import tiny_model

    src = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_model().state_dict().items()}, src)
    old = os.umask(0o022)
    try:
        main(["convert", str(src), str(tmp_path / "tiny_fp16.safetensors"), "--dtype", "fp16"])
        main(["convert", str(src), str(tmp_path / "sharded"), "--layout", "official_sharded"])
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "tiny_fp16.safetensors").stat().st_mode) == 0o644
    for shard in (tmp_path / "sharded").iterdir():
        assert stat.S_IMODE(shard.stat().st_mode) == 0o644
    assert not list(tmp_path.glob(".*partial*"))


class RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this would run",))


def test_unsafe_pickles_are_refused_without_suggesting_weights_only_false(tmp_path):
    evil = tmp_path / "model.pth"
    evil.write_bytes(pickle.dumps({"patch_embedding.weight": RunsCode()}))
    line = cli_error("info", str(evil))
    assert "Refusing to load" in line and "more than tensors" in line
    assert "weights_only" not in line
    with pytest.raises(AnnotatorError, match="refusing to load") as refused:
        load_weights(evil)
    assert "weights_only" not in str(refused.value)


def test_raft_weight_message_says_where_to_download(tmp_path):
    with pytest.raises(AnnotatorError, match=r"download\.pytorch\.org/models/raft_large_C_T_SKHT_V2-ff5fadd5\.pth"):
        resolve_weight("raft_large_C_T_SKHT_V2-ff5fadd5.pth", "annotators", [tmp_path])


def test_sampling_stops_at_the_step_that_made_nan():
    def denoise(x, sigma, step):
        return torch.full_like(x, math.nan) if step == 2 else x * 0.1

    with pytest.raises(VaceError, match="NaN or infinite values at step 3 of 5"):
        sample(denoise, torch.randn(1, 16, 1, 2, 2), flow_sigmas(5, 3.0), "euler")


def test_vae_with_nan_weights_is_refused(tmp_path):
    state = WanVAE(dim=8, z_dim=16, dim_mult=(1, 2), num_res_blocks=1, temporal_downsample=(False,)).state_dict()
    state["decoder.conv1.weight"][0, 0, 0, 0, 0] = math.inf
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "vae.safetensors")
    with pytest.raises(VaceError, match="decoder.conv1.weight holds NaN or infinite values"):
        load_vae(tmp_path / "vae.safetensors")


def test_vcu_memory_is_checked_against_free_ram(monkeypatch):
    import vace_core.vcu.unit as unit
    from vace_core.vcu import text_to_video

    monkeypatch.setattr(unit, "free_memory", lambda device: 10 * 2**20)  # 10 MiB free
    with pytest.raises(VaceError, match=r"81 frames at 480x832 needs about 1\.4 GiB of RAM, but 0\.0 GiB are free"):
        text_to_video(81, 480, 832)
    assert text_to_video(5, 32, 32).length == 5  # small ones still fit
