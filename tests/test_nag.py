"""Normalized Attention Guidance: the formula against a dense reference written from the paper and against the
reference code's arithmetic, through a whole DiT forward against diffusers' WanVACE model with a NAG attention
processor, exact reductions (scale 0 / alpha 0 == plain), one batch row per step at cfg 1, the step window."""

import math

import pytest
import torch
import torch.nn.functional as F

from tests.reference import diffusers_vace
from tests.small_dit import sampler_inputs, small_dit
from vace_core.attention import attention
from vace_core.errors import VaceError
from vace_core.nag import NAG, NagAttention, normalized_attention_guidance, text_with_negative
from vace_core.pipeline import SamplerSettings, sample_latent
from vace_core.step_cache import TeaCache
from vace_core.transformer import VaceTransformer

REL = 1e-5


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def dense_attention(q, k, v):
    """softmax(Q K^T / sqrt(d)) V, written out in float64: q (B, Lq, H, D), k/v (B, Lk, H, D) -> (B, Lq, H*D)."""
    q, k, v = (t.double().transpose(1, 2) for t in (q, k, v))
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    return (weights @ v).transpose(1, 2).flatten(2)


def paper_nag(z_pos, z_neg, phi, tau, alpha):
    """arXiv 2505.21179, section 3: extrapolate, cap the L1 ratio at tau, blend; one token per row."""
    out = torch.empty_like(z_pos)
    for index in torch.cartesian_prod(*(torch.arange(n) for n in z_pos.shape[:-1])):
        zp, zn = z_pos[tuple(index)], z_neg[tuple(index)]
        z_tilde = zp + phi * (zp - zn)
        ratio = z_tilde.abs().sum() / zp.abs().sum()
        z_hat = z_tilde * min(ratio.item(), tau) / ratio
        out[tuple(index)] = alpha * z_hat + (1 - alpha) * zp
    return out


def reference_code_nag(z_pos, z_neg, nag_scale, tau, alpha):
    """The reference repository's arithmetic (src/attention_wan_nag.py; kijai's Wan port is the same), in its own
    convention: nag_scale * Z+ - (nag_scale - 1) * Z-, rescaled where the L1 ratio exceeds tau."""
    guidance = z_pos * nag_scale - z_neg * (nag_scale - 1)
    norm_pos = torch.norm(z_pos, p=1, dim=-1, keepdim=True).expand(*z_pos.shape)
    norm_guidance = torch.norm(guidance, p=1, dim=-1, keepdim=True).expand(*guidance.shape)
    ratio = torch.nan_to_num(norm_guidance / norm_pos, 10)
    big = ratio > tau
    guidance[big] = guidance[big] / (norm_guidance[big] + 1e-7) * norm_pos[big] * tau
    return guidance * alpha + z_pos * (1 - alpha)


def random_qkv(seed=0, heads=3, dim=8, lq=10, lk=7):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(2, lq, heads, dim, generator=g)
    return q, *(torch.randn(2, lk, heads, dim, generator=g) for _ in range(4))


@pytest.mark.parametrize("scale, tau, alpha", [(10.0, 2.5, 0.25), (3.0, 1.2, 0.5), (0.5, 10.0, 1.0)])
def test_formula_against_the_paper_and_the_reference_code_on_random_qkv(scale, tau, alpha):
    q, k_pos, v_pos, k_neg, v_neg = random_qkv()
    z_pos, z_neg = attention(q, k_pos, v_pos), attention(q, k_neg, v_neg)
    ours = normalized_attention_guidance(z_pos, z_neg, scale, tau, alpha)
    dense_pos, dense_neg = dense_attention(q, k_pos, v_pos), dense_attention(q, k_neg, v_neg)
    assert rel_err(ours.double(), paper_nag(dense_pos, dense_neg, scale, tau, alpha)) < REL
    assert rel_err(ours, reference_code_nag(z_pos, z_neg, scale + 1, tau, alpha)) < REL


