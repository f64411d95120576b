"""Zero-copy loading: the model's weights are the checkpoint file's memory map, bit for bit what
`safetensors.torch.load_file` reads, in every layout and dtype; conversions take one tensor at a time; the map
outlives a renamed or deleted file; writes never reach the file; memory stays within the file's size
(measured in fresh processes)."""

import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.test_checkpoints import CFG, HEADS, make_inputs, random_state_dict, reference_output, run
from vace_core.checkpoints import finite, io, load_vace_model, save_checkpoint, split_vace_module
from vace_core.checkpoints.fp8 import dequantize_tensor, drop_fp8_markers
from vace_core.checkpoints.keymap import to_official
from vace_core.checkpoints.save import convert_tensor
from vace_core.errors import VaceError
from vace_core.experts import Experts
from vace_core.lora import apply_lora
from vace_core.pipeline import SamplerSettings, sample_latent

ROOT = Path(__file__).resolve().parents[1]
E4M3 = torch.float8_e4m3fn
DTYPES = {"fp32": (torch.float32, False), "fp16": (torch.float16, False), "bf16": (torch.bfloat16, False),
          "fp8_e4m3fn": (E4M3, False), "scaled_fp8": (E4M3, True)}
SHARDS = 20_000  # several shards even for the tiny model
LAYOUTS = ("single", "comfy_prefixed", "sharded", "diffusers_folder", "pth", "module_and_base")


@pytest.fixture(scope="module")
def weights():
    return random_state_dict(CFG)


@pytest.fixture(scope="module")
def inputs():
    return make_inputs()


@pytest.fixture(scope="module")
def exact(weights, inputs):
    return reference_output(weights, inputs)


def write(weights, folder: Path, layout: str, dtype, scaled) -> tuple[Path, Path | None]:
    """(what to load, its base or None) in `layout`."""
    options = {"scaled": scaled, "config": CFG}
    if layout == "single":
        return save_checkpoint(weights, folder / "vace.safetensors", "official", dtype, **options), None
    if layout == "comfy_prefixed":
        return save_checkpoint(weights, folder / "vace.safetensors", "comfy", dtype, **options), None
    if layout == "sharded":
        return save_checkpoint(weights, folder / "vace", "official_sharded", dtype, max_shard_bytes=SHARDS,
                               **options), None
    if layout == "diffusers_folder":
        return save_checkpoint(weights, folder / "vace", "diffusers", dtype, max_shard_bytes=SHARDS, **options), None
    if layout == "pth":
        return save_checkpoint(weights, folder / "vace.pth", "pth", dtype, **options), None
    base, _ = split_vace_module(weights)
    return (save_checkpoint(weights, folder / "module.safetensors", "vace_module", dtype, **options),
            save_checkpoint(base, folder / "t2v.safetensors", "comfy", dtype, **options))


def files_of(path: Path) -> list[Path]:
    return sorted(p for p in ([path] if path.is_file() else path.iterdir()) if p.suffix in (".safetensors", ".pth"))


def reference_read(path: Path) -> dict[str, torch.Tensor]:
    """What the reference readers give (copies into memory), under official keys, markers dropped."""
    read = {}
    for file in files_of(path):
        read |= load_file(str(file)) if file.suffix == ".safetensors" else torch.load(file, weights_only=True)
    return drop_fp8_markers(to_official(read))


def file_map_ranges(paths: list[Path]) -> list[tuple[int, int]]:
    """Address ranges of this process's memory maps of `paths` (from /proc/self/maps)."""
    names = {str(p.resolve()) for p in paths}
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] in names:
            ranges.append(tuple(int(a, 16) for a in fields[0].split("-")))
    return ranges


def in_map(tensor: torch.Tensor, ranges) -> bool:
    return any(start <= tensor.data_ptr() and tensor.data_ptr() + tensor.nbytes <= end for start, end in ranges)


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.reshape(-1).view(torch.uint8),
                                                                       b.reshape(-1).view(torch.uint8))


