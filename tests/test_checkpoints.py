"""Every checkpoint layout loads to the same model; every bad input gets its message.

Each test writes a tiny checkpoint in the exact on-disk layout (official single/sharded/pth, ComfyUI with
and without prefix in fp32/fp16/bf16/fp8/scaled fp8, diffusers folder and single file, VACE module + T2V
base) and loads it with `load_vace_model`. Real-size shapes (1.3B, 14B) are checked on the meta device.
"""

import json
import re

import pytest
import torch

from vace_core.checkpoints import (
    detect_config,
    load_state_dict,
    load_vace_model,
    merge_vace_module,
    official_to_diffusers,
    save_checkpoint,
    split_vace_module,
)
from vace_core.checkpoints.detect import check_wan_vace
from vace_core.config import VACE_1_3B, VACE_14B, VaceConfig
from vace_core.errors import VaceError
from vace_core.transformer import VaceTransformer

# 4 main blocks with context blocks after 0 and 2: the evenly spaced default (4 // 2 = 2), as in the releases.
CFG = VaceConfig(dim=24, ffn_dim=32, num_heads=2, num_layers=4, vace_layers=(0, 2), text_dim=32)
HEADS = {"num_heads": 2}  # head_dim 12 is not Wan's 128: single files need the head count
E4M3, E5M2 = torch.float8_e4m3fn, torch.float8_e5m2


