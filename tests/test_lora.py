"""LoRA in vace_core: every key layout gives the same model, merged equals unmerged, fp8 bases, clear refusals.
(ComfyUI's own LoRA math on the same files is compared in tests/test_comfy_native_interop.py, on a real server.)"""

import pytest
import torch
from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_wan_lora_to_diffusers
from safetensors.torch import save_file

from tests.lora_files import LAYERS, comfy_lora, diffusers, kohya, lycoris
from vace_core.checkpoints import load_vace_model, save_checkpoint
from vace_core.config import VaceConfig
from vace_core.errors import VaceError
from vace_core.lora import apply_lora, delta, plan_lora, remove_loras
from vace_core.transformer import VaceTransformer

CONFIG = VaceConfig(dim=32, ffn_dim=48, num_heads=2, num_layers=3, vace_layers=(0, 2), text_dim=16, freq_dim=32)


def fresh_model():
    torch.manual_seed(0)
    return VaceTransformer(CONFIG).eval()


def shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def run(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 16, 2, 4, 4, generator=g)
    ctx = torch.randn(1, 96, 2, 4, 4, generator=g)
    text = torch.randn(1, 5, CONFIG.text_dim, generator=g)
    with torch.no_grad():
        return model(x, torch.tensor([700.0]), text, [ctx], [1.0])


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(scope="module")
def lora():
    return comfy_lora(shapes(fresh_model()))


@pytest.fixture(scope="module")
def base_output():
    return run(fresh_model())


def with_lora(lora, **kwargs):
    model = fresh_model()
    plan = apply_lora(model, lora, **kwargs)
    return model, plan


def test_every_layer_of_the_lora_changes_its_weight(lora):
    model, plan = with_lora(lora)
    before = fresh_model().state_dict()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    expected = {f"{layer}.weight" if f"{layer}.weight" in before else layer for layer, kind in LAYERS.items()
                if kind != "diff_b"} | {f"{layer}.bias" for layer, kind in LAYERS.items() if kind == "diff_b"}
    assert changed == expected
    assert not plan.skipped


def test_low_rank_delta_is_up_down_alpha_over_rank(lora):
    model, _ = with_lora(lora, strength=0.7)
    up = lora["diffusion_model.blocks.0.self_attn.q.lora_up.weight"]
    down = lora["diffusion_model.blocks.0.self_attn.q.lora_down.weight"]
    alpha = lora["diffusion_model.blocks.0.self_attn.q.alpha"].item()
    expected = fresh_model().blocks[0].self_attn.q.weight + 0.7 * up @ down * alpha / down.shape[0]
    torch.testing.assert_close(model.blocks[0].self_attn.q.weight, expected, rtol=0, atol=1e-6)
    diff = lora["diffusion_model.blocks.0.modulation.diff"]
    torch.testing.assert_close(model.blocks[0].modulation, fresh_model().blocks[0].modulation + 0.7 * diff)


def test_same_lora_in_every_layout_gives_the_same_output(lora, base_output):
    outputs = {name: run(with_lora(convert(lora))[0]) for name, convert in {
        "comfy": lambda d: d, "kohya": kohya, "diffusers": diffusers,
        "comfy full-checkpoint prefix": lambda d: {"model." + k: v for k, v in d.items()},
        "wan fun kohya": lambda d: {k.replace("lora_unet_", "lora_unet__"): v for k, v in kohya(d).items()},
    }.items()}
    for name, out in outputs.items():
        assert torch.equal(out, outputs["comfy"]), name  # renames only: bit for bit
    assert rel(outputs["comfy"], base_output) > 1e-3  # and the LoRA does something


def test_diffusers_own_conversion_reads_the_same(lora):
    """diffusers' converter (official -> diffusers names, alpha folded into the factors) on the main blocks:
    our reading of its output equals our reading of the original."""
    main = {k: v for k, v in lora.items() if k.startswith("diffusion_model.blocks.") and ".diff" not in k
            and "modulation" not in k}
    converted = _convert_non_diffusers_wan_lora_to_diffusers({k: v.clone() for k, v in main.items()})  # in place
    assert {k for k in diffusers(main) if not k.endswith(".alpha")} == converted.keys()  # the same names
    a, _ = with_lora(main)
    b, _ = with_lora(converted)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-7, msg=name)


