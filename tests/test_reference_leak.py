"""Reference-leak control (vace_core.reference_leak): the weighted attention equals its formula, weight 1 is
today's sampling bit for bit, weight 0 cuts the video tokens off the reference tokens."""

import pytest
import torch

from vace_core import vcu as V
from vace_core.config import VaceConfig
from vace_core.errors import VaceError
from vace_core.lora.region import TokenSpace
from vace_core.pipeline import SamplerSettings, generate, sample_latent
from vace_core.reference_leak import ReferenceAttention, frame_weights
from vace_core.transformer import VaceTransformer

CONFIG = VaceConfig(dim=32, ffn_dim=48, num_heads=2, num_layers=3, vace_layers=(0, 2), text_dim=16, freq_dim=32)


def test_frame_weights_follow_the_decay():
    assert frame_weights(0.2, 0.5, 4).tolist() == pytest.approx([0.2, 0.6, 0.8, 0.9])
    assert frame_weights(0.3, 1.0, 3).tolist() == pytest.approx([0.3] * 3)  # constant
    assert frame_weights(0.0, 0.0, 3).tolist() == [0.0, 1.0, 1.0]
    with pytest.raises(VaceError, match="from 0 to 1"):
        frame_weights(1.5, 1.0, 2)


@pytest.mark.parametrize("weight, decay", [(0.3, 1.0), (0.1, 0.5), (0.0, 0.7)])
def test_weighted_attention_equals_its_formula(weight, decay):
    g = torch.Generator().manual_seed(0)
    refs, frames, per_frame, heads, dim = 1, 3, 4, 2, 16
    length = (refs + frames) * per_frame
    q, k, v = (torch.randn(2, length, heads, dim, generator=g, dtype=torch.float64) for _ in range(3))
    bias = ReferenceAttention.build(weight, decay, refs, per_frame)
    got = bias.attend(q, k, v)
    w = torch.cat([torch.ones(refs, dtype=torch.float64), frame_weights(weight, decay, frames)]).clamp(min=1e-6)
    log_w = w.log().repeat_interleave(per_frame)  # per query token
    is_ref = (torch.arange(length) < refs * per_frame).double()
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / dim ** 0.5 + log_w[:, None] * is_ref[None, :]
    want = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v).flatten(2)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
    assert ReferenceAttention.build(1.0, decay, refs, per_frame) is None  # weight 1: no bias at all


def model():
    torch.manual_seed(0)
    return VaceTransformer(CONFIG).eval()


def sample(settings, context, refs=1):
    g = torch.Generator().manual_seed(3)
    text = torch.randn(1, 5, 16, generator=g)
    space = TokenSpace(tuple(range(5)), (32, 32), refs)
    return sample_latent(model(), [context], text, None, settings=settings, space=space)


def contexts(ref_seed):
    """A (1, 96, 1 reference + 2, 4, 4) context; the reference frame's content from `ref_seed`."""
    video = torch.randn(1, 96, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    ref = torch.randn(1, 96, 1, 4, 4, generator=torch.Generator().manual_seed(ref_seed))
    return torch.cat([ref, video], 2)


def test_weight_one_is_today_bit_for_bit():
    today = sample(SamplerSettings(steps=2, guidance=1.0, shift=3.0, solver="euler"), contexts(0))
    for decay in (1.0, 0.5):
        same = SamplerSettings(steps=2, guidance=1.0, shift=3.0, solver="euler", reference_weight=1.0,
                               reference_decay=decay)
        assert torch.equal(sample(same, contexts(0)), today)


def test_weight_zero_cuts_the_video_off_the_references():
    """Video tokens reach the reference tokens only through self-attention: weighted to 0, another reference
    changes the reference latents but not the video's (to the 1e-6 floor); at weight 1 it changes both."""
    def video_change(weight):
        settings = SamplerSettings(steps=2, guidance=1.0, shift=3.0, solver="euler", reference_weight=weight)
        a, b = sample(settings, contexts(0)), sample(settings, contexts(7))
        return (a[:, :, 1:] - b[:, :, 1:]).abs().max().item(), (a[:, :, :1] - b[:, :, :1]).abs().max().item()

    cut, refs_moved = video_change(0.0)
    assert cut < 1e-4 and refs_moved > 1e-2
    assert video_change(1.0)[0] > 1e-2


def test_reference_weight_through_generate_and_its_refusals():
    from vace_core.embedded import tiny_model
    from vace_core.vae import WanVAE

    torch.manual_seed(0)
    vae = WanVAE(dim=4, dim_mult=(1, 1, 1, 1), num_res_blocks=1).eval().requires_grad_(False)
    unit = V.with_references(V.text_to_video(5, 16, 16), [torch.rand(16, 16, 3)])
    text = torch.randn(1, 5, 64)
    fast = SamplerSettings(steps=1, guidance=1.0)
    base = generate(tiny_model(), vae, unit, text, settings=fast)
    weighted = generate(tiny_model(), vae, unit, text, settings=SamplerSettings(steps=1, guidance=1.0,
                                                                                 reference_weight=0.2))
    assert weighted.shape == base.shape and not torch.equal(weighted, base)
    with pytest.raises(VaceError, match="which latent frames are references"):
        sample_latent(model(), [contexts(0)], torch.randn(1, 5, 16),
                      settings=SamplerSettings(steps=1, guidance=1.0, reference_weight=0.5))
