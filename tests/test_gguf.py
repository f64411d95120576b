"""GGUF transformers: the torch dequantization against gguf-py's numpy reference, tiny models written with the
gguf package's own writer (and quantizer) loading and running like the weights they hold, and the errors.

The reference for every type is `gguf.quants.dequantize`. Blocks are random bytes (every bit pattern of the
integers, scales set to finite float16) and, for the types gguf-py can quantize, its quantizer's output.
"""

import subprocess
import sys

import gguf
import numpy as np
import pytest
import torch

from tests.gguf_files import random_blocks, read_numpy, stored_types, write_gguf
from tests.lora_files import comfy_lora
from vace_core import ggml, ops
from vace_core.checkpoints import load_state_dict, load_vace_model, split_vace_module
from vace_core.checkpoints.gguf import storage_types
from vace_core.embedded import TINY
from vace_core.errors import VaceError
from vace_core.lora import apply_lora, remove_loras
from vace_core.lora.apply import param_shapes
from vace_core.transformer import VaceTransformer

QUANTIZED = ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")
WITH_QUANTIZER = ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "BF16")


def numpy_reference(raw: np.ndarray, qtype: str) -> np.ndarray:
    return gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[qtype])


@pytest.mark.parametrize("qtype", QUANTIZED)
def test_dequantize_random_blocks_bit_for_bit(qtype):
    """Random bytes: every integer pattern of the type, finite scales of both signs."""
    fmt = ggml.FORMATS[qtype]
    raw = random_blocks(6, 4 * 256, qtype, np.random.default_rng(0), 1.0)
    for offset in fmt.scale_offsets:  # negative scales too
        raw.reshape(-1, fmt.type_size)[::2, offset:offset + 2] = np.array([-0.37], np.float16).view(np.uint8)
    ours = ggml.dequantize(torch.from_numpy(raw), qtype, (6, 4 * 256))
    assert ours.dtype == torch.float32
    assert torch.equal(ours, torch.from_numpy(numpy_reference(raw, qtype)))


@pytest.mark.parametrize("qtype", WITH_QUANTIZER)
def test_dequantize_quantizer_output_bit_for_bit(qtype):
    values = np.random.default_rng(1).standard_normal((5, 96)).astype(np.float32)
    raw = gguf.quants.quantize(values, gguf.GGMLQuantizationType[qtype])
    ours = ggml.dequantize(torch.from_numpy(raw), qtype, (5, 96))
    assert torch.equal(ours, torch.from_numpy(numpy_reference(raw, qtype)))


@pytest.mark.parametrize("qtype", ["F32", "F16"])
def test_float_types(qtype):
    values = np.random.default_rng(2).standard_normal((3, 8)).astype(np.float32)
    stored = gguf.quants.quantize(values, gguf.GGMLQuantizationType[qtype])
    ours = ggml.dequantize(torch.from_numpy(stored.view(np.uint8)), qtype, (3, 8))
    assert torch.equal(ours, torch.from_numpy(numpy_reference(stored, qtype)))


def test_dequantize_on_the_input_device_and_dtype():
    raw = torch.from_numpy(random_blocks(2, 256, "Q4_K", np.random.default_rng(3), 1.0))
    ours = ggml.dequantize(raw.to("meta"), "Q4_K", (2, 256), torch.bfloat16)
    assert ours.device.type == "meta" and ours.dtype == torch.bfloat16 and ours.shape == (2, 256)