def test_merged_equals_unmerged_and_removing_restores(lora, base_output):
    merged = run(with_lora(lora, strength=0.8, context_strength=0.5)[0])
    model, _ = with_lora(lora, strength=0.8, context_strength=0.5, merge=False)
    unmerged = run(model)
    assert rel(unmerged, merged) < 1e-5
    apply_lora(model, lora, strength=0.3, merge=False)  # stacking
    stacked_merged = fresh_model()
    apply_lora(stacked_merged, lora, strength=0.8, context_strength=0.5)
    apply_lora(stacked_merged, lora, strength=0.3)
    assert rel(run(model), run(stacked_merged)) < 1e-5
    remove_loras(model)
    assert torch.equal(run(model), base_output)
    assert model.state_dict().keys() == fresh_model().state_dict().keys()


def test_strengths_main_and_context(lora, base_output):
    assert torch.equal(run(with_lora(lora, strength=0.0)[0]), base_output)
    model, _ = with_lora(lora, strength=1.0, context_strength=0.0)
    base = fresh_model().state_dict()
    for key, value in model.state_dict().items():
        if key.startswith("vace_"):
            assert torch.equal(value, base[key]), key
    assert not torch.equal(model.blocks[0].self_attn.q.weight, base["blocks.0.self_attn.q.weight"])
    # strength is linear in the weights: half the strength, half the change
    half, full = with_lora(lora, strength=0.5)[0], with_lora(lora, strength=1.0)[0]
    w0 = base["blocks.1.ffn.0.weight"]
    torch.testing.assert_close(half.blocks[1].ffn[0].weight - w0, (full.blocks[1].ffn[0].weight - w0) / 2)


def test_loha_and_lokr_follow_their_formulas():
    model = fresh_model()
    lyco = lycoris(shapes(model))
    plan = plan_lora(lyco, shapes(model))
    p = "diffusion_model.blocks.0.self_attn.q."
    loha = ((lyco[p + "hada_w1_a"] @ lyco[p + "hada_w1_b"]) * (lyco[p + "hada_w2_a"] @ lyco[p + "hada_w2_b"])
            * 1.0 / 2)
    torch.testing.assert_close(delta(plan.parts("blocks.0.self_attn.q"), loha.shape), loha)
    v = "diffusion_model.blocks.1.self_attn.v."
    lokr = torch.kron(lyco[v + "lokr_w1"], lyco[v + "lokr_w2_a"] @ lyco[v + "lokr_w2_b"]) * 3.0 / 3
    torch.testing.assert_close(delta(plan.parts("blocks.1.self_attn.v"), lokr.shape), lokr)
    merged = run(with_lora(lyco)[0])
    assert rel(run(with_lora(lyco, merge=False)[0]), merged) < 1e-5


def test_keys_that_do_not_apply_are_reported_by_name_and_count(lora, caplog):
    i2v = {f"diffusion_model.blocks.{i}.cross_attn.{m}.lora_{p}.weight": torch.zeros(4, 32)
           for i in range(3) for m in ("k_img", "v_img") for p in ("up", "down")}
    extra = {"diffusion_model.blocks.0.ffn.0.lora_mid.weight": torch.zeros(4, 4),
             "diffusion_model.blocks.7.self_attn.q.lora_up.weight": torch.zeros(32, 4)}
    _, plan = with_lora({**lora, **i2v, **extra})
    report = plan.report()
    assert len(plan.skipped["I2V-only image cross-attention (this is a text-to-video model)"]) == 12
    assert "12 keys skipped, I2V-only image cross-attention" in report and "k_img" in report
    assert plan.skipped["pieces not applied (LoCon mid, Tucker, DoRA, reshape)"] == [
        "diffusion_model.blocks.0.ffn.0.lora_mid.weight"]
    assert plan.skipped["layers this model does not have"] == ["diffusion_model.blocks.7.self_attn.q.lora_up.weight"]
    assert report.startswith(f"LoRA: {len(LAYERS)} layers changed")


