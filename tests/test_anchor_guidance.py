"""Anchor guidance (vace_core.anchor_guidance): the pull equals its formula, w = 0 is today's run bit for bit,
w > 0 changes only the windows that have an anchor."""

import pytest
import torch

from vace_core import long_video as L
from vace_core import vcu as V
from vace_core.anchor_guidance import AnchorStats, anchor_hook, pull
from vace_core.embedded import tiny_model
from vace_core.errors import VaceError
from vace_core.pipeline import SamplerSettings
from vace_core.vae import WanVAE


def test_pull_moves_each_frames_channel_statistics_toward_the_anchor():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(1, 16, 4, 6, 6, generator=g) * 3 + 2
    anchor = AnchorStats.of(torch.randn(1, 16, 3, 6, 6, generator=g))
    full = pull(x0, anchor, 1.0, references=1)
    assert torch.equal(full[:, :, :1], x0[:, :, :1])  # the reference frame is left alone
    torch.testing.assert_close(full[:, :, 1:].mean((3, 4)), anchor.mean[..., 0, 0].expand(1, 16, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(full[:, :, 1:].std((3, 4)), anchor.std[..., 0, 0].expand(1, 16, 3), atol=1e-4, rtol=1e-4)
    half = pull(x0, anchor, 0.5, references=1)
    torch.testing.assert_close(half, (x0 + full) / 2, atol=1e-5, rtol=0)
    assert anchor_hook(anchor, 0.0, 0.3, 0) is None
    hook = anchor_hook(anchor, 1.0, 0.5, 1)
    assert torch.equal(hook(x0, 1, 2), x0) and torch.equal(hook(x0, 0, 2), full)  # only the first half of steps
    with pytest.raises(VaceError, match="anchor guidance"):
        anchor_hook(anchor, -1.0, 0.3, 0)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return tiny_model(), WanVAE(dim=4, dim_mult=(1, 1, 1, 1), num_res_blocks=1).eval().requires_grad_(False)


def run(models, **long):
    settings = SamplerSettings(steps=2, guidance=1.0, seed=5)
    text = torch.randn(1, 6, 64, generator=torch.Generator().manual_seed(0))
    return L.generate_long(*models, V.text_to_video(17, 16, 16), text, settings=settings,
                           long=L.LongVideoSettings(window=9, overlap=5, colour_strength=0.0, **long)).video


def test_weight_zero_is_today_and_guidance_changes_the_later_windows(models):
    today = run(models)
    assert torch.equal(run(models, anchor_guidance=0.0, anchor_end=1.0, anchor_source="kept"), today)
    for source in ("first", "kept"):
        guided = run(models, anchor_guidance=1.0, anchor_end=1.0, anchor_source=source)
        assert torch.equal(guided[:, :9], today[:, :9])  # window 0 has no anchor
        assert (guided[:, 9:] - today[:, 9:]).abs().max() > 1e-4