@pytest.mark.parametrize("scale", [0.3, 1.0, 10.0])
def test_the_l1_ratio_becomes_min_of_itself_and_tau(scale):
    q, k_pos, v_pos, k_neg, v_neg = random_qkv(1)
    z_pos, z_neg = attention(q, k_pos, v_pos), attention(q, k_neg, v_neg)
    before = (z_pos + scale * (z_pos - z_neg)).norm(p=1, dim=-1) / z_pos.norm(p=1, dim=-1)
    tau = before.median().item()  # half the tokens above the cap, half below
    guided = normalized_attention_guidance(z_pos, z_neg, scale, tau, 1.0)  # alpha 1: the normalised Z^ itself
    after = guided.norm(p=1, dim=-1) / z_pos.norm(p=1, dim=-1)
    torch.testing.assert_close(after, before.clamp(max=tau), rtol=1e-5, atol=0)


class NagProcessor:
    """A diffusers attention processor for attn2 taking [positive; negative] text in one batch (as the reference
    Wan pipeline passes it), hidden states of batch B: plain attention on the positive text, then the reference
    code's NAG (nag_scale = phi + 1) against the negative one."""

    def __init__(self, phi, tau, alpha):
        self.nag_scale, self.tau, self.alpha = phi + 1, tau, alpha

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        heads = attn.heads
        split = lambda t: t.unflatten(2, (heads, -1)).transpose(1, 2)  # noqa: E731
        query = split(attn.norm_q(attn.to_q(hidden_states)))
        key, value = split(attn.norm_k(attn.to_k(encoder_hidden_states))), split(attn.to_v(encoder_hidden_states))
        key_pos, key_neg = key.chunk(2)
        value_pos, value_neg = value.chunk(2)
        z_pos = F.scaled_dot_product_attention(query, key_pos, value_pos).transpose(1, 2).flatten(2)
        z_neg = F.scaled_dot_product_attention(query, key_neg, value_neg).transpose(1, 2).flatten(2)
        out = reference_code_nag(z_pos, z_neg, self.nag_scale, self.tau, self.alpha)
        return attn.to_out[1](attn.to_out[0](out))


def test_one_dit_forward_against_diffusers_with_a_nag_processor():
    ref, cfg, sd = diffusers_vace(2, 12, 3, (0, 2))
    ref.set_attn_processor({name: NagProcessor(10.0, 2.5, 0.25) if "attn2" in name else proc
                            for name, proc in ref.attn_processors.items()})
    model = VaceTransformer(cfg).eval()
    model.load_state_dict(sd)
    g = torch.Generator().manual_seed(3)
    x, vcu = torch.randn(1, 16, 3, 4, 6, generator=g), torch.randn(1, 96, 3, 4, 6, generator=g)
    t = torch.tensor([700.0])
    positive, negative = torch.randn(1, 9, 32, generator=g), torch.randn(1, 6, 32, generator=g)
    pad = lambda u: F.pad(u, (0, 0, 0, 512 - u.shape[1]))  # noqa: E731
    text, split = text_with_negative(positive, negative)
    with torch.no_grad():
        ours = model(x, t, text, [vcu], [0.8], cross_bias=NAG().hook(split, 1))
        plain = model(x, t, positive, [vcu], [0.8])
        expected = ref(x, t, torch.cat([pad(positive), pad(negative)]), control_hidden_states=vcu,
                       control_hidden_states_scale=torch.full((2,), 0.8), return_dict=False)[0]
    assert rel_err(ours, expected) < REL
    assert rel_err(plain, expected) > 1e-3  # NAG changed the forward


@pytest.fixture(scope="module")
def model():
    return small_dit()


def run(model, guidance, nag=None, negative_index=2, steps=4, **kwargs):
    inputs = sampler_inputs(texts=3)
    settings = SamplerSettings(steps=steps, guidance=guidance, shift=3.0, seed=2, nag=nag, **kwargs)
    return sample_latent(model, inputs[0], inputs[1], inputs[negative_index], settings=settings)


@pytest.mark.parametrize("guidance", [1.0, 5.0])
@pytest.mark.parametrize("nag", [NAG(scale=0.0), NAG(alpha=0.0)], ids=["scale 0", "alpha 0"])
def test_scale_or_alpha_zero_is_the_plain_run_bit_for_bit(model, guidance, nag):
    torch.testing.assert_close(run(model, guidance, nag), run(model, guidance), rtol=0, atol=0)