@pytest.mark.parametrize("dtype_name", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_weights_are_the_file_map_bit_for_bit(weights, tmp_path, layout, dtype_name):
    """Every parameter equals load_file's tensor bit for bit and IS the file's memory (no copy), scales included."""
    dtype, scaled = DTYPES[dtype_name]
    path, base = write(weights, tmp_path, layout, dtype, scaled)
    model = load_vace_model(path, base, device="cpu", **HEADS)
    expected = (reference_read(base) if base else {}) | reference_read(path)
    held = model.state_dict()
    assert held.keys() == expected.keys()
    assert all(same_bits(held[k], expected[k]) for k in expected)
    maps = file_map_ranges(files_of(path) + (files_of(base) if base else []))
    assert maps and all(in_map(t, maps) for t in held.values())
    assert (model.blocks[0].ffn[0].scale_weight is not None) == scaled


@pytest.mark.parametrize("case", ["fp32_to_bf16", "fp16_to_fp8", "scaled_fp8_dequantised"])
def test_conversions_equal_the_reference_one_tensor_at_a_time(weights, tmp_path, case):
    """A dtype the file does not hold: each tensor converted alone, equal to converting load_file's tensor, and held
    in the process's own memory; tensors already right (norms and biases next to fp8 matrices) stay mapped."""
    file_dtype, scaled, storage, operations = {"fp32_to_bf16": (None, False, torch.bfloat16, None),
                                               "fp16_to_fp8": (torch.float16, False, E4M3, None),
                                               "scaled_fp8_dequantised": (E4M3, True, None, torch.nn)}[case]
    path = save_checkpoint(weights, tmp_path / "vace.safetensors", "official", file_dtype, scaled=scaled)
    model = load_vace_model(path, device="cpu", storage_dtype=storage, operations=operations, **HEADS)
    read = reference_read(path)
    expected = {k: convert_tensor(k, dequantize_tensor(k, v, read, torch.float32) if scaled else v,
                                  torch.float32 if scaled else storage)
                for k, v in read.items() if not k.endswith(".scale_weight")}
    held = model.state_dict()
    assert held.keys() == expected.keys() and all(same_bits(held[k], expected[k]) for k in expected)
    maps = file_map_ranges([path])
    converted = {k for k in held if held[k].dtype != read[k].dtype or k[:-7] + ".scale_weight" in read}
    assert converted and not any(in_map(held[k], maps) for k in converted)
    assert all(in_map(held[k], maps) for k in held.keys() - converted)  # the rest stays the file's memory


def test_model_runs_after_its_file_is_renamed_and_deleted(weights, inputs, tmp_path):
    """The map keeps the file's contents alive (Linux, macOS): the model runs on, with the very same output."""
    path = save_checkpoint(weights, tmp_path / "vace.safetensors", "official", torch.float16)
    model = load_vace_model(path, device="cpu", **HEADS)
    before = run(model, inputs)
    moved = path.rename(tmp_path / "elsewhere.safetensors")
    assert torch.equal(run(model, inputs), before)
    moved.unlink()
    assert not moved.exists()
    assert torch.equal(run(model, inputs), before)


def test_writes_into_mapped_weights_never_reach_the_file(weights, inputs, tmp_path):
    """A LoRA merged in place changes the model only: the map is private (copy-on-write)."""
    path = save_checkpoint(weights, tmp_path / "vace.safetensors", "official")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    model = load_vace_model(path, device="cpu", **HEADS)
    before = run(model, inputs)
    g = torch.Generator().manual_seed(3)
    lora = {"diffusion_model.blocks.0.ffn.0.lora_down.weight": torch.randn(4, CFG.dim, generator=g),
            "diffusion_model.blocks.0.ffn.0.lora_up.weight": torch.randn(CFG.ffn_dim, 4, generator=g)}
    apply_lora(model, lora, merge=True)
    assert not torch.equal(run(model, inputs), before)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert torch.equal(run(load_vace_model(path, device="cpu", **HEADS), inputs), before)


def test_misaligned_tensor_is_read_correctly(tmp_path):
    """A writer that does not align tensors (offsets not a multiple of the element size): copied, still exact."""
    values = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    header = {"odd": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},
              "weight": {"dtype": "F32", "shape": [2, 3], "data_offsets": [1, 25]}}
    text = json.dumps(header).encode()
    path = tmp_path / "odd.safetensors"
    path.write_bytes(len(text).to_bytes(8, "little") + text + b"\x07" + values.numpy().tobytes())
    read = io.read_file(path)
    assert torch.equal(read["weight"], values) and read["odd"].tolist() == [7]
    assert torch.equal(read["weight"], load_file(str(path))["weight"])


