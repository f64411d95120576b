"""Speed switches (vace_core.speed) against the exact path, on CPU: lean residuals with a chunked FFN, fp8
compute through torch._scaled_mm, the RoPE cache, and no host syncs in a sampling step. Regional compile is
checked by tests/test_gpu_check.py (the dry run's "switches" part), so the suite compiles once."""

import pytest
import torch

from tests.reference import diffusers_vace
from tests.test_transformer import inputs, ours, rel_err
from vace_core import ops
from vace_core.errors import VaceError
from vace_core.pipeline import SamplerSettings, sample_latent
from vace_core.speed import HostSyncs, Speed, apply_speed
from vace_core.transformer import VaceTransformer


@pytest.fixture(scope="module")
def tiny():
    """A 3-block model with context blocks after blocks 0 and 2, and its weights."""
    _, cfg, sd = diffusers_vace(2, 16, 3, (0, 2), ffn=48)
    return cfg, sd


def forward(model, seed=1, batch=2):
    x, t, text, vcu = inputs(batch, 3, 4, 8, 8, seed=seed)  # 2 x 24 tokens: fp8 matmuls need multiples of 16
    with torch.no_grad():
        return model(x, t, text, [vcu[:1]], [0.8])


@pytest.mark.parametrize("chunk", [0, 5, 7])
def test_lean_with_chunked_ffn_matches_the_exact_path(tiny, chunk):
    """In-place modulation and fused residual adds; chunks of 5 and 7 tokens (not dividing 24 tokens)."""
    model = ours(*tiny)
    exact = forward(model)
    lean = forward(apply_speed(model, Speed(lean=True, ffn_chunk=chunk)))
    assert rel_err(lean, exact) <= 1e-6
    assert torch.equal(forward(apply_speed(model, Speed())), exact)  # Speed() restores the exact path


def test_lean_blocks_leave_x0_untouched(tiny):
    """The first residual add is out of place: context blocks read the patch-embedded latent x0 later."""
    model = apply_speed(ours(*tiny), Speed(lean=True, ffn_chunk=4))
    x, t, text, vcu = inputs(1, 3, 4, 6, 8)
    with torch.no_grad():
        tokens = model.embed(x, t, text, [vcu])
        x0 = tokens.x0.clone()
        model.run_blocks(tokens, [1.0])
    assert torch.equal(tokens.x0, x0)


def test_ffn_chunk_without_lean_is_refused():
    with pytest.raises(VaceError, match="chunking the FFN needs lean on"):
        Speed(ffn_chunk=1024)


def fp8_model(cfg, sd, scaled: bool):
    """The tiny model with its Linear weights stored in fp8 e4m3 (ComfyUI's scaled layout when `scaled`)."""
    from vace_core.checkpoints.fp8 import drop_fp8_markers, quantize_scaled
    from vace_core.checkpoints.save import convert_dtype

    state = drop_fp8_markers(quantize_scaled(sd, ops.E4M3)) if scaled else convert_dtype(sd, ops.E4M3, False)
    model = VaceTransformer(cfg, operations=ops.cast, device="meta")
    model.load_state_dict(state, assign=True)
    return model.eval()


def test_fp8_linear_is_the_quantised_matmul():
    """The CPU path = torch._scaled_mm (CUDA's kernel, run by torch's CPU reference) = the emulation: input
    quantised per tensor, float32 products of the fp8 values."""
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(2, 24, 32, generator=g), torch.randn(48, 32, generator=g), torch.randn(48, generator=g)
    w_scale = w.abs().amax() / ops.E4M3_MAX
    w8 = (w / w_scale).to(ops.E4M3)
    x8, x_scale = ops.quantize_e4m3(x)
    assert x8.dtype == ops.E4M3 and x8.float().abs().amax() == ops.E4M3_MAX
    emulated = (x8.float() * x_scale) @ (w8.float() * w_scale).T + b
    out = ops.fp8_linear(x, w8, b, w_scale)
    assert out.shape == (2, 24, 48) and out.dtype == torch.float32
    assert rel_err(out, emulated) < 1e-6
    scaled_mm = torch._scaled_mm(x8.reshape(-1, 32), w8.T, scale_a=x_scale, scale_b=w_scale, out_dtype=torch.float32)
    assert rel_err(out, scaled_mm.reshape(2, 24, 48) + b) < 1e-6
    exact = x @ w.T + b
    assert 1e-3 < rel_err(out, exact) < 0.06  # e4m3 keeps 3 mantissa bits: a few percent


@pytest.mark.parametrize("scaled", [False, True])
def test_fp8_compute_error_vs_upcast_fp8_weights_is_pinned(tiny, scaled):
    """Same fp8 weights: multiplying in fp8 (activations quantised too) vs upcasting the weights. Between 1% and
    10% on this random tiny model (measured 3.5%: every block matmul runs in fp8); gpu_check.py measures CUDA's."""
    model = fp8_model(*tiny, scaled)
    upcast = forward(model)
    fp8 = forward(apply_speed(model, Speed(fp8_compute=True)))
    assert sum(layer.fp8_compute and ops.fp8_ready(layer.weight, torch.empty(32, layer.in_features))
               for layer in model.modules() if isinstance(layer, ops.Linear)) >= 5 * 8  # q, k, v, o, ffn x 5 blocks
    assert 0.01 < rel_err(fp8, upcast) < 0.1
    assert torch.equal(forward(apply_speed(model, Speed())), upcast)


def test_rope_tables_are_computed_once_per_grid(tiny, monkeypatch):
    from vace_core import transformer

    calls = []
    real = transformer.rope_angles
    monkeypatch.setattr(transformer, "rope_angles", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    model = ours(*tiny)
    first = forward(model)
    assert torch.equal(forward(model), first) and calls == [(3, 2, 4)]
    x, t, text, vcu = inputs(1, 2, 4, 4, 8)
    with torch.no_grad():
        model(x, t, text, [vcu], [1.0])
    assert calls == [(3, 2, 4), (2, 2, 2)]


@pytest.mark.parametrize("speed", [Speed(), Speed(lean=True, ffn_chunk=8)], ids=["exact", "lean"])
def test_sampling_steps_make_no_host_syncs(tiny, speed):
    """Steps 2 to 4 of a guided UniPC run with two context streams (model, guidance, strengths, solver and
    corrector): no tensor value read back to the host, so on a GPU the host queues every step without waiting."""
    model = apply_speed(ours(*tiny), speed)
    _, _, text, vcu = inputs(2, 3, 4, 6, 8)
    syncs = HostSyncs()

    def callback(step, total, x, x0_preview):  # counts from the end of step 1 to the end of the last step
        if step == 1:
            syncs.__enter__()
        if step == total:
            syncs.__exit__(None, None, None)

    latent = sample_latent(model, [vcu[:1], vcu[1:]], text[0], text[1], [(1, 0, 1), (0.5, 0, 0.5)],
                           SamplerSettings(steps=4, guidance=5.0), callback)
    assert latent.shape == (1, 16, 3, 4, 6)
    assert syncs.calls == []  # the NaN watch reads its flags from a pinned buffer after async copies
    with HostSyncs() as syncs:  # the counter sees what a sync would be
        _ = float(latent.sum()), latent.cpu(), latent[0, 0, 0, 0, 0].item(), bool(latent.any())
    assert syncs.calls == ["__float__", "cpu", "item", "__bool__"]