def random_state_dict(cfg: VaceConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Official-key fp32 weights, all random (norm weights near 1) so no key can hide behind a default."""
    g = torch.Generator().manual_seed(seed)
    shapes = {k: v.shape for k, v in VaceTransformer(cfg, device="meta").state_dict().items()}
    return {k: (1 if "norm" in k else 0) + 0.1 * torch.randn(s, generator=g) for k, s in shapes.items()}


@pytest.fixture(scope="module")
def weights():
    return random_state_dict(CFG)


def make_inputs():
    """One step's inputs for CFG: latent, timestep, text features, one VCU context."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 16, 2, 4, 6, generator=g)
    return x, torch.tensor([700.0]), torch.randn(1, 7, 32, generator=g), torch.randn(1, 96, 2, 4, 6, generator=g)


@pytest.fixture(scope="module")
def inputs():
    return make_inputs()


@pytest.fixture(scope="module")
def exact(weights, inputs):
    """The output of the fp32 weights: what every lossless layout must give."""
    return reference_output(weights, inputs)


def run(model, inputs):
    x, t, text, vcu = inputs
    with torch.no_grad():
        return model(x, t, text, [vcu], [0.8])


def reference_output(state_dict, inputs, cfg=CFG):
    """The plain torch.nn fp32 model holding exactly these (already rounded) weights."""
    model = VaceTransformer(cfg).eval()
    model.load_state_dict({k: v.float() for k, v in state_dict.items()})
    return run(model, inputs)


def stored_values(weights, dtype=None, scaled=False):
    """What a file of `dtype` holds, as fp32, computed independently of the writer: fp8 rounds weight
    matrices only; scaled fp8 (ComfyUI) stores weight / scale with scale = max|weight| / fp8 max."""
    if dtype is None:
        return weights
    out = {}
    for k, v in weights.items():
        matrix = k.endswith(".weight") and v.ndim >= 2
        if scaled and v.ndim == 2 and k.endswith(".weight"):
            scale = v.abs().max() / torch.finfo(dtype).max
            out[k] = (v / scale).to(dtype).float() * scale
        elif dtype in (E4M3, E5M2) and not scaled:
            out[k] = v.to(dtype).float() if matrix else v
        else:
            out[k] = v if scaled else v.to(dtype).float()
    return out


SHARDS = {"max_shard_bytes": 20_000}  # several shards even for the tiny model
INDEX = "diffusion_pytorch_model.safetensors.index.json"
# name: (layout, file name ('' = a folder), dtype, scaled, save options, load hints, path to load in the folder)
FORMATS = {
    "official single file": ("official", "diffusion_pytorch_model.safetensors", None, False, {}, HEADS, ""),
    "official sharded folder + config.json": ("official_sharded", "", None, False, SHARDS, {}, ""),
    "official sharded via index.json": ("official_sharded", "", None, False, SHARDS, {}, INDEX),
    "official .pth pickle": ("pth", "wan_vace.pth", None, False, {}, HEADS, ""),
    "comfy prefixed fp32": ("comfy", "vace_fp32.safetensors", torch.float32, False, {}, HEADS, ""),
    "comfy prefixed fp16": ("comfy", "vace_fp16.safetensors", torch.float16, False, {}, HEADS, ""),
    "comfy prefixed bf16": ("comfy", "vace_bf16.safetensors", torch.bfloat16, False, {}, HEADS, ""),
    "comfy no prefix fp16": ("official", "vace_fp16.safetensors", torch.float16, False, {}, HEADS, ""),
    "comfy no prefix bf16": ("official", "vace_bf16.safetensors", torch.bfloat16, False, {}, HEADS, ""),
    "comfy fp8_e4m3fn": ("official", "vace_fp8_e4m3fn.safetensors", E4M3, False, {}, HEADS, ""),
    "comfy prefixed fp8_e5m2": ("comfy", "vace_fp8_e5m2.safetensors", E5M2, False, {}, HEADS, ""),
    "comfy scaled fp8": ("official", "vace_fp8_scaled.safetensors", E4M3, True, {}, HEADS, ""),
    "comfy prefixed scaled fp8": ("comfy", "vace_fp8_scaled.safetensors", E4M3, True, {}, HEADS, ""),
    "diffusers folder": ("diffusers", "", None, False, {}, {}, ""),
    "diffusers sharded folder": ("diffusers", "", None, False, SHARDS, {}, ""),
    "diffusers single file": ("diffusers_single", "vace_diffusers.safetensors", None, False, {},
                              HEADS | {"vace_layers": [0, 2]}, ""),
}


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_every_format_loads_to_identical_outputs(fmt, weights, inputs, exact, tmp_path):
    layout, name, dtype, scaled, options, hints, inside = fmt
    path = save_checkpoint(weights, tmp_path / "ckpt" / name, layout, dtype, scaled=scaled, config=CFG, **options)
    if options:
        assert len(list(path.glob("diffusion_pytorch_model-*-of-*.safetensors"))) > 2
    model = load_vace_model(path / inside, device="cpu", **hints)
    assert model.config == CFG and model.compute_dtype == torch.float32
    q = model.blocks[1].self_attn.q
    assert q.weight.dtype == (dtype or torch.float32)  # storage keeps the file's dtype
    assert (q.scale_weight is not None) == scaled  # scaled fp8 stays fp8, scaled when the layer runs
    out = run(model, inputs)
    if dtype in (None, torch.float32):  # every lossless layout: the very same output
        assert torch.equal(out, exact)
    else:
        assert torch.equal(out, reference_output(stored_values(weights, dtype, scaled), inputs))


def test_rounded_formats_stay_close_to_fp32(weights, inputs, exact, tmp_path):
    """Sanity of the rounding itself: bf16 and scaled fp8 files change the output only a little."""
    for dtype, scaled, tol in ((torch.bfloat16, False, 2e-2), (E4M3, True, 1.5e-1)):
        path = save_checkpoint(weights, tmp_path / f"{dtype}.safetensors", "official", dtype, scaled=scaled)
        out = run(load_vace_model(path, device="cpu", **HEADS), inputs)
        assert 0 < ((out - exact).norm() / exact.norm()).item() < tol


def test_vace_module_merges_onto_a_t2v_base(weights, inputs, tmp_path):
    """Kijai-style split: fp16 T2V base file + bf16 VACE module file == the whole model in those dtypes."""
    base, module = split_vace_module(weights)
    assert module and all(k.startswith(("vace_blocks.", "vace_patch_embedding.")) for k in module)
    base_path = save_checkpoint(base, tmp_path / "wan2.1_t2v_fp16.safetensors", "comfy", torch.float16)
    module_path = save_checkpoint(weights, tmp_path / "vace_module_bf16.safetensors", "vace_module", torch.bfloat16)
    model = load_vace_model(module_path, base=base_path, device="cpu", **HEADS)
    assert model.blocks[0].ffn[0].weight.dtype == torch.float16
    assert model.vace_blocks[0].ffn[0].weight.dtype == torch.bfloat16
    expected = stored_values(base, torch.float16) | stored_values(module, torch.bfloat16)
    assert torch.equal(run(model, inputs), reference_output(expected, inputs))


def test_storage_and_compute_dtypes_are_the_users_choice(weights, inputs, exact, tmp_path):
    path = save_checkpoint(weights, tmp_path / "vace.safetensors", "official")
    fp8 = load_vace_model(path, device="cpu", storage_dtype=E4M3, **HEADS)
    assert fp8.blocks[0].self_attn.q.weight.dtype == E4M3
    assert fp8.blocks[0].modulation.dtype == torch.float32  # small tensors keep their precision
    assert torch.equal(run(fp8, inputs), reference_output(stored_values(weights, E4M3), inputs))

    bf16 = load_vace_model(path, device="cpu", storage_dtype=torch.bfloat16, compute_dtype=torch.bfloat16,
                           **HEADS)
    assert bf16.compute_dtype == torch.bfloat16 and bf16.head.head.weight.dtype == torch.bfloat16
    x, t, text, vcu = inputs
    with torch.no_grad():
        out = bf16(x.bfloat16(), t, text.bfloat16(), [vcu.bfloat16()], [0.8])
    assert out.dtype == torch.bfloat16 and ((out.float() - exact).norm() / exact.norm()) < 3e-2

    # a scaled-fp8 file asked to store bf16 is dequantised (weight * scale) at load
    scaled = save_checkpoint(weights, tmp_path / "scaled.safetensors", "comfy", E4M3, scaled=True)
    deq = load_vace_model(scaled, device="cpu", storage_dtype=torch.float32, **HEADS)
    assert deq.blocks[0].self_attn.q.scale_weight is None
    assert torch.equal(run(deq, inputs), reference_output(stored_values(weights, E4M3, True), inputs))

    # plain torch.nn layers get fp32 weights (they cannot cast)
    plain = load_vace_model(scaled, device="cpu", operations=torch.nn, **HEADS)
    assert type(plain.blocks[0].self_attn.q) is torch.nn.Linear
    assert torch.equal(run(plain, inputs), run(deq, inputs))


def test_scaled_fp8_file_has_comfyui_layout(weights, tmp_path):
    """The marker `scaled_fp8` (empty fp8 tensor) and a float32 scalar `scale_weight` per Linear weight."""
    from safetensors import safe_open

    path = save_checkpoint(weights, tmp_path / "s.safetensors", "comfy", E4M3, scaled=True)
    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
        marker = f.get_tensor("model.diffusion_model.scaled_fp8")
        scale = f.get_tensor("model.diffusion_model.blocks.0.ffn.0.scale_weight")
        weight = f.get_tensor("model.diffusion_model.blocks.0.ffn.0.weight")
        conv = f.get_tensor("model.diffusion_model.patch_embedding.weight")
    assert marker.dtype == E4M3 and marker.numel() == 0
    assert scale.dtype == torch.float32 and scale.shape == () and weight.dtype == E4M3
    assert conv.dtype == torch.float32 and "model.diffusion_model.patch_embedding.scale_weight" not in keys
    assert weight.float().abs().max() == torch.finfo(E4M3).max  # scale maps max|w| to the fp8 maximum
    sd = load_state_dict(path)
    assert "scaled_fp8" not in sd and "blocks.0.ffn.0.scale_weight" in sd


def test_scaled_fp8_as_comfyui_model_save_writes_it(weights, inputs, tmp_path):
    """ComfyUI's own saves of a scaled-fp8 model also hold each Linear's bias in fp8 and a `scale_input`
    (used only by fp8 matmul): biases load as stored, input scales are ignored, weights still scaled."""
    from safetensors.torch import load_file, save_file

    path = save_checkpoint(weights, tmp_path / "s.safetensors", "comfy", E4M3, scaled=True)
    sd = load_file(str(path))
    scaled_layers = [k.removesuffix(".scale_weight") for k in sd if k.endswith(".scale_weight")]
    sd |= {f"{layer}.bias": sd[f"{layer}.bias"].to(E4M3) for layer in scaled_layers}
    sd |= {f"{layer}.scale_input": torch.ones(()) for layer in scaled_layers}
    save_file(sd, str(path))
    prefix = len("model.diffusion_model.")
    expected = stored_values(weights, E4M3, scaled=True)
    expected |= {f"{layer[prefix:]}.bias": expected[f"{layer[prefix:]}.bias"].to(E4M3).float()
                 for layer in scaled_layers}
    model = load_vace_model(path, device="cpu", **HEADS)
    assert model.blocks[0].ffn[0].bias.dtype == E4M3
    assert torch.equal(run(model, inputs), reference_output(expected, inputs))


def test_diffusers_layouts_are_diffusers_own(weights, inputs, tmp_path):
    """Our diffusers folder loads in diffusers; diffusers' save_pretrained folder loads here with the same
    output as diffusers' own forward; our key map equals diffusers' single-file converter."""
    from diffusers import WanVACETransformer3DModel
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    ours = official_to_diffusers(weights)
    theirs = convert_wan_transformer_to_diffusers(dict(weights))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)

    folder = save_checkpoint(weights, tmp_path / "ours", "diffusers", config=CFG)
    ref = WanVACETransformer3DModel.from_pretrained(folder).eval()
    assert all(torch.equal(v, ours[k]) for k, v in ref.state_dict().items())

    ref.save_pretrained(tmp_path / "theirs")
    model = load_vace_model(tmp_path / "theirs", device="cpu")
    x, t, text, vcu = inputs
    with torch.no_grad():
        padded = torch.nn.functional.pad(text, (0, 0, 0, 512 - text.shape[1]))
        expected = ref(x, t, padded, control_hidden_states=vcu, control_hidden_states_scale=torch.full((2,), 0.8),
                       return_dict=False)[0]
    out = run(model, inputs)
    assert ((out - expected).norm() / expected.norm()) < 1e-5