def test_truncated_file_says_so_with_sizes(weights, tmp_path):
    path = save_checkpoint(weights, tmp_path / "vace.safetensors", "official")
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(VaceError, match=rf"Could not read checkpoint file .*vace\.safetensors .*truncated \(expected "
                                        rf"{size} bytes, found {size - 1}\).*download it again"):
        load_vace_model(path, device="cpu", **HEADS)
    path.write_bytes(path.read_bytes()[:100])  # cut inside the header
    with pytest.raises(VaceError, match=r"header length \d+ does not fit the file's 100 bytes"):
        io.read_file(path)


def test_unknown_dtype_is_named(tmp_path):
    text = json.dumps({"w": {"dtype": "F8_E8M0", "shape": [2], "data_offsets": [0, 2]}}).encode()
    path = tmp_path / "new.safetensors"
    path.write_bytes(len(text).to_bytes(8, "little") + text + b"\0\0")
    with pytest.raises(VaceError, match="tensor w has dtype F8_E8M0, which this loader does not read"):
        io.read_file(path)


def damaged(weights, key: str, value: float) -> dict[str, torch.Tensor]:
    """`weights` with `value` (NaN, inf) in the last element of `key`."""
    bad = dict(weights)
    bad[key] = weights[key].clone()
    bad[key].view(-1)[-1] = value
    return bad


def refused(key: str):
    return pytest.raises(VaceError, match=rf"the checkpoint's tensor {re.escape(key)} holds NaN or infinite values")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, E4M3])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_nan_or_inf_in_any_layout_stops_the_first_call(weights, inputs, tmp_path, monkeypatch, layout, dtype):
    """The check of the mapped weights runs in the background (in chunks: a NaN in the last one is found): the
    load returns, the model's first call raises naming the tensor, and so does every later wait."""
    monkeypatch.setattr(finite, "FINITE_CHUNK", 7)
    key = "blocks.1.ffn.0.weight" if dtype != torch.float32 else "vace_blocks.1.cross_attn.o.bias"
    bad_value = float("-inf") if dtype == torch.float32 else float("nan")  # fp8 e4m3fn has no inf
    path, base = write(damaged(weights, key, bad_value), tmp_path, layout, dtype, False)
    model = load_vace_model(path, base, device="cpu", **HEADS)
    with refused(key):
        run(model, inputs)
    with refused(key):
        model.weights_checked()


def test_a_converted_tensor_is_checked_while_loading(weights, tmp_path):
    """A tensor the load converts (fp32 file -> bf16 weights) is checked from the pages the conversion read,
    before they are dropped: the load itself refuses it."""
    key = "blocks.0.self_attn.q.weight"
    path = save_checkpoint(damaged(weights, key, float("inf")), tmp_path / "vace.safetensors", "official")
    with refused(key):
        load_vace_model(path, device="cpu", storage_dtype=torch.bfloat16, **HEADS)


def test_the_load_returns_before_the_check_and_the_first_call_waits_for_it(weights, inputs, exact, tmp_path,
                                                                           monkeypatch):
    """The check reads the weights after load_vace_model returned (here held until the gate opens); a call made
    meanwhile waits for it, then gives the exact output. Every float weight was checked."""
    gate, seen, real = threading.Event(), [], finite.check_finite
    deadline = time.monotonic() + 30

    def gated(key, value):
        gate.wait(timeout=max(0.0, deadline - time.monotonic()))  # a load that waited for the check stalls here
        seen.append(key)
        real(key, value)

    monkeypatch.setattr(finite, "check_finite", gated)
    path = save_checkpoint(weights, tmp_path / "vace.safetensors", "official")
    start = time.perf_counter()
    model = load_vace_model(path, device="cpu", **HEADS)
    assert time.perf_counter() - start < 15 and not seen
    out = []
    call = threading.Thread(target=lambda: out.append(run(model, inputs)))
    call.start()
    call.join(timeout=1.0)
    assert call.is_alive() and not out  # waiting for the check
    gate.set()
    call.join(timeout=120)
    assert torch.equal(out[0], exact) and sorted(seen) == sorted(weights)
    assert model.weights_check.seconds is not None


