"""Regional prompts (vace_core.regional): the chunked ST-Layout attention against VideoGrain's formula computed
densely, its limits, the layout on the token grid, the composed text, and a regional run of the tiny model."""

import zlib

import pytest
import torch
import torch.nn.functional as F

from vace_core.attention import attention
from vace_core.errors import VaceError
from vace_core.regional import (
    Regions,
    STLayoutAttention,
    compose_text,
    encode_text,
    time_weight,
    token_membership,
)


def videograin_dense(q, k, v, same, weight):
    """VideoGrain's ST_Layout_Attn_Control.forward, dense: sim = QKᵀ/√d, then in place
    sim += R·w·(max − sim); sim −= (1 − R)·w·(sim − min); softmax; @ v. q (B, Lq, H, D), same (Lq, Lk) binary,
    weight (B, Lq) the per-query w = c·treg·size_reg."""
    q, k, v = (t.transpose(1, 2).double() for t in (q, k, v))
    sim = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    mn, mx = sim.min(-1, keepdim=True)[0], sim.max(-1, keepdim=True)[0]
    mask, w = same.bool()[None, None], weight.double()[:, None, :, None]
    sim = sim + mask * w * (mx - sim)
    sim = sim - ~mask * w * (sim - mn)
    out = sim.softmax(-1) @ v
    return out.transpose(1, 2).flatten(2)


def onehot(labels, groups):
    return F.one_hot(labels, groups).float()


def qkv(batch, lq, lk, heads=2, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, lq, heads, dim, generator=g), torch.randn(batch, lk, heads, dim, generator=g),
            torch.randn(batch, lk, heads, dim, generator=g))


