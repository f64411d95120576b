"""Region-scoped LoRAs (vace_core.lora.region): y = W x + s * m * (B A x) per token, cross-attention blended per
query; a region covering everything is the whole-model LoRA, an empty one is no LoRA, two regions coexist."""

import re

import pytest
import torch

from tests.lora_files import comfy_lora
from vace_core.config import VaceConfig
from vace_core.errors import VaceError
from vace_core.experts import Experts
from vace_core.lora import apply_lora, remove_loras
from vace_core.lora.region import TokenSpace, region_scope
from vace_core.pipeline import SamplerSettings, sample_latent
from vace_core.transformer import VaceTransformer

CONFIG = VaceConfig(dim=32, ffn_dim=48, num_heads=2, num_layers=3, vace_layers=(0, 2), text_dim=16, freq_dim=32)
# every kind of per-token layer, and the text side of cross-attention (k, v, norm_k)
PER_TOKEN = {
    "blocks.0.self_attn.q": "lora_alpha", "blocks.0.self_attn.k": "lora", "blocks.0.cross_attn.o": "lora",
    "blocks.0.cross_attn.k": "lora_alpha", "blocks.2.cross_attn.v": "lora", "blocks.1.ffn.0": "lora_alpha",
    "blocks.2.ffn.2": "lora", "vace_blocks.0.before_proj": "lora_alpha", "vace_blocks.1.self_attn.v": "lora_alpha",
    "vace_blocks.1.after_proj": "lora", "vace_blocks.0.cross_attn.v": "lora", "patch_embedding": "lora_alpha",
    "blocks.1.norm3": "diff", "blocks.2.self_attn.norm_k": "diff", "blocks.1.cross_attn.norm_k": "diff",
    "head.head": "diff_b", "blocks.1.cross_attn.k": "diff_b",
}
T, H, W = 2, 8, 8  # latent: 2 frames (5 video frames) of 64x64 pixels; 2x4x4 = 32 tokens
SIZE = (H * 8, W * 8)


def fresh_model():
    torch.manual_seed(0)
    return VaceTransformer(CONFIG).eval()


def lora(seed=0):
    return comfy_lora({k: tuple(v.shape) for k, v in fresh_model().state_dict().items()}, seed, layers=PER_TOKEN)


def inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, 16, T, H, W, generator=g), torch.tensor([700.0]), torch.randn(1, 5, 16, generator=g),
            [torch.randn(1, 96, T, H, W, generator=g)], [1.0])


def forward(model, space=None, **bias):
    with torch.no_grad(), region_scope(space or TokenSpace(tuple(range(5)), SIZE)) as scope:
        scope.attach(model)
        return model(*inputs(), **bias)


def mask(left=0, right=W * 8, top=0, bottom=H * 8):
    m = torch.zeros(H * 8, W * 8)
    m[top:bottom, left:right] = 1
    return m


def latent_of(tokens):
    """A (T, h, w) token grid -> the (1, 16, T, H, W) output positions of those tokens (2x2 latent pixels each)."""
    return tokens.repeat_interleave(2, 1).repeat_interleave(2, 2)[None, None].expand(1, 16, T, H, W)


def test_region_covering_every_token_is_the_whole_model_lora():
    whole = fresh_model()
    apply_lora(whole, lora(), 0.8, 0.6, merge=False)
    regional = fresh_model()
    apply_lora(regional, lora(), 0.8, 0.6, region=mask())
    expected, got = forward(whole), forward(regional)
    assert (got - forward(fresh_model())).abs().max() > 1e-2  # the LoRA changes the output
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_empty_region_is_no_lora_bit_for_bit():
    model = fresh_model()
    apply_lora(model, lora(), 1.0, region=torch.zeros(H * 8, W * 8))
    assert torch.equal(forward(model), forward(fresh_model()))


class SameRegion:
    """Self-attention of every main and context block masked to the token's own region (a keep-mask)."""

    def __init__(self, groups):
        self.keep = groups[:, None] == groups[None, :]

    def for_block(self, block):
        return self.keep