# ------------------------------------------------------------------------------------------------- models
@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matmuls: one thread is 20x faster than two on a shared, busy CPU (and as fast on an idle one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    """The embedded tiny shape (heads 128 wide like the releases: the config is detected), trained-like scales."""
    g = torch.Generator().manual_seed(seed)
    shapes = {k: v.shape for k, v in VaceTransformer(TINY, device="meta").state_dict().items()}
    return {k: (1 if "norm" in k else 0) + torch.randn(s, generator=g) / (s[-1] if len(s) > 1 else 16) ** 0.5
            for k, s in shapes.items()}


@pytest.fixture(scope="module")
def weights():
    return tiny_weights()


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(4)
    return (torch.randn(1, 16, 2, 4, 4, generator=g), torch.tensor([600.0]), torch.randn(1, 5, TINY.text_dim,
            generator=g), [torch.randn(1, 96, 2, 4, 4, generator=g)], [0.9])


def forward(model, inputs):
    with torch.no_grad():
        return model(*inputs)


def numpy_model(path) -> VaceTransformer:
    """torch.nn fp32 model holding the file's weights as gguf-py's numpy code dequantizes them."""
    model = VaceTransformer(TINY).eval()
    model.load_state_dict({k.removeprefix("model.diffusion_model."): v for k, v in read_numpy(path).items()})
    return model


@pytest.mark.parametrize("qtype", [*QUANTIZED, "BF16", "F16"])
def test_tiny_model_forward_equals_numpy_dequantized(tmp_path, weights, inputs, qtype):
    path = write_gguf(weights, tmp_path / f"vace_{qtype}.gguf", qtype, prefix="model.diffusion_model.")
    types = set(stored_types(path).values())
    assert qtype in types and "F32" in types  # the Linear weights quantized, 1-D tensors and modulation F32
    model = load_vace_model(path, device="cpu")
    if qtype in ggml.QUANTIZED:
        q = model.blocks[1].ffn[0]
        assert ops.is_quantized(q) and q.weight.dtype == torch.uint8 and q.ggml_format == (qtype, (512, 256))
        assert q.weight.numel() == 512 * 256 // ggml.FORMATS[qtype].block_size * ggml.FORMATS[qtype].type_size
    out, ref = forward(model, inputs), forward(numpy_model(path), inputs)
    assert out.abs().max() > 0.1
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def mapped_ranges(path) -> list[tuple[int, int]]:
    """Address ranges where this process maps the file (Linux)."""
    ranges = []
    for line in open("/proc/self/maps"):
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].strip() == str(path):
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            ranges.append((lo, hi))
    return ranges


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_quantized_weights_stay_mapped_from_the_file(tmp_path, weights):
    path = write_gguf(weights, tmp_path / "vace.gguf", "Q4_K")
    model = load_vace_model(path, device="cpu")
    ranges = mapped_ranges(path)
    assert ranges
    for layer in (model.blocks[0].self_attn.q, model.vace_blocks[1].ffn[2], model.head.head):
        assert any(lo <= layer.weight.data_ptr() < hi for lo, hi in ranges)  # the map itself, not a copy


def test_q8_0_within_its_quantization_error(tmp_path, weights, inputs):
    """Q8_0 rounds each value to the nearest multiple of d = max|block| / 127 (32-value blocks), then stores d in
    float16: |error| <= d / 2 + 127 |d - f16(d)| <= max|block| (1/254 + 2^-11). Through the tiny model's 6 blocks the
    forward differs from fp32 by 0.87 % (relative L2, these seeds): asserted < 2 %, and far above the 1e-5 of an
    exact path."""
    path = write_gguf(weights, tmp_path / "vace_q8.gguf", "Q8_0")
    loaded = load_vace_model(path, device="cpu")
    w = weights["blocks.2.ffn.2.weight"]
    error = (loaded.blocks[2].ffn[2].dequantized_weight(w) - w).reshape(-1, 32).abs()
    bound = w.reshape(-1, 32).abs().amax(dim=1, keepdim=True) * (1 / 254 + 2**-11)
    assert error.max() > 0 and (error <= bound).all()
    exact = VaceTransformer(TINY).eval()
    exact.load_state_dict(weights)
    out, ref = forward(loaded, inputs), forward(exact, inputs)
    relative = ((out - ref).norm() / ref.norm()).item()
    assert 1e-3 < relative < 0.02