def test_sampling_waits_for_both_experts_checks_before_the_first_step(weights, tmp_path):
    """Wan2.2: a damaged low-noise expert stops the run before the high-noise expert's first step (no preview,
    no latent comes out of the high-noise steps)."""
    key = "head.head.weight"
    high = load_vace_model(save_checkpoint(weights, tmp_path / "high.safetensors", "official"), device="cpu", **HEADS)
    low = load_vace_model(save_checkpoint(damaged(weights, key, float("nan")), tmp_path / "low.safetensors",
                                          "official"), device="cpu", **HEADS)
    x, _, text, vcu = make_inputs()
    steps = []
    with refused(key):
        sample_latent(Experts(high, low), [vcu], text, text, settings=SamplerSettings(steps=2),
                      callback=lambda *a: steps.append(a[0]))
    assert steps == []
    sample_latent(Experts(high, high), [vcu], text, text, settings=SamplerSettings(steps=2),
                  callback=lambda *a: steps.append(a[0]))
    assert steps == [1, 2]  # the same run with a sound low-noise expert samples


def test_command_line_refuses_a_damaged_checkpoint_by_tensor_name(tmp_path, monkeypatch):
    """`run --model` with NaN in one tensor: a message naming it, no video written (one model, and a long video
    with Wan2.2 experts whose low-noise one is damaged)."""
    from vace_core import __main__ as cli
    from vace_core.embedded import tiny_model

    key = "blocks.0.ffn.2.weight"
    state = tiny_model(0).state_dict()
    save_file(state, tmp_path / "good.safetensors")
    save_file(damaged(state, key, float("nan")), tmp_path / "bad.safetensors")
    monkeypatch.setattr(cli, "_check_model_files", lambda args: None)
    task = ["run", "--prompt", "a cat", "--width", "16", "--height", "16", "--steps", "2", "--device", "cpu"]
    with pytest.raises(SystemExit, match=rf"tensor {re.escape(key)} holds NaN or infinite values"):
        cli.main([*task, "--model", str(tmp_path / "bad.safetensors"), "--out", str(tmp_path / "one.mp4")])
    with pytest.raises(SystemExit, match=rf"tensor {re.escape(key)} holds NaN or infinite values"):
        cli.main([*task, "--length", "13", "--window", "9", "--model", str(tmp_path / "good.safetensors"),
                  "--model-low", str(tmp_path / "bad.safetensors"), "--out", str(tmp_path / "long.mp4")])
    assert not (tmp_path / "one.mp4").exists() and not (tmp_path / "long.mp4").exists()


# ------------------------------------------------------------------------------------- memory, fresh processes
MEMORY_PROBE = textwrap.dedent("""
    import json, sys, torch
    from vace_core.checkpoints import load_vace_model
    from vace_core.config import VaceConfig

    def status():
        fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
        return {k: int(fields[k].split()[0]) * 1024 for k in ("VmRSS", "VmHWM", "RssAnon", "RssFile")}

    path, base, storage, warm = sys.argv[1:5]
    load_vace_model(warm, device="cpu", num_heads=4)  # lazy imports and first-call caches out of the way
    open("/proc/self/clear_refs", "w").write("5")  # VmHWM := VmRSS
    before = status()
    model = load_vace_model(path, None if base == "-" else base, device="cpu", num_heads=4,
                            storage_dtype=None if storage == "-" else getattr(torch, storage))
    after = status()
    print(json.dumps({"peak": after["VmHWM"] - before["VmRSS"], "anon": after["RssAnon"] - before["RssAnon"],
                      "largest": max(t.nbytes for t in model.state_dict().values())}))
""")
MID = CFG.__class__(dim=512, ffn_dim=1024, num_heads=4, num_layers=4, vace_layers=(0, 2), text_dim=512)
SLACK = 4 * 2**20  # allocator and interpreter noise of one load


