"""The VACE DiT against diffusers' WanVACETransformer3DModel (same random weights, fp32)."""

import pytest
import torch

from tests.reference import diffusers_vace, reference_forward
from vace_core.attention import attention, resolve_backend
from vace_core.errors import VaceError
from vace_core.transformer import VaceTransformer


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


def ours(cfg, sd):
    model = VaceTransformer(cfg).eval()
    model.load_state_dict(sd, strict=True)
    return model


def inputs(batch, frames, h, w, text_len, text_dim=32, seed=1, refs=0):
    """Noisy latent, timesteps, text and one VCU context; the first `refs` frames are reference frames
    (zero mask channels, as the VCU encodes them)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 16, frames, h, w, generator=g)
    t = torch.rand(batch, generator=g) * 1000
    text = torch.randn(batch, text_len, text_dim, generator=g)
    vcu = torch.randn(batch, 96, frames, h, w, generator=g)
    vcu[:, 32:, :refs] = 0
    return x, t, text, vcu


CASES = {  # heads, head_dim, layers, context-block positions, latent (T, H, W), text length, refs, scale
    "2 heads, blocks 0,2, non-square": (2, 12, 3, (0, 2), (3, 6, 8), 512, 0, 1.0),
    "3 heads, blocks 0,1,3, ref frame, scale 0.7": (3, 16, 4, (0, 1, 3), (4, 4, 10), 20, 1, 0.7),
    "4 heads, block 0 only, 2 refs, scale 1.6, batch 2": (4, 8, 2, (0,), (5, 8, 6), 7, 2, 1.6),
    # ComfyUI's Wan tokenizer does not truncate: every token is attended, as ComfyUI's native model does
    "600 text tokens (over 512)": (2, 12, 2, (0,), (2, 4, 4), 600, 0, 1.0),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_parity_with_diffusers(case):
    heads, head_dim, layers, vace_layers, (T, H, W), text_len, refs, scale = case
    ref, cfg, sd = diffusers_vace(heads, head_dim, layers, vace_layers)
    batch = 2 if "batch" in str(case) or heads == 4 else 1
    x, t, text, vcu = inputs(batch, T, H, W, text_len, refs=refs)
    with torch.no_grad():
        out = ours(cfg, sd)(x, t, text, [vcu], [scale])
    expected = reference_forward(ref, x, t, text, vcu, scale)
    assert out.shape == x.shape
    assert rel_err(out, expected) < 1e-5


def test_context_scale_matters_and_zero_scale_removes_the_hints():
    ref, cfg, sd = diffusers_vace(2, 12, 3, (0, 2))
    model = ours(cfg, sd)
    x, t, text, vcu = inputs(1, 3, 4, 4, 16)
    with torch.no_grad():
        a, b = model(x, t, text, [vcu], [1.0]), model(x, t, text, [vcu], [0.0])
        other_vcu = model(x, t, text, [torch.randn_like(vcu)], [0.0])
    assert rel_err(a, b) > 1e-2
    torch.testing.assert_close(b, other_vcu)  # at strength 0 the VCU has no effect


def test_two_identical_streams_equal_one_stream_at_the_summed_strength():
    ref, cfg, sd = diffusers_vace(2, 12, 3, (0, 2))
    x, t, text, vcu = inputs(1, 3, 6, 4, 12)
    with torch.no_grad():
        two = ours(cfg, sd)(x, t, text, [vcu, vcu], [0.4, 0.7])
    assert rel_err(two, reference_forward(ref, x, t, text, vcu, 1.1)) < 1e-5


def test_two_streams_add_their_own_hints():
    """x after main block i gains sum_s strength_s * hint_s(i); each stream runs its own context blocks."""
    _, cfg, sd = diffusers_vace(2, 12, 3, (0, 2))
    model = ours(cfg, sd)
    x, t, text, vcu_a = inputs(1, 3, 4, 6, 12, seed=2)
    vcu_b = torch.randn_like(vcu_a)
    strengths = (0.8, 0.3)
    with torch.no_grad():
        out = model(x, t, text, [vcu_a, vcu_b], list(strengths))
        expected = _by_hand(model, x, t, text, [vcu_a, vcu_b], strengths)
    assert rel_err(out, expected) < 1e-6
    with torch.no_grad():
        assert rel_err(out, model(x, t, text, [vcu_a], [strengths[0]])) > 1e-3


def _by_hand(model, x, t, text, vcus, strengths):
    """The math of DESIGN.md §4 written out: all hints of each stream first, then the main blocks."""
    from einops import rearrange

    from vace_core.rope import rope_angles, rope_cos_sin
    from vace_core.transformer import sinusoid

    cfg = model.config
    grid = (x.shape[2], x.shape[3] // 2, x.shape[4] // 2)
    rope = rope_cos_sin(rope_angles(grid, cfg.head_dim))
    t_emb = model.time_embedding(sinusoid(t, cfg.freq_dim).float())
    e = rearrange(model.time_projection(t_emb), "b (six d) -> b six d", six=6)
    ctx = model.text_embedding(torch.nn.functional.pad(text, (0, 0, 0, 512 - text.shape[1])))
    x0 = rearrange(model.patch_embedding(x), "b d t h w -> b (t h w) d")
    hints = []
    for vcu in vcus:
        c, stream_hints = rearrange(model.vace_patch_embedding(vcu), "b d t h w -> b (t h w) d"), []
        for block in model.vace_blocks:
            c, hint = block(c, x0, e, ctx, rope)
            stream_hints.append(hint)
        hints.append(stream_hints)
    h = x0
    for i, block in enumerate(model.blocks):
        h = block(h, e, ctx, rope)
        if i in cfg.vace_layers:
            j = cfg.vace_layers.index(i)
            h = h + sum(s * hs[j] for s, hs in zip(strengths, hints, strict=True))
    out = model.head(h, t_emb)
    return rearrange(out, "b (t h w) (ph pw c) -> b c t (h ph) (w pw)", t=grid[0], h=grid[1], ph=2, pw=2)


def test_float64_matches_float32_closely():
    """The fp32 islands widen to float64 for float64 runs (a structural check free of fp32 rounding)."""
    _, cfg, sd = diffusers_vace(2, 12, 3, (0, 2))
    model = ours(cfg, sd)
    x, t, text, vcu = inputs(1, 3, 4, 4, 8)
    with torch.no_grad():
        lo = model(x, t, text, [vcu], [1.0])
        hi = model.double()(x.double(), t, text.double(), [vcu.double()], [1.0])
    assert hi.dtype == torch.float64
    assert rel_err(lo.double(), hi) < 1e-5


def test_bf16_compute_through_cast_ops_stays_close_to_fp32():
    from vace_core import ops

    _, cfg, sd = diffusers_vace(2, 12, 3, (0, 2))
    fp32 = ours(cfg, sd)
    bf16 = VaceTransformer(cfg, operations=ops.cast, dtype=torch.bfloat16).eval()
    bf16.load_state_dict(sd)
    x, t, text, vcu = inputs(1, 3, 4, 4, 8)
    with torch.no_grad():
        ref = fp32(x, t, text, [vcu], [1.0])
        out = bf16(x.bfloat16(), t, text.bfloat16(), [vcu.bfloat16()], [1.0])
    assert out.dtype == torch.bfloat16
    assert rel_err(out.float(), ref) < 5e-2


def test_batch_one_context_broadcasts_over_a_cfg_batch():
    _, cfg, sd = diffusers_vace(2, 12, 3, (0, 2))
    model = ours(cfg, sd)
    x, t, text, vcu = inputs(2, 3, 4, 4, 8)
    with torch.no_grad():
        shared = model(x, t, text, [vcu[:1]], [1.0])
        explicit = model(x, t, text, [vcu[:1].expand(2, -1, -1, -1, -1)], [1.0])
    torch.testing.assert_close(shared, explicit)


def test_attention_bias_is_applied():
    """Zero bias changes nothing; a -inf bias on keys equals attention over the kept keys only."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 6, 2, 8, generator=g) for _ in range(3))
    plain = attention(q, k, v)
    torch.testing.assert_close(attention(q, k, v, bias=torch.zeros(1, 1, 6, 6)), plain)
    keep = torch.tensor([True, True, False, True, False, True])
    masked = attention(q, k, v, bias=keep.expand(1, 1, 6, 6))
    torch.testing.assert_close(masked, attention(q, k[:, keep], v[:, keep]))


