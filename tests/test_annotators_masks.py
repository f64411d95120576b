"""Person masks on a real photo (MediaPipe, offline) and SAM2 video segmentation from its packaged config with
tiny random weights saved in the real checkpoint layout."""

import pytest
import torch
from skimage import data

from annotators.base import AnnotatorError
from annotators.masks.person import PersonMask


def test_person_mask_covers_the_astronaut():
    frames = torch.from_numpy(data.astronaut()[None]).float() / 255
    mask = PersonMask()(frames)
    assert mask.shape == (1, 512, 512) and set(mask.unique().tolist()) <= {0.0, 1.0}
    assert mask[0, 100:160, 190:260].mean() > 0.95  # her face
    assert mask[0, 300:400, 100:250].mean() > 0.95  # the suit
    assert mask[0, :60, 400:].mean() < 0.05 and mask[0, 380:, 330:470].mean() < 0.5  # wall; helmet mostly out
    assert 0.3 < mask.mean() < 0.6
    soft = PersonMask(model="selfie", threshold=None)(frames)
    assert soft.min() >= 0 and soft.max() <= 1 and soft[0, 100:160, 190:260].mean() > 0.9


def test_person_mask_rejects_unknown_model():
    with pytest.raises(AnnotatorError, match="pose"):
        PersonMask(model="u2net")


def test_sam2_video_from_packaged_config(tmp_path):
    pytest.importorskip("sam2")  # an optional extra; CI installs it
    from sam2.build_sam import build_sam2_video_predictor

    from annotators.masks.sam2 import Prompt, SAM2Video

    small = ["++model.image_size=128"]  # the real tiny architecture at a small input, for CPU speed
    torch.manual_seed(0)
    model = build_sam2_video_predictor(
        "configs/sam2.1/sam2.1_hiera_t.yaml", None, device="cpu", hydra_overrides_extra=small
    )
    torch.save({"model": model.state_dict()}, tmp_path / "sam2.1_hiera_tiny.pt")  # the released layout
    ann = SAM2Video("sam2.1_hiera_tiny.pt", search_dirs=[tmp_path], device="cpu", overrides=small)
    frames = torch.rand(3, 48, 64, 3)
    masks = ann.segment(
        frames,
        [Prompt(frame=1, points=[(30, 20)], labels=[1]), Prompt(frame=1, box=(5, 5, 40, 30), object_id=2)],
    )
    assert masks.shape == (3, 48, 64) and set(masks.unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(AnnotatorError, match="outside the clip"):
        ann.segment(frames, [Prompt(frame=5, points=[(1, 1)], labels=[1])])
    with pytest.raises(AnnotatorError, match="at least one prompt"):
        ann(frames)
    with pytest.raises(AnnotatorError, match=r"sam2.1_hiera_large.pt.*models/sam2/"):
        SAM2Video(search_dirs=[tmp_path])
