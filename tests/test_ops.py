"""`vace_core.ops.cast`: torch.nn's layers with weights kept in their storage dtype, cast per call."""

import pytest
import torch
from torch import nn

from vace_core import ops

E4M3 = torch.float8_e4m3fn


def test_constructors_match_torch_nn():
    for cast, plain, args in ((ops.cast.Linear, nn.Linear, (8, 4)), (ops.cast.Conv3d, nn.Conv3d, (3, 4, (1, 2, 2))),
                              (ops.cast.LayerNorm, nn.LayerNorm, (8,)), (ops.cast.RMSNorm, nn.RMSNorm, (8,))):
        layer = cast(*args, device="meta", dtype=torch.bfloat16)
        assert isinstance(layer, plain) and layer.weight.dtype == torch.bfloat16
        assert layer.state_dict().keys() == plain(*args).state_dict().keys()  # no extra keys unless scaled


@pytest.mark.parametrize("storage", [torch.bfloat16, torch.float16, E4M3])
def test_weights_stay_in_storage_and_compute_follows_the_input(storage):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 8, generator=g)
    plain = nn.Linear(8, 4)
    cast = ops.cast.Linear(8, 4, dtype=storage)
    cast.load_state_dict(plain.state_dict())
    assert cast.weight.dtype == storage
    out = cast(x)
    assert out.dtype == torch.float32
    expected = nn.functional.linear(x, cast.weight.float(), cast.bias.float())
    assert torch.equal(out, expected)  # the upcast stored values, nothing else
    assert cast(x.bfloat16()).dtype == torch.bfloat16


def test_norms_and_conv_cast_like_linear():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, 2, 4, 4, generator=g)
    conv = ops.cast.Conv3d(3, 6, (1, 2, 2), stride=(1, 2, 2), dtype=torch.bfloat16)  # no random init:
    conv.load_state_dict(nn.Conv3d(3, 6, (1, 2, 2)).state_dict())  # cast layers receive loaded weights
    ref = nn.functional.conv3d(x, conv.weight.float(), conv.bias.float(), stride=(1, 2, 2))
    assert torch.equal(conv(x), ref)
    h = torch.randn(2, 7, 6, generator=g)
    ln = ops.cast.LayerNorm(6, eps=1e-6, dtype=torch.bfloat16)
    nn.init.normal_(ln.weight, generator=g)
    nn.init.normal_(ln.bias, generator=g)
    assert torch.equal(ln(h), nn.functional.layer_norm(h, (6,), ln.weight.float(), ln.bias.float(), 1e-6))
    assert torch.equal(ops.cast.LayerNorm(6, elementwise_affine=False)(h), nn.functional.layer_norm(h, (6,)))
    rms = ops.cast.RMSNorm(6, eps=1e-6, dtype=torch.float16)
    nn.init.normal_(rms.weight, generator=g)
    assert torch.equal(rms(h), nn.functional.rms_norm(h, (6,), rms.weight.float(), 1e-6))


@pytest.mark.parametrize("assign", [False, True])
def test_scale_weight_loads_and_scales_at_call_time(assign):
    """A scaled-fp8 layer: fp8 weight in memory, weight * scale_weight when it runs; round-trips."""
    g = torch.Generator().manual_seed(2)
    w, b, scale = torch.randn(4, 8, generator=g), torch.randn(4, generator=g), torch.tensor(0.01)
    state = {"weight": (w / scale).to(E4M3), "bias": b, "scale_weight": scale}
    layer = ops.cast.Linear(8, 4, device="meta" if assign else None, dtype=E4M3)
    layer.load_state_dict(state, assign=assign, strict=True)
    assert layer.weight.dtype == E4M3 and layer.scale_weight == scale
    x = torch.randn(3, 8, generator=g)
    expected = nn.functional.linear(x, state["weight"].float() * scale, b.to(E4M3).float() if not assign else b)
    assert torch.equal(layer(x), expected)
    assert layer.state_dict().keys() == {"weight", "bias", "scale_weight"}
