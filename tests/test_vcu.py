"""VCU builders (DESIGN.md §5 table), composition rules, concept decoupling and context tokenisation."""

import logging
from types import SimpleNamespace

import pytest
import torch
from diffusers import WanVACEPipeline
from einops import reduce

from vace_core.errors import VaceError
from vace_core.vcu import (
    VCU,
    compose,
    control,
    decouple,
    encode_vcu,
    every_kth,
    extend,
    first_last,
    inpaint,
    outpaint,
    place_frames,
    text_to_video,
    tokenise_masks,
    with_references,
)


def clip(t=9, h=32, w=48, seed=0):
    return torch.rand(t, h, w, 3, generator=torch.Generator().manual_seed(seed))


def test_t2v_is_gray_frames_all_generated():
    v = text_to_video(5, 32, 48)
    assert v.frames.shape == (3, 5, 32, 48) and (v.frames == 0).all() and (v.masks == 1).all()
    assert v.latent_shape == (2, 4, 6)


def test_control_keeps_the_control_video_and_generates_everything():
    video = clip()
    v = control(video)
    torch.testing.assert_close(v.frames, video.permute(3, 0, 1, 2) * 2 - 1)
    assert (v.masks == 1).all() and v.kind == "control"


def test_inpaint_grays_the_masked_area_and_keeps_the_rest():
    video, mask = clip(), torch.zeros(32, 48)
    mask[8:24, 16:40] = 1
    v = inpaint(video, mask)
    assert v.masks.shape == (9, 32, 48) and (v.masks[:, 8:24, 16:40] == 1).all() and v.masks.sum() == 9 * 16 * 24
    assert (v.frames[:, :, 8:24, 16:40] == 0).all()
    torch.testing.assert_close(v.frames[:, :, :8], video[:, :8].permute(3, 0, 1, 2) * 2 - 1)


def test_outpaint_by_pixels_and_by_ratio():
    v = outpaint(clip(5, 32, 32), left=16, right=16)
    assert v.size == (32, 64)
    assert (v.masks[:, :, :16] == 1).all() and (v.masks[:, :, 16:48] == 0).all() and (v.frames[:, :, :, :16] == 0).all()
    r = outpaint(clip(5, 32, 32), top=0.5)
    assert r.size == (48, 32) and (r.masks[:, :16] == 1).all() and (r.masks[:, 16:] == 0).all()


def test_frame_placement_for_extension_and_interpolation():
    a, b = clip(1, seed=1)[0], clip(1, seed=2)[0]
    v = first_last(a, b, length=9)
    assert v.masks[0].sum() == 0 and v.masks[-1].sum() == 0 and (v.masks[1:-1] == 1).all()
    torch.testing.assert_close(v.frames[:, -1], b.permute(2, 0, 1) * 2 - 1)
    assert (v.frames[:, 1:-1] == 0).all() and v.kind == "extension"
    ext = extend(clip(3), length=9, at="start")
    assert (ext.masks[:6] == 1).all() and (ext.masks[6:] == 0).all()
    k = every_kth(clip(9), 4)
    assert [int(m.sum() == 0) for m in k.masks] == [1, 0, 0, 0, 1, 0, 0, 0, 1]


def test_references_letterbox_on_white_and_rgba_on_white():
    v = text_to_video(5, 32, 64)
    square = torch.zeros(16, 16, 3)  # a black square image
    rgba = torch.zeros(16, 16, 4)  # fully transparent: white after compositing
    v = with_references(v, [square, rgba])
    assert len(v.references) == 2 and v.latent_shape == (4, 4, 8)
    ref = v.references[0]
    assert (ref[:, :, 16:48] == -1).all() and (ref[:, :, :16] == 1).all() and (ref[:, :, 48:] == 1).all()
    assert (v.references[1] == 1).all()
    cropped = with_references(text_to_video(5, 32, 64), [square], mode="crop")
    assert torch.allclose(cropped.references[0], torch.tensor(-1.0), atol=1e-5)


def test_composition_rules():
    """reference + inpaint, repaint + control: VACE's composition annotator's rules."""
    video, mask = clip(5), torch.zeros(32, 48)
    mask[:, :24] = 1
    rep = inpaint(video, mask)
    ctl = control(clip(5, seed=3))
    both = compose(rep, ctl)
    torch.testing.assert_close(both.masks, rep.masks)
    torch.testing.assert_close(both.frames[:, :, :, :24], ctl.frames[:, :, :, :24])  # control drives the hole
    torch.testing.assert_close(both.frames[:, :, :, 24:], rep.frames[:, :, :, 24:])  # kept pixels stay
    assert compose(ctl, rep).kind == "repaint"
    ext = first_last(clip(1)[0], clip(1, seed=4)[0], length=5, height=32, width=48)
    moved = compose(ext, ctl)  # extension: the control fills the generated frames
    torch.testing.assert_close(moved.frames[:, 1:4], ctl.frames[:, 1:4])
    torch.testing.assert_close(moved.frames[:, 0], ext.frames[:, 0])
    assert (moved.masks[0] == 0).all() and (moved.masks[1:4] == 1).all()


