"""Preview strips (vace_core.preview), annotators' progress callbacks, the example media copy, and the UI-format
widget order of upload nodes (offline; the browser tests check the same against the real frontend)."""

import numpy as np
import pytest
import torch

from annotators.flow import DISFlow
from annotators.gray import Gray
from annotators.scribble import XDoG
from tests.integration.workflow_api import widget_inputs
from tests.integration.workflow_builder import Workflow
from vace_core import preview
from vace_core import vcu as V
from vace_core.example_media import FILES, MEDIA_DIR, install


def test_vcu_strip_overlays_generate_and_keep_in_two_colours():
    frames = torch.full((9, 64, 96, 3), 0.5)
    masks = torch.zeros(9, 64, 96)
    masks[:, :, 48:] = 1  # right half generated
    unit = V.with_references(V.inpaint(frames, masks), torch.ones(1, 64, 96, 3))
    strips = preview.vcu_strips(unit, height=32)
    image, index = strips["frames"]
    assert index == list(range(9)) and image.size == (9 * 48, 32)
    pixels = np.asarray(image).reshape(32, 9, 48, 3)
    left, right = pixels[16, 4, 8].astype(int), pixels[16, 4, 40].astype(int)
    assert right[0] > right[1] + 60 and right[2] > right[1] + 30  # magenta: generate
    assert left[1] > left[0] and left[1] > left[2]  # green-tinted gray: keep
    refs, ref_index = strips["references"]
    assert ref_index == [0] and refs.size == (48, 32) and np.asarray(refs).min() > 240  # the white reference


def test_long_videos_are_sampled_to_at_most_81_frames():
    picked = preview.picks(1025)
    assert len(picked) == preview.MAX_FRAMES and picked[0] == 0 and picked[-1] == 1024
    assert preview.picks(5) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("annotator", [Gray(), XDoG(), DISFlow("ultrafast")], ids=["gray", "xdog", "dis"])
def test_annotators_report_progress_per_frame(annotator):
    frames = torch.rand(5, 32, 48, 3)
    reports = []
    out = annotator(frames, progress=lambda done, total: reports.append((done, total)))
    assert out.shape == (5, 32, 48, 3)
    if isinstance(annotator, Gray):  # one vectorised step: nothing per frame to report
        assert reports == []
    else:
        total = 4 if isinstance(annotator, DISFlow) else 5  # flow: one report per frame pair
        assert reports == [(i, total) for i in range(1, total + 1)]
    assert annotator.progress is None  # not kept for the next call


def test_progress_callback_can_stop_an_annotator():
    def cancel(done, total):
        raise InterruptedError("cancelled")

    with pytest.raises(InterruptedError):
        XDoG()(torch.rand(3, 32, 32, 3), progress=cancel)


def test_example_media_are_small_and_copied_only_when_absent(tmp_path):
    sizes = {name: (MEDIA_DIR / name).stat().st_size for name in FILES.values()}
    assert sum(sizes.values()) < 400_000, sizes
    mine = tmp_path / FILES["clip"]
    mine.write_bytes(b"the user's own clip")
    copied = install(tmp_path)
    assert mine.read_bytes() == b"the user's own clip"
    assert {p.name for p in copied} == set(FILES.values()) - {FILES["clip"]}
    assert install(tmp_path) == []


LOAD_IMAGE_MASK = {"input": {"required": {"image": [["a.png", "m.png"], {"image_upload": True, "tooltip": "t"}],
                                          "channel": [["alpha", "red", "green", "blue"], {"tooltip": "t"}]}},
                   "input_order": {"required": ["image", "channel"]}, "output": ["MASK"], "output_name": ["MASK"]}


def test_upload_button_value_is_stored_last():
    """The frontend appends the upload button after the node's inputs: file, channel, upload."""
    wf = Workflow({"LoadImageMask": LOAD_IMAGE_MASK}, "t")
    wf.add("LoadImageMask", image="m.png", channel="red")
    [node] = wf.to_json()["nodes"]
    assert node["widgets_values"] == ["m.png", "red", "image"]
    assert widget_inputs(node, LOAD_IMAGE_MASK) == {"image": "m.png", "channel": "red"}


@pytest.mark.parametrize("module, extras", [("mediapipe.python.solutions", "requirements-mediapipe.txt"),
                                            ("onnxruntime", "requirements-annotators.txt")])
def test_a_missing_package_names_the_file_it_comes_from(monkeypatch, module, extras):
    from annotators import base

    def missing(name):
        raise ImportError(f"No module named '{name}'")

    monkeypatch.setattr(base.importlib, "import_module", missing)
    with pytest.raises(base.AnnotatorError, match=f"pip install -r {extras}"):
        base.require(module)