# --- configuration from the weights --------------------------------------------------------------------


def meta_weights(cfg: VaceConfig) -> dict[str, torch.Tensor]:
    """Real-size shapes at no memory cost."""
    return VaceTransformer(cfg, device="meta").state_dict()


@pytest.mark.parametrize("cfg", [VACE_1_3B, VACE_14B], ids=["1.3B", "14B"])
def test_release_configs_detected_from_weights_alone(cfg):
    assert detect_config(meta_weights(cfg)) == cfg


def test_context_blocks_at_any_positions():
    cfg = VaceConfig(dim=256, ffn_dim=64, num_heads=2, num_layers=6, vace_layers=(0, 1, 4), text_dim=32)
    sd = meta_weights(cfg)
    assert detect_config(sd).vace_layers == (0, 2, 4)  # without a hint: evenly spaced
    assert detect_config(sd, vace_layers=[0, 1, 4]) == cfg
    assert detect_config(sd, config_json={"vace_layers": [0, 1, 4], "num_heads": 2}) == cfg
    assert detect_config(sd, config_json={"num_attention_heads": 2, "vace_layers": [0, 1, 4]}) == cfg
    with pytest.raises(VaceError, match=r"vace_layers \[0, 3\] names 2 blocks but the checkpoint has 3"):
        detect_config(sd, vace_layers=[0, 3])
    with pytest.raises(VaceError, match="must be distinct blocks"):
        detect_config(sd, vace_layers=[0, 1, 7])