def test_decoupling_splits_kept_and_changed_pixels():
    frames = torch.rand(3, 5, 16, 16) * 2 - 1
    masks = (torch.rand(5, 16, 16) > 0.5).float()
    inactive, reactive = decouple(VCU(frames, masks))
    torch.testing.assert_close(inactive + reactive, frames)
    assert (inactive[:, masks.bool()] == 0).all() and (reactive[:, ~masks.bool()] == 0).all()


def test_mask_tokens_layout_channel_is_py_times_8_plus_px():
    masks = torch.zeros(1, 16, 16)
    masks[0, 3, 5] = 1  # cell (0, 0), offset py=3, px=5
    tokens = tokenise_masks(masks, 1)
    assert tokens.shape == (64, 1, 2, 2)
    assert tokens[3 * 8 + 5, 0, 0, 0] == 1 and tokens.sum() == 1


def _diffusers_prepare_masks(masks, n_refs):
    """diffusers' WanVACEPipeline.prepare_masks on a stand-in for the pipeline (the method needs only these)."""
    stub = SimpleNamespace(transformer=SimpleNamespace(config=SimpleNamespace(patch_size=(1, 2, 2))),
                           vae_scale_factor_temporal=4, vae_scale_factor_spatial=8)
    m = masks[None, None].expand(1, 3, -1, -1, -1)
    return WanVACEPipeline.prepare_masks(stub, m, [[None] * n_refs])[0]


@pytest.mark.parametrize("frames", [1, 5, 17])
def test_mask_tokens_equal_diffusers(frames):
    masks = (torch.rand(frames, 32, 48, generator=torch.Generator().manual_seed(frames)) > 0.5).float()
    ours = tokenise_masks(masks, (frames - 1) // 4 + 1)
    torch.testing.assert_close(ours, _diffusers_prepare_masks(masks, 0), rtol=0, atol=0)


def fake_vae_encode(video):
    """A deterministic stand-in with the VAE's shapes: (1, 3, T, H, W) -> (1, 16, T_lat, H/8, W/8)."""
    t = video.shape[2]
    first, rest = video[:, :, :1], video[:, :, 1:]
    pooled = [reduce(first, "b c t (h a) (w e) -> b c t h w", "mean", a=8, e=8)]
    if t > 1:
        pooled.append(reduce(rest, "b c (t f) (h a) (w e) -> b c t h w", "mean", f=4, a=8, e=8))
    z = torch.cat(pooled, dim=2)
    return torch.cat([z * (i + 1) for i in range(5)] + [z[:, :1]], dim=1)


def test_context_latent_layout_with_references():
    video, mask = clip(5), torch.zeros(32, 48)
    mask[:16] = 1
    v = with_references(inpaint(video, mask), [clip(1, seed=7)[0], clip(1, seed=8)[0]])
    ctx = encode_vcu(v, fake_vae_encode)
    assert ctx.shape == (96, 2 + 2, 4, 6)
    inactive, reactive = decouple(v)
    torch.testing.assert_close(ctx[:16, 2:], fake_vae_encode(inactive[None])[0])
    torch.testing.assert_close(ctx[16:32, 2:], fake_vae_encode(reactive[None])[0])
    torch.testing.assert_close(ctx[:16, :1], fake_vae_encode(v.references[0][None, :, None])[0])
    torch.testing.assert_close(ctx[:16, 1:2], fake_vae_encode(v.references[1][None, :, None])[0])
    assert (ctx[16:, :2] == 0).all()  # references: zero reactive latent and zero mask
    torch.testing.assert_close(ctx[32:], _diffusers_prepare_masks(v.masks, 2))


def test_bad_inputs_say_what_and_how():
    with pytest.raises(VaceError, match=r"masks \(3, 32, 48\) disagree with the video's \(T, H, W\) \(9, 32, 48\)"):
        inpaint(clip(), torch.zeros(3, 32, 48))
    with pytest.raises(VaceError, match="masks are empty .* white \\(1\\) marks what to generate"):
        inpaint(clip(), torch.zeros(32, 48))
    with pytest.raises(VaceError, match="must match the frames"):
        VCU(torch.zeros(3, 5, 16, 16), torch.zeros(5, 16, 32))
    with pytest.raises(VaceError, match="each reference must be one image"):
        with_references(text_to_video(5, 32, 32), [clip(2)])
    with pytest.raises(VaceError, match="reference 0 must be an image tensor .* got str"):
        with_references(text_to_video(5, 32, 32), ["ref.png"])
    with pytest.raises(VaceError, match=r"reference 1 must be images shaped"):
        with_references(text_to_video(5, 32, 32), [clip(1)[0], torch.zeros(5)])
    with pytest.raises(VaceError, match="outside a 9-frame video"):
        place_frames({12: clip(1)[0]}, 9)
    with pytest.raises(VaceError, match="4n\\+1"):
        VCU(torch.zeros(3, 4, 16, 16), torch.zeros(4, 16, 16))


def test_sizes_and_lengths_are_rounded_with_a_message(caplog):
    with caplog.at_level(logging.WARNING, logger="vace"):
        v = text_to_video(80, 100, 200)
    assert v.length == 77 and v.size == (96, 192)
    assert "80 frames is not 4n+1; using the first 77" in caplog.text
    assert "size 100x200 is not a multiple of 16; using 96x192" in caplog.text