def test_model_forwards_attention_bias_to_every_main_block():
    _, cfg, sd = diffusers_vace(2, 12, 3, (0, 2))
    model = ours(cfg, sd)
    x, t, text, vcu = inputs(1, 3, 4, 4, 8)
    tokens = 3 * 2 * 2
    with torch.no_grad():
        plain = model(x, t, text, [vcu], [1.0])
        zero = model(x, t, text, [vcu], [1.0], self_bias=torch.zeros(1, 1, tokens, tokens))
        masked = model(x, t, text, [vcu], [1.0], cross_bias=(torch.arange(512) < 4)[None, None, None])
    torch.testing.assert_close(zero, plain)
    assert rel_err(masked, plain) > 1e-3


def test_bad_inputs_get_clear_errors():
    _, cfg, sd = diffusers_vace(2, 12, 3, (0, 2))
    model = ours(cfg, sd)
    x, t, text, vcu = inputs(1, 3, 4, 4, 8)
    with pytest.raises(VaceError, match=r"stream 0 has shape \(1, 96, 2, 4, 4\).*\(B, 96, 3, 4, 4\)"):
        model(x, t, text, [vcu[:, :, :2]], [1.0])
    with pytest.raises(VaceError, match="2 VACE context streams but 1 strengths"):
        model(x, t, text, [vcu, vcu], [1.0])
    with pytest.raises(VaceError, match="Unknown attention backend 'xformers'"):
        resolve_backend("xformers")
