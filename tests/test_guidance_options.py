"""The guidance add-ons' knobs: all off by default (plain CFG), the command line's flags built from the one
declaration, and a job file keeping them (and the streams' curves) exactly."""

import argparse
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import torch

from vace_core import vcu as V
from vace_core.__main__ import _run_parser, _settings
from vace_core.errors import VaceError
from vace_core.guidance_options import GuidanceOptions, parse_blocks
from vace_core.job import Job, load_job, save_job
from vace_core.nag import NAG
from vace_core.pipeline import SamplerSettings
from vace_core.sampling import ContextStream
from vace_core.sampling.guiders import AdaptiveProjectedGuidance, CFGZeroStar, SkipLayerGuidance
from vace_core.settings import knobs


def test_defaults_are_all_off():
    assert GuidanceOptions().settings() == {"nag": None, "slg": None, "cfg_zero_star": None, "apg": None}
    assert set(knobs(GuidanceOptions)) == {f.name for f in fields(GuidanceOptions)}  # every field a declared knob


def test_knobs_build_the_published_defaults():
    on = GuidanceOptions(nag_scale=10, slg_blocks="9, 10", combination="cfg-zero*").settings()
    assert on["nag"] == NAG(10.0, 2.5, 0.25) and on["slg"] == SkipLayerGuidance((9, 10), 0.1, 0.9)
    assert on["cfg_zero_star"] == CFGZeroStar(2) and on["apg"] is None
    assert GuidanceOptions(combination="apg").settings()["apg"] == AdaptiveProjectedGuidance(0.0, 0.0, -0.5)
    with pytest.raises(VaceError, match="SLG blocks"):
        parse_blocks("9; x")
    with pytest.raises(VaceError, match="combination: 'pag' is not one of cfg, cfg-zero\\*, apg"):
        GuidanceOptions(combination="pag")
    with pytest.raises(VaceError, match="nag_tau: 0.5 is outside the range from 1 to 10"):
        GuidanceOptions(nag_tau=0.5)


def parse(*flags):
    parser = argparse.ArgumentParser()
    _run_parser(parser.add_subparsers())
    return parser.parse_args(["run", *flags])


def test_command_line_flags():
    plain = _settings(parse())
    assert (plain.nag, plain.slg, plain.cfg_zero_star, plain.apg, plain.denoise) == (None, None, None, None, 1.0)
    s = _settings(parse("--nag-scale", "8", "--nag-tau", "3", "--slg-blocks", "9", "--slg-mode", "third",
                        "--combination", "apg", "--apg-eta", "0.5", "--init-video", "x.mp4", "--denoise", "0.6"))
    assert s.nag == NAG(8.0, 3.0, 0.25) and s.slg.mode == "third" and s.apg.eta == 0.5 and s.denoise == 0.6
    with pytest.raises(VaceError, match="--init-video"):
        _settings(parse("--denoise", "0.5"))


def test_run_help_lists_the_add_on_flags():
    """`run --help` prints (a help text's '%', as in SLG's 'Wan2GP: 10%', once crashed argparse's formatting)."""
    result = subprocess.run([sys.executable, "-m", "vace_core", "run", "--help"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-500:]
    for flag in ("--nag-scale", "--slg-blocks", "--combination", "--strength-curve", "--frame-weights",
                 "--init-video", "--denoise", "--magcache", "--magcache-k"):
        assert flag in result.stdout
    assert "(Wan2GP: 10%)" in " ".join(result.stdout.split())


def test_job_files_keep_guidance_curves_and_the_init_video(tmp_path):
    settings = SamplerSettings(steps=3, denoise=0.5, **GuidanceOptions(nag_scale=10, slg_blocks="1, 2",
                                                                        combination="apg").settings())
    streams = [ContextStream(0.8, 0.0, 1.0, "0:1, 1:0.5", [1.0, 0.5])]
    unit = V.text_to_video(5, 16, 16)
    init = torch.rand(3, 5, 16, 16) * 2 - 1
    job = Job([unit], torch.randn(1, 3, 8), None, streams, settings, init_video=init)
    loaded = load_job(save_job(tmp_path / "job.safetensors", job))
    assert loaded.settings == settings and torch.equal(loaded.init_video, init)
    assert [tuple(s) for s in loaded.streams] == [(0.8, 0.0, 1.0, "0:1, 1:0.5", [1.0, 0.5])]
    with pytest.raises(VaceError, match="denoise 0.5 refines a video, but the job holds none: give the job its init "
                                        "video \\(the Save VACE Job node's init_images\\), or set denoise to 1"):
        save_job(tmp_path / "none.safetensors", Job([unit], torch.randn(1, 3, 8), None, streams, settings))