def test_two_region_loras_change_only_their_own_tokens():
    left, right = mask(right=32), mask(left=32, bottom=32)  # the rest (bottom right) is no region
    groups = torch.zeros(T, H // 2, W // 2, dtype=torch.long)  # the tokens' regions: 16x16 pixels each
    groups[:, :, :2], groups[:, :2, 2:] = 1, 2
    bias = {"self_bias": SameRegion(groups.flatten())}

    def model_with(*loras):
        model = fresh_model()
        for seed, region in loras:
            apply_lora(model, lora(seed), 1.0, region=region)
        return model

    base = forward(model_with(), **bias)
    only_left, only_right = forward(model_with((0, left)), **bias), forward(model_with((1, right)), **bias)
    both = forward(model_with((0, left), (1, right)), **bias)
    a, b, outside = (latent_of(groups == g) for g in (1, 2, 0))
    assert (both[a] - base[a]).abs().max() > 1e-2 and (both[b] - base[b]).abs().max() > 1e-2
    torch.testing.assert_close(both[a], only_left[a], atol=1e-6, rtol=0)
    torch.testing.assert_close(both[b], only_right[b], atol=1e-6, rtol=0)
    torch.testing.assert_close(both[outside], base[outside], atol=1e-6, rtol=0)
    # without the attention mask the regions' changed keys/values reach the other tokens: the leak exists
    free = forward(model_with((0, left), (1, right)))
    assert (free[outside] - forward(model_with())[outside]).abs().max() > 1e-4


def test_region_index_takes_the_regional_prompts_mask_and_windows_slice_masks():
    moving = torch.zeros(9, H * 8, W * 8)
    moving[:5, :, :32] = 1  # the region is on the left in frames 0-4, on the right after
    moving[5:, :, 32:] = 1
    by_mask, by_index = fresh_model(), fresh_model()
    apply_lora(by_mask, lora(), 1.0, region=moving[4:])
    apply_lora(by_index, lora(), 1.0, region=1)
    window = TokenSpace(tuple(range(4, 9)), SIZE, region_masks=moving[None])  # a window of frames 4-8
    assert torch.equal(forward(by_index, window), forward(by_mask))
    assert not torch.equal(forward(by_index, TokenSpace(tuple(range(5)), SIZE, region_masks=moving[None])),
                           forward(by_mask))
    with pytest.raises(VaceError, match="connect Regional Prompts"):
        forward(by_index)


def test_experts_each_keep_their_own_region_loras():
    with_lora, plain = fresh_model(), fresh_model()
    apply_lora(with_lora, lora(), 1.0, region=mask(right=32))
    x, _, text, contexts, _ = inputs()
    settings = SamplerSettings(steps=2, guidance=1.0, shift=3.0, solver="euler")
    space = TokenSpace(tuple(range(5)), SIZE)

    def run(model):
        return sample_latent(model, contexts, text, None, settings=settings, space=space)

    assert torch.equal(run(Experts(with_lora, plain, boundary=0.0)), run(with_lora))  # high expert only
    assert torch.equal(run(Experts(with_lora, plain, boundary=1.0)), run(plain))  # low expert only
    assert not torch.equal(run(with_lora), run(plain))
    remove_loras(with_lora)
    assert torch.equal(run(with_lora), run(plain))


def test_layers_that_are_not_per_token_are_refused_by_name():
    shapes = {k: tuple(v.shape) for k, v in fresh_model().state_dict().items()}
    bad = comfy_lora(shapes, layers={"blocks.0.self_attn.q": "lora", "time_projection.1": "lora",
                                     "blocks.0.modulation": "diff"})
    with pytest.raises(VaceError, match=r"not per token \(blocks.0, time_projection.1\)"):
        apply_lora(fresh_model(), bad, region=mask())
    with pytest.raises(VaceError, match="neither a Regional Prompts region"):
        apply_lora(fresh_model(), lora(), region=0)


def test_a_model_with_region_loras_needs_the_token_space():
    model = fresh_model()
    apply_lora(model, lora(), region=mask())
    with torch.no_grad(), region_scope(None) as scope, pytest.raises(VaceError, match="where its tokens lie"):
        scope.attach(model)


# ---- long video: each window (and each fused window) sees its slice of the masks ----

def long_setup():
    from vace_core import vcu as V
    from vace_core.embedded import tiny_model
    from vace_core.vae import WanVAE

    torch.manual_seed(0)
    vae = WanVAE(dim=4, dim_mult=(1, 1, 1, 1), num_res_blocks=1).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    texts = torch.randn(1, 7, 64, generator=g), torch.randn(1, 5, 64, generator=g)
    shapes = {k: tuple(v.shape) for k, v in tiny_model().state_dict().items()}
    return tiny_model, vae, texts, comfy_lora(shapes, layers=PER_TOKEN), V.text_to_video(17, 16, 16)


@pytest.mark.parametrize("mode", ["autoregressive", "fused"])  # hierarchical windows: the same sample_window
def test_long_video_region_covering_everything_is_the_whole_lora_and_empty_is_none(mode):
    from vace_core.long_video import LongVideoSettings, generate_long

    make, vae, (pos, neg), tensors, unit = long_setup()
    long = LongVideoSettings(window=9, overlap=5, mode=mode, colour_strength=0.0, keyframes=5)
    settings = SamplerSettings(steps=1, guidance=1.0, seed=5)

    def run(**lora):
        model = make()
        if lora:
            apply_lora(model, tensors, 1.0, merge=False, **lora)
        return generate_long(model, vae, unit, pos, neg, settings=settings, long=long).video

    base, whole = run(), run(region=None)
    assert torch.equal(run(region=torch.zeros(16, 16)), base)
    assert (whole - base).abs().max() > 1e-3
    torch.testing.assert_close(run(region=torch.ones(16, 16)), whole, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode, expected", [
    # the region is every pixel of frames 9-16: per latent frame (frame 0 alone, then 4 frames each) 0 or 1
    ("autoregressive", [[0, 0, 0], [0, 0, 1], [0, 1, 1]]),  # windows 0-8, 4-12, 8-16
    ("fused", [[0, 0, 0], [0, 0, 1], [0, 1, 1]]),  # latent windows 0-2, 1-3, 2-4 of one 5-latent video
])
def test_long_video_windows_see_their_slice_of_the_mask(mode, expected, monkeypatch):
    from vace_core.long_video import LongVideoSettings, generate_long

    make, vae, (pos, neg), tensors, unit = long_setup()
    region = torch.zeros(17, 16, 16)
    region[9:] = 1
    seen = []
    membership = TokenSpace.membership

    def spy(self, region, grid):
        out = membership(self, region, grid)
        seen.append(out.flatten(1).mean(1).tolist())
        return out

    monkeypatch.setattr(TokenSpace, "membership", spy)
    model = make()
    apply_lora(model, tensors, 1.0, region=region)
    long = LongVideoSettings(window=9, overlap=5, mode=mode, colour_strength=0.0)
    generate_long(model, vae, unit, pos, neg, settings=SamplerSettings(steps=1, guidance=1.0), long=long)
    assert seen == expected