LAYOUTS = {  # (query labels, key labels, groups): self-attention when the keys are the queries
    "two halves": (torch.arange(60) % 12 >= 6, None, 2),
    "three blocks": (torch.arange(75) // 25, None, 3),
    "stripes, 4 groups": (torch.arange(96) % 4, None, 4),
    "cross, 3 prompts": (torch.arange(70) // 24, torch.tensor([-1] * 5 + [1] * 4 + [2] * 6 + [0] * 3 + [-1] * 22), 3),
}


@pytest.mark.parametrize("name", LAYOUTS)
@pytest.mark.parametrize("chunk", [7, 1000])
def test_chunked_equals_videograin_dense(name, chunk):
    labels, key_labels, groups = LAYOUTS[name]
    a = onehot(labels.long(), groups)
    b = a if key_labels is None else onehot(key_labels.clamp(min=0), groups) * (key_labels >= 0)[:, None]
    q, k, v = qkv(2, len(a), len(b), seed=len(name))
    weight = torch.rand(2, len(a), generator=torch.Generator().manual_seed(1)) * 0.9
    weight[1, ::3] = 0  # some rows unmodulated, and the two batch rows differ (CFG)
    out = STLayoutAttention(a, b, weight, chunk=chunk).attend(q, k, v)
    ref = videograin_dense(q, k, v, a @ b.T, weight)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("grid", [(3, 2, 5), (2, 3, 2)])
def test_layout_biases_equal_videograin_dense_on_non_square_grids(grid):
    """Self and cross modulation built from real masks (a region present only in later frames, a background
    prompt) on non-square token grids, batch 2 (CFG: cross modulated in row 0 only), against the dense formula."""
    t, h, w = grid
    masks = torch.zeros(2, (t - 1) * 4 + 1, h * 16, w * 16)
    masks[0, :, :, : w * 8] = 1
    masks[1, 3:, : h * 8, w * 8:] = 1
    layout = regions_for(masks, strength=1.5, background="a road").layout(grid)
    biases = layout.biases(950.0, 0, 10, 2)
    a, length = layout.membership, t * h * w
    for name, keys, same in (("self_bias", length, a @ a.T), ("cross_bias", 512, a @ layout.text_groups.T)):
        q, k, v = qkv(2, length, keys, seed=keys)
        bias = biases[name]
        bias.chunk = 7
        ref = videograin_dense(q, k, v, same, bias.weight.expand(2, -1))
        torch.testing.assert_close(bias.attend(q, k, v).double(), ref, rtol=1e-5, atol=1e-6)
    assert set(torch.unique(a @ a.T).tolist()) == {0.0, 1.0}


def test_soft_membership_is_the_linear_form():
    """Soft edges: s' = (1 − w)s + w·mn + w·(mx − mn)·R with R = A_q A_kᵀ in [0, 1] (the seed's two lines
    applied at once; for binary R they are the seed's formula)."""
    a = torch.rand(40, 3, generator=torch.Generator().manual_seed(2))
    a = a / a.sum(1, keepdim=True)
    q, k, v = qkv(2, 40, 40, seed=3)
    weight = torch.full((2, 40), 0.6)
    out = STLayoutAttention(a, a, weight, chunk=9).attend(q, k, v)
    qd, kd, vd = (t.transpose(1, 2).double() for t in (q, k, v))
    s = qd @ kd.transpose(-1, -2) / 4
    mn, mx = s.amin(-1, keepdim=True), s.amax(-1, keepdim=True)
    s = 0.4 * s + 0.6 * mn + 0.6 * (mx - mn) * (a @ a.T).double()
    torch.testing.assert_close(out.double(), (s.softmax(-1) @ vd).transpose(1, 2).flatten(2), rtol=1e-5, atol=1e-6)


def test_zero_weight_is_exactly_the_plain_attention():
    q, k, v = qkv(2, 30, 30)
    a = onehot(torch.arange(30) % 2, 2)
    assert torch.equal(STLayoutAttention(a, a, torch.zeros(2, 30)).attend(q, k, v), attention(q, k, v))


def test_large_strength_cuts_cross_region_attention_below_1e3():
    """The mass a region's queries give to other regions' prompt tokens, measured through the chunked path
    (v = indicator of the other regions' tokens, so the output is that mass)."""
    labels = torch.arange(64) // 32  # two regions of queries
    key_labels = torch.tensor([1] * 6 + [2] * 6 + [-1] * 20) - 1  # region 0's tokens, region 1's, unrelated
    a, b = onehot(labels, 2), onehot(key_labels.clamp(min=0), 2) * (key_labels >= 0)[:, None]
    q, k, _ = qkv(2, 64, 32, heads=2, dim=16, seed=5)
    other = (b @ a.T).T == 0  # (Lq, Lk): key k is not q's region's prompt
    v = torch.zeros(2, 32, 2, 16)
    masses = {}
    for strength in (0.0, 1.0, 100.0):
        for region in (0, 1):
            v[..., 0] = other[region * 32].float()[None, :, None]
            out = STLayoutAttention(a, b, torch.full((2, 64), strength)).attend(q, k, v)
            masses[strength, region] = out.view(2, 64, 2, 16)[:, region * 32:(region + 1) * 32, :, 0].max().item()
    assert min(masses[0.0, r] for r in (0, 1)) > 0.3  # unmodulated: most attention goes elsewhere
    assert max(masses[100.0, r] for r in (0, 1)) < 1e-3, masses


def tiny_text(n_tokens=6, dim=8, seed=0):
    """A fake encoder: word ids from a vocabulary, features deterministic in the words and their order."""
    vocab = {}

    def encode(text):
        ids = [vocab.setdefault(word, len(vocab) + 2) for word in text.split()] + [1]
        g = torch.Generator().manual_seed(zlib.crc32(text.encode()))  # the same on every run (hash() is salted)
        return ids, torch.randn(len(ids), dim, generator=g)
    return encode


def test_compose_text_replaces_verbatim_prompts_and_appends_the_rest():
    encode = tiny_text()
    text = encode_text(encode, "a man and a woman on a beach", ["a woman", "red dragon"], "a beach")
    ids, features = encode("a man and a woman on a beach")
    woman, dragon, beach = encode("a woman"), encode("red dragon"), encode("a beach")
    assert text.token_group.tolist() == [-1, -1, -1, 1, 1, -1, 0, 0, -1, 2, 2]  # EOS kept, "red dragon" appended
    assert torch.equal(text.features[3:5], woman[1][:2]) and torch.equal(text.features[6:8], beach[1][:2])
    assert torch.equal(text.features[9:], dragon[1][:2]) and torch.equal(text.features[:3], features[:3])


def test_compose_text_refuses_past_512_tokens():
    encode = tiny_text()
    with pytest.raises(VaceError, match="at most 512"):
        compose_text(encode(" ".join(f"w{i}" for i in range(400))),
                     [None, encode(" ".join(f"x{i}" for i in range(200)))])


def test_membership_majority_soft_and_references():
    """Tokens are 16x16 pixels of frame 0, then of 4 frames each; references come first and belong to none."""
    masks = torch.zeros(1, 5, 32, 48)
    masks[0, :, :, :20] = 1  # token column 0 fully, column 1 a quarter (4 of 16 px)
    masks[0, 1:3, :, 20:32] = 1  # frames 1, 2 of latent frame 1 cover column 1 more: (4*4 + 2*12)/64 = 0.625
    hard = token_membership(masks, (3, 2, 3), references=1, soft=False)
    soft = token_membership(masks, (3, 2, 3), references=1, soft=True)
    assert hard.shape == (18, 2) and not hard[:6].any()
    region = soft[6:, 1].view(2, 2, 3)
    assert region[0, :, 0].eq(1).all() and region[0, :, 1].eq(0.25).all() and region[1, :, 1].eq(0.625).all()
    assert hard[6:, 1].view(2, 2, 3)[:, :, 1].tolist() == [[0, 0], [1, 1]]
    assert torch.equal(soft[6:].sum(1), torch.ones(12))


def test_membership_needs_the_video_length():
    with pytest.raises(VaceError, match="7 frames but the video has 9"):
        token_membership(torch.ones(1, 7, 16, 16), (3, 1, 1), 0, False)


def regions_for(masks, strength=1.0, end=1.0, background=""):
    encode = tiny_text(dim=32)
    prompts = ["a red car", "a blue bus"][: len(masks)]
    text = encode_text(encode, "a red car next to a blue bus", prompts, background)
    return Regions(text, masks, self_strength=strength, cross_strength=strength, end=end)


def test_weights_follow_region_sizes_time_and_steps():
    masks = torch.zeros(2, 5, 32, 64)
    masks[0, :, :, :16] = 1  # region 1: a quarter of every frame
    masks[1, 1:, :, 32:] = 1  # region 2: half of the frames 1-4 only (absent from frame 0)
    layout = regions_for(masks, end=0.3).layout((2, 2, 4))
    first = layout.membership.view(2, 2, 4, 3)
    assert first[0, :, 2:, 2].sum() == 0 and first[1, :, 2:, 2].eq(1).all()  # time-varying region respected
    size = torch.tensor([8 / 16, 4 / 16, 4 / 16])[first.argmax(-1).flatten()]
    torch.testing.assert_close(layout.self_weight, 1 - size)
    biases = layout.biases(t=801.0, step=2, steps=10, batch=2)
    xi = (800 / 1000) ** 5
    torch.testing.assert_close(biases["self_bias"].weight, xi * (1 - size)[None])  # every batch row
    assert biases["cross_bias"].weight[1].eq(0).all()  # the negative prompt's row is not modulated
    background = first.argmax(-1).flatten() == 0
    assert biases["cross_bias"].weight[0][background].eq(0).all()  # no background prompt: not modulated
    assert layout.biases(t=500.0, step=3, steps=10, batch=2) == {}  # past end = 0.3
    assert time_weight(1.0) == 0 and time_weight(1001.0) == 1


def test_one_region_one_prompt_is_exactly_unmodulated():
    """One region over every token and the prompt its own: S = 1, so w = 0 and every block is unmodulated."""
    from vace_core.embedded import tiny_model

    model = tiny_model().eval()
    encode = tiny_text(dim=model.config.text_dim)
    text = encode_text(encode, "a cat", ["a cat"])
    layout = Regions(text, torch.ones(1, 5, 32, 32), self_strength=1.0, cross_strength=1.0, end=1.0).layout((2, 2, 2))
    x, ctx = torch.randn(1, 16, 2, 4, 4), torch.randn(1, 96, 2, 4, 4)
    t, features = torch.tensor([900.0]), text.features[None]
    with torch.no_grad():
        plain = model(x, t, features, [ctx], [1.0])
        regional = model(x, t, features, [ctx], [1.0], **layout.biases(900.0, 0, 10, 1))
    assert torch.equal(plain, regional)


def cosine(a, b) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    return (a @ b / (a.norm() * b.norm())).item()


def two_regions_run(seed: int = 0):
    """The tiny model at t = 900 on a (2, 4, 4) latent (tokens 2 x 2 x 2) with "a red car" on the left half and "a
    blue bus" on the right: (run(regions or None, features=composed text), encode, composed text)."""
    from vace_core.embedded import tiny_model

    model = tiny_model().eval()
    encode = tiny_text(dim=model.config.text_dim)
    text = encode_text(encode, "a red car next to a blue bus", ["a red car", "a blue bus"])
    masks = torch.zeros(2, 5, 32, 32)
    masks[0, :, :, :16], masks[1, :, :, 16:] = 1, 1
    g = torch.Generator().manual_seed(seed)
    x, ctx = torch.randn(1, 16, 2, 4, 4, generator=g), torch.randn(1, 96, 2, 4, 4, generator=g)

    def run(regions: dict | None, features=text.features, latent=x):
        biases = {} if regions is None else Regions(text, masks, **regions).layout((2, 2, 2)).biases(900.0, 0, 10, 1)
        with torch.no_grad():
            return model(latent, torch.tensor([900.0]), features[None], [ctx], [1.0], **biases)
    return run, encode, x


HALVES = {"left": (..., slice(0, 2)), "right": (..., slice(2, 4))}  # the regions' latent columns


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_region_moves_toward_its_own_prompt(seed):
    """Cross-attention alone (self strength 0): on each region's tokens, the change the regions make points toward
    the run with that region's prompt alone more than toward the run with the other region's prompt (cosine of the
    changes from the unmodulated run, by at least 0.1; the margin is 0.3 or more on seeds 0 to 5)."""
    run, encode, _ = two_regions_run(seed)
    plain, regional = run(None), run({"self_strength": 0.0})
    single = {side: run(None, encode(p)[1]) for side, p in (("left", "a red car"), ("right", "a blue bus"))}
    for side, other in (("left", "right"), ("right", "left")):
        h = HALVES[side]
        change = (regional - plain)[h]
        own, elsewhere = cosine(change, (single[side] - plain)[h]), cosine(change, (single[other] - plain)[h])
        assert own > elsewhere + 0.1, (side, own, elsewhere)


def test_self_attention_keeps_the_regions_apart_and_context_blocks_join_in():
    """Self-attention alone (cross strength 0): a change of the right half's latent reaches the left half's output
    less with the regions (the default strength 0.3 by > 5%; strength 3 by more than half), and less again when the
    context blocks are modulated too (their hints otherwise carry the right half over)."""
    run, _, x = two_regions_run()
    moved = x.clone()
    moved[..., 2:] += torch.randn(1, 16, 2, 4, 2, generator=torch.Generator().manual_seed(9))

    def leak(regions):
        return (run(regions, latent=moved) - run(regions))[HALVES["left"]].norm().item()
    plain = leak(None)
    leaks = {(strength, blocks): leak({"self_strength": strength, "cross_strength": 0.0, "context_blocks": blocks})
             / plain for strength in (0.3, 3.0) for blocks in (False, True)}
    assert leaks[0.3, False] < 0.95 and leaks[3.0, False] < 0.6, leaks
    assert leaks[0.3, True] < leaks[0.3, False] and leaks[3.0, True] < 0.5 * leaks[3.0, False], leaks


def test_regions_check_their_inputs():
    masks = torch.zeros(1, 5, 32, 32)
    masks[0, :, :, :16] = 1
    with pytest.raises(VaceError, match="end: 2 is outside the range from 0 to 1"):
        regions_for(masks, end=2.0)
    regions = regions_for(masks)
    with pytest.raises(VaceError, match="not the regional prompts' text"):
        regions.check_text(torch.randn(1, 12, 32))
    regions.check_text(F.pad(regions.text.features, (0, 0, 0, 500))[None])  # zero padding is fine
    text = regions.text
    with pytest.raises(VaceError, match="region 2 has a mask but no prompt"):
        Regions(text, torch.zeros(2, 5, 32, 32))


def test_cli_regional_run_with_a_reference(tmp_path, monkeypatch):
    """`--region PROMPT MASK` repeated, with a reference image in front of the video's latents: the video is
    written, and on each region's tokens of the sampled latent the regions' change (from the same regions at strength
    0, i.e. the same composed text unmodulated) points toward the run of that region's prompt alone more than toward
    the other region's (cosine, by > 0.05; measured 0.29 and 0.14)."""
    import numpy as np
    from PIL import Image

    import vace_core.pipeline
    from vace_core.__main__ import main
    from vace_core.video_io import read_video

    latents, decode = [], vace_core.pipeline.decode
    monkeypatch.setattr(vace_core.pipeline, "decode", lambda latent, vae_decode, references: (
        latents.append(latent[:, :, references:]), decode(latent, vae_decode, references))[1])
    for side, columns in (("left", slice(0, 24)), ("right", slice(24, 48))):
        mask = np.zeros((32, 48), np.uint8)
        mask[:, columns] = 255
        Image.fromarray(mask).save(tmp_path / f"{side}.png")
    Image.fromarray(np.full((20, 20, 3), 200, np.uint8)).save(tmp_path / "ref.png")
    common = ["run", "--ref", str(tmp_path / "ref.png"), "--width", "48", "--height", "32", "--length", "5",
              "--steps", "2", "--seed", "3"]
    regions = ["--prompt", "a red car and a blue bus", "--region", "a red car", str(tmp_path / "left.png"),
               "--region", "a blue bus", str(tmp_path / "right.png"), "--background-prompt", "a road",
               "--region-end", "1", "--region-strength"]
    runs = {"unmodulated": [*regions, "0", "0"], "regional": [*regions, "0.5", "2"],
            "left": ["--prompt", "a red car"], "right": ["--prompt", "a blue bus"]}
    for name, flags in runs.items():
        main([*common, *flags, "--out", str(tmp_path / f"{name}.mp4")])
    latent = dict(zip(runs, latents, strict=True))
    plain, regional = read_video(tmp_path / "unmodulated.mp4")[0], read_video(tmp_path / "regional.mp4")[0]
    assert regional.shape == plain.shape == (5, 32, 48, 3)
    assert (regional - plain).abs().mean() > 1e-3
    change = latent["regional"] - latent["unmodulated"]
    # each region's own token column (2 latent columns; the middle one is split between the masks)
    for side, other, half in (("left", "right", slice(0, 2)), ("right", "left", slice(4, 6))):
        toward = {name: cosine(change[..., half], (latent[name] - latent["unmodulated"])[..., half])
                  for name in (side, other)}
        assert toward[side] > toward[other] + 0.05, (side, toward)


def test_cli_region_mask_of_another_length_is_a_message(tmp_path):
    from vace_core.__main__ import main
    from vace_core.video_io import write_video

    write_video(tmp_path / "m.mp4", torch.ones(3, 32, 48, 3), 16)
    with pytest.raises(SystemExit) as exited:
        main(["run", "--prompt", "a cat", "--width", "48", "--height", "32", "--length", "9", "--steps", "1",
              "--region", "a cat", str(tmp_path / "m.mp4"), "--out", str(tmp_path / "x.mp4")])
    assert str(exited.value) == ("error: the region masks have 3 frames but the video has 9: give one mask per "
                                 "frame, or a single mask for all frames")