@pytest.mark.parametrize("keys, message", [
    ({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(4, 4)},
     "not a LoRA for Wan2.1.*Stable Diffusion"),
    ({"diffusion_model.double_blocks.0.img_attn.qkv.lora_up.weight": torch.zeros(4, 4)},
     "not a LoRA for Wan2.1.*Flux / HunyuanVideo"),
    ({"diffusion_model.blocks.0.self_attn.q.lora_up.weight": torch.zeros(5120, 4),
      "diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.zeros(4, 5120)},
     r"changes blocks.0.self_attn.q.weight with shape \(5120, 5120\), but this model's is \(32, 32\).*another "
     "model size"),
    ({"diffusion_model.blocks.0.self_attn.q.lora_up.weight": torch.zeros(32, 4)}, "has lora_up.weight but no "
     "lora_down.weight"),
])
def test_wrong_family_size_or_broken_lora_is_refused(keys, message):
    with pytest.raises(VaceError, match=message):
        apply_lora(fresh_model(), keys, name="my_lora.safetensors")


@pytest.mark.parametrize("dtype, scaled", [(torch.float8_e4m3fn, False), (torch.float8_e4m3fn, True),
                                           (torch.bfloat16, False)])
def test_low_precision_base_with_lora(tmp_path, lora, dtype, scaled):
    """fp8 (plain and ComfyUI scaled) and bf16 bases take LoRAs, merged and unmerged, at their strength.

    Compared is the LoRA's effect (output with it - output without it, on the same base) with its effect on the
    fp32 model. Unmerged keeps the change in float32: the effects agree up to the base's rounding (measured: 4 %
    on fp8, 0.7 % on bf16; the effect is 30 % of the output, so a strength 20 % off is 20 % here). Merging into
    fp8 rounds the sum (measured: 11 % plain, 27 % scaled), so there the merged weights are checked instead: each
    is the fp8 rounding of the base's value plus strength * delta (in the file's scale)."""
    path = tmp_path / "vace.safetensors"
    save_checkpoint(fresh_model().state_dict(), path, "official", dtype, scaled=scaled)
    fp32_effect = run(with_lora(lora, strength=0.7)[0]) - run(fresh_model())
    effects = {}
    for merge in (True, False):
        model = load_vace_model(path, device="cpu", num_heads=2, vace_layers=(0, 2))
        before = {k: v.clone() for k, v in model.state_dict().items()}
        base = run(model)
        apply_lora(model, lora, strength=0.7, merge=merge)
        out = run(model)
        assert torch.isfinite(out).all()
        effects[merge] = rel(out - base, fp32_effect)
        if merge and dtype != torch.bfloat16:
            merged = model.state_dict()
            for param, parts in plan_lora(lora, shapes(model)).patches().items():
                scale = before.get(param.removesuffix("weight") + "scale_weight") if param.endswith("weight") \
                    else None
                change = 0.7 * delta(parts, before[param].shape) / (1 if scale is None else scale.float())
                expected = (before[param].float() + change).to(before[param].dtype)
                assert torch.equal(merged[param].float(), expected.float()), param  # fp8 compares as float
    assert effects[False] < 0.06, effects
    if dtype == torch.bfloat16:
        assert effects[True] < 0.02, effects


def test_lora_file_is_read_from_disk(tmp_path, lora):
    path = tmp_path / "causvid_like.safetensors"
    save_file(lora, path)
    model = fresh_model()
    plan = apply_lora(model, path)
    assert plan.name == "causvid_like.safetensors"
    assert torch.equal(run(model), run(with_lora(lora)[0]))
    with pytest.raises(VaceError, match="not found"):
        apply_lora(model, tmp_path / "missing.safetensors")
