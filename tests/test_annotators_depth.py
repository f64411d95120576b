"""Depth from tiny transformers configs saved as model folders (the layout users download): Depth-Anything-V2 and
MiDaS DPT-hybrid run end to end, normalised per frame; the result equals the model's own output resized."""

import pytest
import torch
import torch.nn.functional as F
from transformers import (
    BitConfig,
    DepthAnythingConfig,
    DepthAnythingForDepthEstimation,
    Dinov2Config,
    DPTConfig,
    DPTForDepthEstimation,
)

from annotators.base import AnnotatorError
from annotators.depth import Depth, working_size


def tiny_depth_anything():
    backbone = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        patch_size=14,
        image_size=518,
        out_indices=[1, 2, 3, 4],
        apply_layernorm=True,
        reshape_hidden_states=False,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone,
        reassemble_hidden_size=32,
        patch_size=14,
        neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16,
        head_hidden_size=8,
    )
    return DepthAnythingForDepthEstimation(config)


def tiny_dpt_hybrid():
    backbone = BitConfig(
        global_padding="same",
        layer_type="bottleneck",
        depths=[1, 1, 1],
        out_features=["stage1", "stage2", "stage3"],
        embedding_dynamic_padding=True,
        hidden_sizes=[16, 32, 64],
        num_groups=2,
    )
    config = DPTConfig(
        is_hybrid=True,
        backbone_config=backbone,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=64,
        patch_size=16,
        backbone_out_indices=[0, 1, 2, 3],
        neck_hidden_sizes=[16, 32, 32, 32],
        fusion_hidden_size=16,
        readout_type="project",
        backbone_featmap_shape=[1, 64, 4, 4],
        head_in_index=-1,
    )
    return DPTForDepthEstimation(config)


@pytest.mark.parametrize(
    "kind,make", [("depth_anything_v2", tiny_depth_anything), ("midas", tiny_dpt_hybrid)]
)
def test_depth_from_transformers_folder(tmp_path, kind, make):
    torch.manual_seed(0)
    model = make().eval()
    model.save_pretrained(tmp_path / "tiny-depth")
    ann = Depth(kind, weight="tiny-depth", search_dirs=[tmp_path], device="cpu")
    frames = torch.rand(3, 40, 56, 3)
    out = ann(frames)
    assert out.shape == frames.shape and torch.equal(out[..., 0], out[..., 2])
    flat = out[..., 0].flatten(1)
    assert torch.allclose(flat.amin(1), torch.zeros(3)) and torch.allclose(
        flat.amax(1), torch.ones(3), atol=1e-6
    )
    # the same numbers by hand: resize, normalise, model, resize back, per-frame min-max
    short, multiple, lower_bound, mean, std = Depth.KINDS[kind]
    size = working_size(40, 56, short, multiple, lower_bound)
    x = F.interpolate(frames.permute(0, 3, 1, 2), size=size, mode="bicubic", align_corners=False).clamp(0, 1)
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        d = F.interpolate(
            model(pixel_values=x).predicted_depth[:, None], (40, 56), mode="bilinear", align_corners=True
        )[:, 0]
    lo, hi = d.flatten(1).amin(1).view(-1, 1, 1), d.flatten(1).amax(1).view(-1, 1, 1)
    assert (out[..., 0] - (d - lo) / (hi - lo)).abs().max() < 1e-4


@pytest.mark.parametrize("size", [(100, 140), (64, 96), (96, 64), (24, 40)])
def test_midas_runs_at_sizes_other_than_its_config(tmp_path, size):
    """Real MiDaS files say 384x384; VACE feeds e.g. 512x832. Other and non-square working sizes (128x128,
    64x128, 128x64) work on a 64x64 config (at the config's size the output equals the model's: test above)."""
    torch.manual_seed(0)
    tiny_dpt_hybrid().save_pretrained(tmp_path / "tiny-depth")
    out = Depth("midas", weight="tiny-depth", search_dirs=[tmp_path], device="cpu")(torch.rand(2, *size, 3))
    assert out.shape == (2, *size, 3) and torch.isfinite(out).all()
    assert torch.allclose(out[..., 0].flatten(1).amax(1), torch.ones(2), atol=1e-6)


def test_working_sizes_follow_vace():
    assert working_size(480, 832, 518, 14, True) == (518, 896)  # Depth-Anything-V2: short side 518, x14
    assert working_size(720, 1280, 1024, 64, False) == (704, 1280)  # MiDaS: short side min(1024, 720), x64
    assert working_size(1080, 1920, 1024, 64, False) == (1024, 1792)
    assert working_size(24, 40, 1024, 64, False) == (64, 64)  # sides under 32 px would round to 0


def test_depth_errors(tmp_path):
    with pytest.raises(
        AnnotatorError, match=r"depth_anything_v2_vitl.pth.*models/annotators/.*Depth-Anything-V2-Large"
    ):
        Depth(search_dirs=[tmp_path])
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(AnnotatorError, match="not a layout"):
        Depth(weight="other.pth", search_dirs=[tmp_path])
    with pytest.raises(AnnotatorError, match="kind"):
        Depth("zoe")


def test_a_torch_annotator_follows_its_weights_to_another_device(tmp_path):
    """Model management moves the weights and says where with `to`: inputs follow (here to the meta device, the
    one other device a CPU machine has); `release` brings them back to the CPU."""
    tiny_dpt_hybrid().save_pretrained(tmp_path / "tiny-depth")
    ann = Depth("midas", weight="tiny-depth", search_dirs=[tmp_path], device="cpu")
    ann.to("meta")
    assert ann.device == torch.device("meta") and {p.device.type for p in ann.model.parameters()} == {"meta"}
    ann.model.to_empty(device="cpu")
    ann.release()
    assert ann.device == torch.device("cpu") and {p.device.type for p in ann.model.parameters()} == {"cpu"}