def test_smaller_shape_needs_heads_when_not_a_multiple_of_128(weights):
    with pytest.raises(VaceError, match="dim 24 is not a multiple of Wan's head size 128: pass num_heads"):
        detect_config(weights)
    assert detect_config(weights, num_heads=2) == CFG


# --- bad input ------------------------------------------------------------------------------------------


def i2v(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same shapes as an I2V model: 36 input channels (16 noise + 4 mask + 16 image latent)."""
    w = sd["patch_embedding.weight"]
    return sd | {"patch_embedding.weight": torch.zeros(w.shape[0], 36, *w.shape[2:], device=w.device)}


def test_vace_module_onto_an_i2v_base_is_refused(weights, tmp_path):
    base, module = split_vace_module(weights)
    base_path = save_checkpoint(i2v(base), tmp_path / "wan2.1_i2v_480p.safetensors", "comfy")
    module_path = save_checkpoint(module, tmp_path / "module.safetensors", "vace_module")
    with pytest.raises(VaceError, match=r"image-to-video .*VACE needs a T2V \(text-to-video\) base"):
        load_vace_model(module_path, base=base_path, device="cpu", **HEADS)
    base14, module14 = split_vace_module(meta_weights(VACE_14B))
    with pytest.raises(VaceError, match=r"takes 36 input channels.*e\.g\. wan2\.1_t2v_14B_fp16\.safetensors"):
        check_wan_vace(merge_vace_module(i2v(base14), module14))


@pytest.mark.parametrize("cfg, size", [(VACE_1_3B, "1.3B"), (VACE_14B, "14B")])
def test_vace_module_alone_says_which_base_to_add(cfg, size):
    _, module = split_vace_module(meta_weights(cfg))
    with pytest.raises(VaceError, match=rf"VACE module for the {size} model.*wan2\.1_t2v_{size}_fp16\.safetensors"):
        detect_config(module)


def test_vace_module_alone_from_a_file(weights, tmp_path):
    path = save_checkpoint(weights, tmp_path / "module.safetensors", "vace_module")
    with pytest.raises(VaceError, match="only VACE context blocks.*Add the Wan2.1 T2V base model"):
        load_vace_model(path, device="cpu")


def test_module_and_base_of_different_sizes():
    base, _ = split_vace_module(meta_weights(VACE_1_3B))
    _, module = split_vace_module(meta_weights(VACE_14B))
    with pytest.raises(VaceError, match=r"module is for the 14B model but the base is the 1\.3B model"):
        merge_vace_module(base, module)


def test_plain_t2v_says_it_has_no_context_blocks(tmp_path, weights):
    base, _ = split_vace_module(weights)
    path = save_checkpoint(base, tmp_path / "wan2.1_t2v.safetensors", "official")
    with pytest.raises(VaceError, match=r"without VACE context blocks.*add a VACE module file"):
        load_vace_model(path, device="cpu", **HEADS)


def test_non_wan_checkpoint_says_what_was_expected(tmp_path):
    vae = {"encoder.conv1.weight": torch.zeros(4, 3, 3, 3, 3), "decoder.head.2.bias": torch.zeros(3)}
    path = save_checkpoint(vae, tmp_path / "wan_2.1_vae.safetensors", "official")
    with pytest.raises(VaceError, match=r"not a Wan2\.1 / VACE transformer.*patch_embedding\.weight.*"
                                        r"found 2 keys: decoder\.head\.2\.bias, encoder\.conv1\.weight"):
        load_vace_model(path, device="cpu")


@pytest.mark.parametrize("layout, name", [("official", "x.safetensors"), ("pth", "x.pth")])
def test_truncated_or_corrupt_file_names_the_file(weights, tmp_path, layout, name):
    path = save_checkpoint(weights, tmp_path / name, layout)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(VaceError, match=rf"Could not read checkpoint file {re.escape(str(path))} .*corrupt"):
        load_vace_model(path, device="cpu")
    path.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(VaceError, match=re.escape(str(path))):
        load_state_dict(path)


def test_missing_shard_is_named(weights, tmp_path):
    folder = save_checkpoint(weights, tmp_path / "sharded", "official_sharded", config=CFG, max_shard_bytes=20_000)
    index = json.loads((folder / "diffusion_pytorch_model.safetensors.index.json").read_text())
    lost = sorted(set(index["weight_map"].values()))[1]
    (folder / lost).unlink()
    with pytest.raises(VaceError, match=rf"Shard .*{lost} listed in .*index\.json is missing"):
        load_vace_model(folder, device="cpu")


def test_missing_and_unexpected_keys_are_listed(weights, tmp_path):
    dropped = sorted(k for k in weights if k.startswith("blocks.1."))  # a whole main block
    broken = {k: v for k, v in weights.items() if k not in dropped} | {"lora_up.weight": torch.zeros(2)}
    path = save_checkpoint(broken, tmp_path / "broken.safetensors", "official")
    with pytest.raises(VaceError) as err:
        load_vace_model(path, device="cpu", **HEADS)
    msg = str(err.value)
    assert f"{len(dropped)} missing keys: {', '.join(dropped[:5])}, ... ({len(dropped) - 5} more)" in msg
    assert "1 unexpected keys: lora_up.weight" in msg


def test_wrong_shapes_are_listed(weights, tmp_path):
    broken = weights | {"blocks.2.ffn.0.weight": torch.zeros(48, 24), "blocks.2.ffn.0.bias": torch.zeros(48)}
    path = save_checkpoint(broken, tmp_path / "broken.safetensors", "official")
    wrong = r"2 keys with the wrong shape: blocks\.2\.ffn\.0\.bias \(48,\) \(model: \(32,\)\)"
    with pytest.raises(VaceError, match=wrong):
        load_vace_model(path, device="cpu", **HEADS)