@pytest.fixture(scope="module")
def mid_files(tmp_path_factory):
    """A 75 MB fp32 model (fp16 too), its module + base split, and a ComfyUI full checkpoint carrying a 64 MB
    tensor the DiT does not use."""
    folder = tmp_path_factory.mktemp("mid")
    sd = random_state_dict(MID)
    base, _ = split_vace_module(sd)
    unused = {"first_stage_model.decoder.big.weight": torch.ones(16, 2**20)}
    return {"fp32": save_checkpoint(sd, folder / "fp32.safetensors", "official"),
            "fp16": save_checkpoint(sd, folder / "fp16.safetensors", "official", torch.float16),
            "module": save_checkpoint(sd, folder / "module.safetensors", "vace_module"),
            "base": save_checkpoint(base, folder / "base.safetensors", "official"),
            "full": _with_unused(sd, unused, folder / "full.safetensors"),
            "warm": save_checkpoint(random_state_dict(MID.__class__(dim=128, ffn_dim=64, num_heads=4, num_layers=2,
                                                                    vace_layers=(0,), text_dim=32)),
                                    folder / "warm.safetensors", "official")}


def _with_unused(sd, unused, path):
    save_file({"model.diffusion_model." + k: v for k, v in sd.items()} | unused, str(path))
    return path


def probe(files, name, base="-", storage="-") -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(files[name]), str(files[base]) if base != "-"
                          else "-", storage, str(files["warm"])], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", ["fp32", "fp16"])
def test_loading_in_the_files_dtype_costs_the_file_and_no_anonymous_memory(mid_files, name):
    size = mid_files[name].stat().st_size
    result = probe(mid_files, name)
    assert result["peak"] <= 1.1 * size, result
    assert result["anon"] <= 0.1 * size, result


def test_module_and_base_merge_holds_each_tensor_once(mid_files):
    used = mid_files["fp32"].stat().st_size  # the merged model: the base's blocks plus the module's
    result = probe(mid_files, "module", base="base")
    assert result["peak"] <= 1.1 * used and result["anon"] <= 0.1 * used, result


def test_unused_keys_of_a_full_checkpoint_are_never_read(mid_files):
    dit = mid_files["fp32"].stat().st_size
    assert mid_files["full"].stat().st_size > dit + 60 * 2**20
    result = probe(mid_files, "full")
    assert result["peak"] <= 1.1 * dit, result


def test_a_program_exiting_while_the_check_runs_exits_cleanly(mid_files):
    """The background check is stopped after its tensor at exit: a daemon thread left inside a torch op would
    abort the process ("terminate called without an active exception")."""
    script = "import sys; from vace_core.checkpoints import load_vace_model; load_vace_model(sys.argv[1], num_heads=4)"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", script, str(mid_files["fp32"])], capture_output=True, text=True,
                             env=env, timeout=300)
        assert out.returncode == 0 and "terminate" not in out.stderr, out.stderr[-2000:]


def test_conversion_holds_one_file_tensor_at_a_time(mid_files):
    """fp32 file -> bf16 weights: the converted half plus one tensor of the file, not the whole file too."""
    size = mid_files["fp32"].stat().st_size
    result = probe(mid_files, "fp32", storage="bfloat16")
    assert result["peak"] <= size / 2 + result["largest"] * 2 + SLACK, result


@pytest.mark.parametrize("dtype", [E4M3, torch.float8_e5m2])
def test_fp8_check_flags_exactly_the_non_finite_bytes(dtype):
    """Every one of the 256 fp8 bit patterns, between finite neighbours: refused iff it is NaN / inf."""
    for byte in range(256):
        value = torch.tensor([0, byte, 56], dtype=torch.uint8).view(dtype)
        if torch.isfinite(value.float()).all():
            finite.check_finite("w", value)
        else:
            with pytest.raises(VaceError, match="tensor w holds NaN"):
                finite.check_finite("w", value)


def test_a_sum_that_overflows_is_not_mistaken_for_inf():
    """fp16 weights whose sum overflows fp16 are finite: checked again in float32 chunks, accepted."""
    finite.check_finite("w", torch.full((100,), 60000.0, dtype=torch.float16))
    with pytest.raises(VaceError, match="tensor w holds NaN"):
        finite.check_finite("w", torch.tensor([60000.0] * 3 + [float("inf")], dtype=torch.float16))