def test_scale_zero_hook_is_the_plain_forward(model):
    # the sampler passes no hook at all when NAG is off (bit for bit above); the hook itself then attends the
    # row's own prompt only: the same forward up to the projections' rounding on the longer text
    contexts, positive, negative, _ = sampler_inputs(texts=3)
    x, t = torch.randn(1, 16, 3, 4, 4), torch.tensor([500.0])
    text, split = text_with_negative(positive, negative)
    with torch.no_grad():
        plain = model(x, t, positive, contexts, [1.0])
        off = model(x, t, text, contexts, [1.0], cross_bias=NAG(scale=0.0).hook(split, 1))
    assert rel_err(off, plain) < 1e-6


def batch_sizes(model, monkeypatch):
    seen = []
    original = model.run_blocks

    def spy(tokens, *args, **kwargs):
        cross = kwargs.get("cross_bias", args[2] if len(args) > 2 else None)  # run_blocks(tokens, scale, self, cross)
        seen.append((tokens.x.shape[0], isinstance(cross, NagAttention)))
        return original(tokens, *args, **kwargs)

    monkeypatch.setattr(model, "run_blocks", spy)
    return seen


def test_at_cfg_1_the_negative_prompt_acts_with_one_batch_row(model, monkeypatch):
    seen = batch_sizes(model, monkeypatch)
    with_nag = run(model, 1.0, NAG())
    assert seen == [(1, True)] * 4  # one forward of one row per step
    other_negative = run(model, 1.0, NAG(), negative_index=3)
    without = run(model, 1.0)
    assert rel_err(with_nag, without) > 1e-3
    assert rel_err(with_nag, other_negative) > 1e-3  # the negative prompt's content matters


def test_with_cfg_nag_guides_the_conditional_row_only(model):
    contexts, positive, negative, _ = sampler_inputs(texts=3)
    g = torch.Generator().manual_seed(5)
    x, t = torch.randn(1, 16, 3, 4, 4, generator=g), torch.tensor([500.0, 500.0])
    # row 1 holds another text than the NAG negative, so guiding it too would show
    text = torch.cat([positive, torch.randn(1, 5, 32, generator=g)])
    guided, split = text_with_negative(text, negative)
    with torch.no_grad():
        batch = model(x.expand(2, -1, -1, -1, -1), t, guided, contexts, [1.0], cross_bias=NAG().hook(split, 2))
        plain = model(x.expand(2, -1, -1, -1, -1), t, text, contexts, [1.0])
        alone = model(x, t[:1], guided[:1], contexts, [1.0], cross_bias=NAG().hook(split, 1))
    assert rel_err(batch[1:], plain[1:]) < 1e-6  # CFG's negative row: plain (up to the longer text's rounding)
    assert rel_err(batch[:1], alone) < REL and rel_err(batch[:1], plain[:1]) > 1e-3
    assert rel_err(run(model, 5.0, NAG()), run(model, 5.0)) > 1e-3


def test_the_step_window(model, monkeypatch):
    seen = batch_sizes(model, monkeypatch)
    run(model, 1.0, NAG(start=0.25, end=0.75))
    assert [on for _, on in seen] == [False, True, True, False]


def test_composes_with_teacache_threshold_zero(model):
    cached = run(model, 1.0, NAG(), step_cache=TeaCache(0.0))
    torch.testing.assert_close(cached, run(model, 1.0, NAG()), rtol=0, atol=0)


def test_bad_settings_and_missing_negative_are_refused(model):
    for kwargs, message in [({"scale": -1.0}, "scale"), ({"tau": 0.5}, "tau"), ({"alpha": 1.5}, "alpha"),
                            ({"start": 0.8, "end": 0.2}, "start")]:
        with pytest.raises(VaceError, match=message):
            NAG(**kwargs)
    contexts, positive, _, _ = sampler_inputs(texts=3)
    with pytest.raises(VaceError, match="negative prompt"):
        sample_latent(model, contexts, positive, None, settings=SamplerSettings(steps=2, guidance=1.0, nag=NAG()))