def test_gguf_module_on_safetensors_or_gguf_base(tmp_path, weights, inputs):
    """A GGUF VACE module merges onto a GGUF or a safetensors T2V base: the forward of the weights they hold."""
    from vace_core.checkpoints import save_checkpoint

    base, module = split_vace_module(weights)
    module_gguf, base_gguf = (write_gguf(sd, tmp_path / f"{n}.gguf", "Q5_K", seed=i)
                              for i, (n, sd) in enumerate((("module", module), ("base", base))))
    base_st = save_checkpoint(base, tmp_path / "base.safetensors", "official")
    for base_file, base_values in ((base_gguf, read_numpy(base_gguf)), (base_st, base)):
        model = load_vace_model(module_gguf, base_file, device="cpu")
        assert ops.is_quantized(model.vace_blocks[0].before_proj)
        assert ops.is_quantized(model.blocks[0].self_attn.q) == (base_file == base_gguf)
        ref = VaceTransformer(TINY).eval()
        ref.load_state_dict(base_values | read_numpy(module_gguf))
        torch.testing.assert_close(forward(model, inputs), forward(ref, inputs), rtol=1e-5, atol=1e-5)
    with pytest.raises(VaceError, match="only VACE context blocks"):
        load_vace_model(module_gguf, device="cpu")


def test_orig_shape_metadata_and_no_architecture(tmp_path, weights, inputs):
    """ComfyUI-GGUF stores some tensors reshaped to rows of 256 with their shape in comfy.gguf.orig_shape.<name>;
    files of other tools carry no general.architecture."""
    writer = gguf.GGUFWriter(path=None, arch="wan")
    for key, value in weights.items():
        data = value.numpy()
        if key == "blocks.0.ffn.2.weight":  # (256, 512) -> rows of 256, Q8_0
            writer.add_array(f"comfy.gguf.orig_shape.{key}", list(data.shape))
            data = data.reshape(-1, 256)
            writer.add_tensor(key, gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0),
                              raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(key, data.astype(np.float32))
    path = tmp_path / "reshaped.gguf"
    writer.write_header_to_file(path=path)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    model = load_vace_model(path, device="cpu")
    assert model.blocks[0].ffn[2].ggml_format == ("Q8_0", (256, 512))
    no_arch = write_gguf(weights, tmp_path / "no_arch.gguf", "Q8_0", arch=None)
    assert gguf.GGUFReader(no_arch).get_field("general.architecture") is None
    torch.testing.assert_close(forward(load_vace_model(no_arch, device="cpu"), inputs),
                               forward(numpy_model(no_arch), inputs), rtol=1e-5, atol=1e-5)


def test_storage_dtype_dequantizes(tmp_path, weights, inputs):
    """A storage dtype asked for dequantizes the GGUF weights to it (plain layers, same values)."""
    path = write_gguf(weights, tmp_path / "v.gguf", "Q6_K")
    model = load_vace_model(path, device="cpu", storage_dtype=torch.float32)
    assert not any(ops.is_quantized(m) for m in model.modules())
    assert model.blocks[0].self_attn.q.weight.dtype == torch.float32
    torch.testing.assert_close(forward(model, inputs), forward(numpy_model(path), inputs), rtol=1e-5, atol=1e-5)
    plain = load_vace_model(path, device="cpu", operations=torch.nn)
    torch.testing.assert_close(forward(plain, inputs), forward(model, inputs), rtol=0, atol=0)


def test_lora_on_gguf_unmerged(tmp_path, weights, inputs):
    """A LoRA on a GGUF model changes it exactly as on the same weights dequantized; the blocks never change;
    remove_loras restores the model; merging into quantized weights is refused before anything changes."""
    path = write_gguf(weights, tmp_path / "v.gguf", "Q4_0")
    model = load_vace_model(path, device="cpu")
    plain = load_vace_model(path, device="cpu", storage_dtype=torch.float32)
    lora = comfy_lora(param_shapes(plain))
    assert param_shapes(model) == param_shapes(plain)
    before, blocks = forward(model, inputs), model.blocks[0].self_attn.q.weight.clone()
    assert apply_lora(model, lora, 0.8, 0.5, merge=False).report() == apply_lora(plain, lora, 0.8, 0.5).report()
    patched = forward(model, inputs)
    assert (patched - before).abs().max() > 1e-3
    torch.testing.assert_close(patched, forward(plain, inputs), rtol=1e-5, atol=1e-5)
    assert torch.equal(model.blocks[0].self_attn.q.weight, blocks)
    remove_loras(model)
    assert torch.equal(forward(model, inputs), before)
    with pytest.raises(VaceError, match="GGUF-quantized weights .*merge=False"):
        apply_lora(model, lora, 0.8)
    assert torch.equal(forward(model, inputs), before)