def test_command_line_confines_a_lora_to_a_region(tmp_path, monkeypatch):
    """`--lora FILE@N` confines the LoRA to the N-th --region, `--lora FILE@MASK` to a mask file's white area: a
    region covering the frame is the whole-model --lora (1e-5), an empty mask file is no LoRA bit for bit, and a
    number without that many --region flags or an @ that names nothing is refused before any model loads."""
    import numpy as np
    from PIL import Image
    from safetensors.torch import save_file

    import vace_core.pipeline
    from vace_core import __main__ as cli
    from vace_core.embedded import tiny_model

    latents, decode = [], vace_core.pipeline.decode
    monkeypatch.setattr(vace_core.pipeline, "decode", lambda latent, vae_decode, references: (
        latents.append(latent), decode(latent, vae_decode, references))[1])
    lora_file = tmp_path / "character.safetensors"
    save_file(comfy_lora({k: tuple(v.shape) for k, v in tiny_model().state_dict().items()}, layers=PER_TOKEN),
              lora_file)
    for name, value in (("all", 255), ("none", 0)):
        Image.fromarray(np.full((32, 48), value, np.uint8)).save(tmp_path / f"{name}.png")
    common = ["run", "--width", "48", "--height", "32", "--length", "5", "--steps", "2", "--seed", "3",
              "--prompt", "a cat on a sofa", "--region", "a cat", str(tmp_path / "all.png")]
    runs = {"none": [], "whole": ["--lora", f"{lora_file}:0.8"], "region": ["--lora", f"{lora_file}:0.8@1"],
            "empty": ["--lora", f"{lora_file}:0.8@{tmp_path / 'none.png'}"]}
    for name, flags in runs.items():
        cli.main([*common, *flags, "--out", str(tmp_path / f"{name}.mp4")])
    latent = dict(zip(runs, latents, strict=True))
    assert (latent["whole"] - latent["none"]).abs().max() > 1e-3
    torch.testing.assert_close(latent["region"], latent["whole"], atol=1e-5, rtol=0)
    assert torch.equal(latent["empty"], latent["none"])
    at_folder = tmp_path / "me@work"
    at_folder.mkdir()
    (at_folder / "x.safetensors").write_bytes(b"")
    assert cli._lora_region(f"{at_folder / 'x.safetensors'}:0.5", []) == (f"{at_folder / 'x.safetensors'}:0.5", None)
    monkeypatch.setattr(cli, "_models", lambda args: pytest.fail("the models loaded before --lora was checked"))
    for at, message in (("@2", "region 2 needs that many --region flags (given: 1)"),
                        ("@missing.png", "after @ comes a --region's number (1, 2, ...) or a mask file")):
        with pytest.raises(SystemExit, match=re.escape(message)):
            cli.main([*common, "--lora", f"{lora_file}{at}", "--out", str(tmp_path / "x.mp4")])
