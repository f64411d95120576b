"""VACE job files (Save VACE Job node -> `run --job`): round trip, clear errors, the CLI's video."""

import pytest
import torch
from safetensors.torch import save_file

from vace_core import vcu
from vace_core.__main__ import main
from vace_core.embedded import tiny_model, tiny_vae
from vace_core.errors import VaceError
from vace_core.job import Job, load_job, run_job, save_job
from vace_core.pipeline import SamplerSettings, generate
from vace_core.sampling import ContextStream
from vace_core.video_io import read_video, write_video


def two_stream_job(text_dim=64) -> Job:
    """Inpainting with two references + a control stream at 0.6 over the first half, guidance 4."""
    g = torch.Generator().manual_seed(0)
    video, masks = torch.rand(5, 32, 48, 3, generator=g), torch.zeros(5, 32, 48)
    masks[:, 8:24, 16:40] = 1
    refs = [torch.rand(32, 48, 3, generator=g) for _ in range(2)]
    units = [vcu.with_references(vcu.inpaint(video, masks), refs),
             vcu.with_references(vcu.control(torch.rand(5, 32, 48, 3, generator=g)), refs)]
    return Job(units, torch.randn(1, 7, text_dim, generator=g), torch.randn(1, 4, text_dim, generator=g),
               [ContextStream(1.0, 0.0, 1.0), ContextStream(0.6, 0.0, 0.5)],
               SamplerSettings(steps=2, guidance=4.0, shift=8.0, solver="euler", seed=3))


def test_round_trip_keeps_every_field(tmp_path):
    job = two_stream_job()
    back = load_job(save_job(tmp_path / "job.safetensors", job))
    assert back.streams == job.streams and back.settings == job.settings
    torch.testing.assert_close(back.positive, job.positive)
    torch.testing.assert_close(back.negative, job.negative)
    for a, b in zip(back.vcus, job.vcus, strict=True):
        assert a.kind == b.kind and len(a.references) == len(b.references) == 2
        torch.testing.assert_close(a.frames, b.frames)
        torch.testing.assert_close(a.masks, b.masks)
        for ra, rb in zip(a.references, b.references, strict=True):
            torch.testing.assert_close(ra, rb)


def test_run_job_cli_writes_the_video_generate_makes(tmp_path):
    job = two_stream_job()
    path = save_job(tmp_path / "job.safetensors", job)
    main(["run", "--job", str(path), "--out", str(tmp_path / "out.mp4")])
    frames, fps = read_video(tmp_path / "out.mp4")
    with torch.no_grad():
        expected = generate(tiny_model(), tiny_vae(), job.vcus, job.positive, job.negative, job.streams,
                            job.settings, tiling="auto")
    write_video(tmp_path / "expected.mp4", vcu.to_images(expected), 16)  # through the same codec
    assert frames.shape == (5, 32, 48, 3) and fps == 16
    torch.testing.assert_close(frames, read_video(tmp_path / "expected.mp4")[0], atol=1 / 255, rtol=0)


def test_bad_job_files_are_clear_errors(tmp_path):
    with pytest.raises(VaceError, match="cannot read the VACE job file"):
        load_job(tmp_path / "missing.safetensors")
    save_file({"x": torch.zeros(1)}, tmp_path / "weights.safetensors")
    with pytest.raises(VaceError, match="not a VACE job file"):
        load_job(tmp_path / "weights.safetensors")
    with pytest.raises(VaceError, match="one stream setting per VCU"):
        save_job(tmp_path / "j.safetensors", Job(two_stream_job().vcus, torch.zeros(1, 2, 64), None, [],
                                                 SamplerSettings()))
    wide = two_stream_job(text_dim=4096)
    with pytest.raises(VaceError, match="4096-wide text features but the model reads 64"):
        run_job(wide, tiny_model(), tiny_vae(), None)
