"""The newer features' bad inputs outside the server (issue 22): step-cache coefficients, job files (metadata,
keys, settings, NaN and 0..255 frames), LoRA files, region masks and colour-match masks, each refused with what
was wrong; and a failed long run leaves an existing output file as it was."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from vace_core import tasks
from vace_core.__main__ import main
from vace_core.colour import ColourAnchor, match_colours
from vace_core.errors import VaceError
from vace_core.job import Job, load_job, save_job
from vace_core.lora import apply_lora
from vace_core.lora.apply import read_lora
from vace_core.pipeline import SamplerSettings
from vace_core.sampling import ContextStream
from vace_core.step_cache import TeaCache
from vace_core.vcu import text_to_video


@pytest.mark.parametrize("coefficients", [(), (1.0,), (1.0, math.nan, 2.0)])
def test_teacache_needs_a_polynomial(coefficients):
    with pytest.raises(VaceError, match=r"TeaCache coefficients .* are not a polynomial \(at least two finite numbers"):
        TeaCache(0.08, coefficients=coefficients)
    assert TeaCache(0.08, coefficients=(1.0, 0.0)).coefficients == (1.0, 0.0)


@pytest.fixture
def job_file(tmp_path):
    unit = text_to_video(5, 32, 32)
    return save_job(tmp_path / "job.safetensors", Job([unit], torch.zeros(1, 4, 8), None, [ContextStream()],
                                                      SamplerSettings(steps=2)))


def rewrite(path, meta=None, **tensors):
    """The job with its metadata text and/or some tensors replaced."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    if meta is not None:
        metadata["vace_job"] = meta
    save_file(load_file(path) | tensors, path, metadata=metadata)


def job_meta(path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata()["vace_job"])


def test_a_job_reads_back(job_file):
    job = load_job(job_file)
    assert job.settings.steps == 2 and job.vcus[0].length == 5


def test_job_metadata_that_is_not_json_is_named(job_file):
    rewrite(job_file, meta="{version: 1")
    with pytest.raises(VaceError, match=r"job\.safetensors: its 'vace_job' metadata is not JSON \("):
        load_job(job_file)


def test_job_metadata_missing_a_key_is_named(job_file):
    meta = job_meta(job_file)
    del meta["streams"]
    rewrite(job_file, meta=json.dumps(meta))
    with pytest.raises(VaceError, match=r"its 'vace_job' metadata lacks streams: save the job again"):
        load_job(job_file)


def test_job_with_an_unknown_setting_is_named(job_file):
    meta = job_meta(job_file)
    meta["settings"]["guidance_scale"] = 5
    rewrite(job_file, meta=json.dumps(meta))
    with pytest.raises(VaceError, match=r"unknown sampler settings \['guidance_scale'\] in the job"):
        load_job(job_file)


def test_job_frames_of_0_to_255_are_refused_when_read(job_file):
    rewrite(job_file, **{"vcu.0.frames": torch.full((3, 5, 32, 32), 200.0)})
    with pytest.raises(VaceError, match=r"vcu\.0\.frames runs from 200 to 200, but VCU pixels are -1\.\.1 \(0\.\.255"):
        load_job(job_file)


def test_job_frames_holding_nan_are_refused_when_read(job_file):
    frames = torch.zeros(3, 5, 32, 32)
    frames[0, 2, 5, 5] = math.nan
    rewrite(job_file, **{"vcu.0.frames": frames})
    with pytest.raises(VaceError, match=r"job\.safetensors: vcu\.0\.frames holds NaN or infinite values"):
        load_job(job_file)


def tiny_lora(tmp_path, value=None):
    from tests.lora_files import comfy_lora
    from vace_core.embedded import tiny_model

    model = tiny_model()
    lora = comfy_lora({k: tuple(v.shape) for k, v in model.state_dict().items()},
                      layers={"blocks.0.self_attn.q": "lora_alpha"})
    if value is not None:
        lora["diffusion_model.blocks.0.self_attn.q.lora_up.weight"][0, 0] = value
    path = tmp_path / "style_lora.safetensors"
    save_file(lora, path)
    return model, path


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_a_lora_with_nan_weights_is_refused_naming_it(tmp_path, value):
    model, path = tiny_lora(tmp_path, value)
    with pytest.raises(VaceError, match=r"the LoRA style_lora\.safetensors holds NaN or infinite values \(in "
                                        r"diffusion_model\.blocks\.0\.self_attn\.q\.lora_up\.weight\)"):
        apply_lora(model, path, 1.0)


def test_a_truncated_lora_is_named(tmp_path):
    _, path = tiny_lora(tmp_path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(VaceError, match=r"Could not read checkpoint file .*style_lora\.safetensors .*incomplete"):
        read_lora(path)


def test_colour_match_masks_of_another_size_are_named():
    images = torch.rand(2, 32, 48, 3)
    with pytest.raises(VaceError, match=r"^the masks are 24x16 but the images 48x32: give masks at the images' size"):
        match_colours(images, ColourAnchor.from_images(images), masks=torch.ones(2, 16, 24))


def write_mask(path, value: int):
    Image.fromarray(np.full((32, 32), value, np.uint8)).save(path)


@pytest.mark.parametrize("value,why", [(0, "it is black everywhere"),
                                       (127, "its values reach only 0.498, and masks count where they are above 0.5")])
def test_a_region_mask_that_covers_nothing_is_refused(tmp_path, value, why):
    write_mask(tmp_path / "mask.png", value)
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--prompt", "a fox and a cat", "--region", "a fox", str(tmp_path / "mask.png"), "--width", "32",
              "--height", "32", "--length", "1", "--steps", "1", "--out", str(tmp_path / "x.mp4")])
    assert str(exit_.value) == (f"error: region 1's mask covers nothing ({why}): that region would steer nothing. "
                                "Give a mask that is white (1) over the region; threshold soft masks at 0.5 first.")


def test_a_failed_long_run_leaves_an_existing_output_as_it_was(tmp_path, monkeypatch):
    out = tmp_path / "video.mp4"
    out.write_bytes(b"the video of yesterday")
    windows = []

    def fail_in_window_2(*args, on_frames=None, **kwargs):
        on_frames(torch.zeros(3, 9, 16, 16))  # window 1 streamed to the file
        windows.append(1)
        raise VaceError("window 2 failed")
    monkeypatch.setattr(tasks, "generate_long", fail_in_window_2)
    with pytest.raises(SystemExit, match="window 2 failed"):
        main(["run", "--length", "17", "--window", "9", "--overlap", "5", "--width", "16", "--height", "16",
              "--steps", "1", "--cfg", "1", "--out", str(out)])
    assert windows == [1] and out.read_bytes() == b"the video of yesterday"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["video.mp4"]  # no partial file left beside it