# ------------------------------------------------------------------------------------------------- errors
def test_other_architectures_refused(tmp_path, weights):
    for arch, words in (("flux", "architecture 'flux', not a Wan transformer"), ("t5encoder", "text encoder")):
        path = write_gguf({"a.weight": torch.ones(4, 32)}, tmp_path / f"{arch}.gguf", "F32", arch=arch)
        with pytest.raises(VaceError, match=words):
            load_state_dict(path)


def test_unsupported_type_refused(tmp_path, weights):
    path = tmp_path / "iq.gguf"
    writer = gguf.GGUFWriter(path=None, arch="wan")
    raw = np.zeros((4, 66), dtype=np.uint8)  # IQ2_XXS: 256 values in 66 bytes
    writer.add_tensor("blocks.0.self_attn.q.weight", raw, raw_dtype=gguf.GGMLQuantizationType.IQ2_XXS)
    writer.write_header_to_file(path=path)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(VaceError, match=r"blocks.0.self_attn.q.weight of iq.gguf is stored as ggml type IQ2_XXS"):
        load_state_dict(path)


def test_damaged_files(tmp_path, weights):
    path = write_gguf(weights, tmp_path / "v.gguf", "Q8_0")
    data = path.read_bytes()
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(VaceError, match="truncated.gguf .*download it again"):
        load_vace_model(truncated, device="cpu")
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(VaceError, match="Could not read checkpoint file .*junk.gguf"):
        load_state_dict(tmp_path / "junk.gguf")


def test_nan_scale_refused(tmp_path, weights):
    path = write_gguf(weights, tmp_path / "v.gguf", "Q8_0")
    reader = gguf.GGUFReader(path, mode="r+")
    stored = next(t for t in reader.tensors if t.name == "blocks.3.cross_attn.v.weight")
    stored.data[1, 34:36] = np.array([np.float16("nan")]).view(np.uint8)  # the 2nd block's scale of row 1
    reader.data.flush()
    del reader
    model = load_vace_model(path, device="cpu")  # returns at once: the mapped blocks are checked in the background
    assert model.weights_check.count >= 4 * 4  # every block's attention weights among them, still GGUF blocks
    with pytest.raises(VaceError, match="blocks.3.cross_attn.v.weight holds NaN"):
        model.weights_checked()  # what the first forward (and the sampler, before its first step) waits for


def test_info_reports_quantization(tmp_path, weights):
    path = write_gguf(weights, tmp_path / "Wan2.1_VACE-Q5_K_M.gguf", "Q5_K")
    assert storage_types(load_state_dict(path)).startswith("Q5_K 68 tensors (")
    done = subprocess.run([sys.executable, "-m", "vace_core", "info", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "dim=256" in done.stdout and "storage: Q5_K 68 tensors (" in done.stdout
    assert "float32 " in done.stdout and "float16 1 tensors" in done.stdout  # text_embedding.0: rows of 64 -> F16


def test_convert_gguf_to_safetensors(tmp_path, weights, inputs):
    path = write_gguf(weights, tmp_path / "v.gguf", "Q4_1")
    out = tmp_path / "v.safetensors"
    done = subprocess.run([sys.executable, "-m", "vace_core", "convert", str(path), str(out)], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    torch.testing.assert_close(forward(load_vace_model(out, device="cpu"), inputs),
                               forward(numpy_model(path), inputs), rtol=1e-5, atol=1e-5)
