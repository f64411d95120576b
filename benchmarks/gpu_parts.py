"""The checks of gpu_check.py, one function per part. Each returns a JSON-able dict with a "status"
("ok", "fail", or "skipped: <why>") and its numbers; it runs in its own process (see gpu_check.py).

Weights are random, made on the device at the real shapes (`random_weights`), scaled like trained layers
(1/sqrt(fan_in)), so activations keep their size through 30-40 blocks and relative errors mean something.
`--dry-run` shrinks every shape (`SHAPES["dry"]`) and runs on CPU: the same code, tiny tensors.
"""

import contextlib
import importlib.machinery
import importlib.util
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vace_core import ops  # noqa: E402
from vace_core.checkpoints.fp8 import drop_fp8_markers, quantize_scaled  # noqa: E402
from vace_core.checkpoints.save import convert_tensor  # noqa: E402
from vace_core.config import VACE_1_3B, VACE_14B, VaceConfig  # noqa: E402
from vace_core.memory import activation_bytes  # noqa: E402
from vace_core.speed import HostSyncs, Speed, apply_speed  # noqa: E402
from vace_core.transformer import VaceTransformer  # noqa: E402

GIB = 2**30
# dense bf16 tensor-core peaks (no sparsity), FLOP/s, from NVIDIA's data sheets; first match of the device name
BF16_PEAKS = {"H200": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "H800": 989e12, "A100": 312e12,
              "L40S": 362e12, "L4": 121e12, "RTX 4090": 165e12, "RTX 3090": 71e12, "A10": 125e12}


@dataclass(frozen=True)
class Shapes:
    small: VaceConfig  # the 1.3B shape
    large: VaceConfig  # the 14B shape
    latent: tuple[int, int, int]  # speed / VRAM: 832x480x81 -> (21, 60, 104), 32,760 tokens
    check_latent: tuple[int, int, int]  # correctness: 832x480x17 -> (5, 60, 104)
    text_tokens: int
    vae_dim: int
    vae_latents: dict  # name -> latent (T, H, W) for the tiled decode
    caps_gib: tuple[int, ...]
    e2e_frames: int
    e2e_size: tuple[int, int]
    repeats: int


SHAPES = {
    "full": Shapes(VACE_1_3B, VACE_14B, (21, 60, 104), (5, 60, 104), 128, 96,
                   {"480p": (21, 60, 104), "720p": (21, 90, 160)}, (24, 12), 17, (480, 832), 5),
    "dry": Shapes(VaceConfig(dim=64, ffn_dim=128, num_heads=2, num_layers=4, vace_layers=(0, 2), text_dim=64),
                  VaceConfig(dim=96, ffn_dim=160, num_heads=3, num_layers=4, vace_layers=(0, 2), text_dim=64),
                  (3, 4, 8), (3, 4, 8), 16, 8, {"tiny": (2, 8, 8)}, (), 5, (64, 64), 1),
}


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def fast_dtype() -> torch.dtype:
    """What users run: bf16 on CUDA; float32 on CPU (bf16 kernels are slow there)."""
    return torch.bfloat16 if torch.cuda.is_available() else torch.float32


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def random_weights(cfg: VaceConfig, dtype=torch.float32, device=None, seed: int = 0) -> dict:
    """Official-layout state dict: Linear/Conv weights ~ N(0, 1/fan_in), norms 1, biases and modulation small.
    Made tensor by tensor on the device (a 14B model never exists in fp32), stored as `dtype` (fp8: matrices)."""
    device = device or globals()["device"]()
    shapes = VaceTransformer(cfg, device="meta").state_dict()
    g = torch.Generator(device).manual_seed(seed)
    out = {}
    for key, meta in shapes.items():
        value = torch.randn(meta.shape, generator=g, device=device)
        if "norm" in key:
            value = 1 + 0.1 * value
        elif meta.ndim >= 2 and "modulation" not in key:
            value /= math.sqrt(meta[0].numel())
        else:
            value *= 0.1 if "modulation" not in key else 1 / math.sqrt(cfg.dim)
        out[key] = convert_tensor(key, value, dtype)
    return out


def build(cfg, state, operations=ops.cast, device=None):
    """Our model holding `state` as is (no copies)."""
    model = VaceTransformer(cfg, operations, device="meta")
    model.load_state_dict({k: v.to(device) if device else v for k, v in state.items()}, assign=True)
    return model.eval().requires_grad_(False)


def inputs(cfg, latent, batch, dtype, seed=1, dev=None):
    """Noisy latent, timesteps, text features and one VCU context for one step (batch 2 = CFG)."""
    dev = dev or device()
    g = torch.Generator("cpu").manual_seed(seed)
    x = torch.randn(batch, cfg.in_dim, *latent, generator=g)
    text = torch.randn(batch, SHAPE.text_tokens, cfg.text_dim, generator=g)
    ctx = torch.randn(1, cfg.vace_in_dim, *latent, generator=g)
    t = torch.full((batch,), 700.0)
    return x.to(dev, dtype), t.to(dev), text.to(dev, dtype), ctx.to(dev, dtype)


def step(model, args):
    x, t, text, ctx = args
    with torch.no_grad():
        return model(x, t, text, [ctx], [1.0])


def flops_per_forward(cfg: VaceConfig, tokens: int) -> float:
    """DESIGN.md §8: per main and context block 2L(4d^2 + 2d ffn) + 4L^2 d, plus cross-attention 4L*512*d."""
    d, L = cfg.dim, tokens
    per_block = 2 * L * (4 * d * d + 2 * d * cfg.ffn_dim) + 4 * L * L * d + 4 * L * cfg.text_len * d
    return per_block * (cfg.num_layers + len(cfg.vace_layers))


def bf16_peak() -> tuple[float | None, str]:
    if os.environ.get("GPU_CHECK_PEAK_TFLOPS"):
        return float(os.environ["GPU_CHECK_PEAK_TFLOPS"]) * 1e12, "given (--peak-tflops)"
    if not torch.cuda.is_available():
        return None, "no CUDA"
    name = torch.cuda.get_device_name()
    for key, peak in BF16_PEAKS.items():
        if key in name:
            return peak, f"{key} data sheet, dense bf16"
    return None, f"unknown for {name}: pass --peak-tflops"


def fp8_compute_supported() -> bool:
    """torch._scaled_mm: CUDA compute capability 8.9 (Ada) or 9.0+ (Hopper); the CPU kernel too."""
    return not torch.cuda.is_available() or torch.cuda.get_device_capability() >= (8, 9)


def free(*objs):
    for o in objs:
        del o
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def comfy_modules(memory_manager: bool = False):
    """ComfyUI's modules when COMFYUI_PATH (or the test runtime) holds ComfyUI and its imports work here: the
    native Wan model, and with `memory_manager` its ModelPatcher (which needs all of ComfyUI's requirements)."""
    from tests.integration.comfy_server import find_runtime

    runtime = find_runtime()
    if runtime is None:
        return None
    sys.path.insert(0, str(runtime.path))
    import comfy.cli_args

    comfy.cli_args.args.cpu = not torch.cuda.is_available()
    try:
        import comfy.ldm.wan.model
        import comfy.model_management
        import comfy.ops

        if memory_manager:
            import comfy.model_patcher  # noqa: F401
    except ImportError:
        return None
    return comfy


# ---------------------------------------------------------------------------------------------------- parts
def part_env() -> dict:
    cuda = torch.cuda.is_available()
    peak, source = bf16_peak()
    info = {"status": "ok", "torch": torch.__version__, "cuda": torch.version.cuda, "device": device().type,
            "bf16_peak_tflops": peak and peak / 1e12, "peak_source": source,
            "flash_attn": installed("flash_attn"), "sageattention": installed("sageattention"),
            "diffusers": installed("diffusers"), "comfyui": comfy_modules() is not None,
            "fp8_compute": fp8_compute_supported()}
    if cuda:
        props = torch.cuda.get_device_properties(0)
        info |= {"gpu": props.name, "capability": f"{props.major}.{props.minor}",
                 "memory_gib": round(props.total_memory / GIB, 1)}
    return info


BOUNDS = {"bf16": 0.05, "fp16": 0.02, "fp8_e4m3": 0.15, "fp8_e4m3_scaled": 0.15, "fp8_compute": 0.2, "lean": 1e-2}


def part_precision() -> dict:
    """The 1.3B shape: bf16 / fp16 compute vs fp32 (same weights, one device); fp8 storage (+ scaled, + fp8
    compute) vs bf16; lean path vs exact in bf16."""
    cfg, dev = SHAPE.small, device()
    sd = random_weights(cfg, torch.float32, dev)
    errors = {}
    ref = step(build(cfg, sd), inputs(cfg, SHAPE.check_latent, 2, torch.float32))
    for name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        model = build(cfg, {k: v.to(dtype) for k, v in sd.items()})
        out = step(model, inputs(cfg, SHAPE.check_latent, 2, dtype))
        errors[name] = rel_err(out, ref)
        if name == "bf16":
            bf16_out = out
            errors["lean"] = rel_err(step(apply_speed(model, Speed(lean=True, ffn_chunk=4096)),
                                          inputs(cfg, SHAPE.check_latent, 2, dtype)), out)
        free(model)
    bf16_args = inputs(cfg, SHAPE.check_latent, 2, torch.bfloat16)
    fp8 = {"fp8_e4m3": {k: convert_tensor(k, v, ops.E4M3) for k, v in sd.items()},
           "fp8_e4m3_scaled": drop_fp8_markers(quantize_scaled(sd, ops.E4M3))}
    for name, state in fp8.items():
        model = build(cfg, state)
        errors[name] = rel_err(step(model, bf16_args), bf16_out)
        if name == "fp8_e4m3_scaled" and fp8_compute_supported():
            errors["fp8_compute"] = rel_err(step(apply_speed(model, Speed(fp8_compute=True)), bf16_args), bf16_out)
        free(model)
    over = {k: v for k, v in errors.items() if v > BOUNDS[k] or not math.isfinite(v)}
    return {"status": "fail: " + ", ".join(over) + " over bound" if over else "ok", "relative_error": errors,
            "bounds": {k: BOUNDS[k] for k in errors}, "tokens": math.prod(SHAPE.check_latent) // 4}


def part_noise() -> dict:
    from vace_core.sampling import make_noise

    shape = (1, 16, *SHAPE.latent)
    cpu = make_noise(shape, 1234, "cpu")
    if not torch.cuda.is_available():
        return {"status": "skipped: no CUDA (CPU noise drawn)", "std": cpu.std().item()}
    cuda = make_noise(shape, 1234, "cuda")
    same = torch.equal(cuda.cpu(), cpu)
    return {"status": "ok" if same else "fail: CUDA noise differs from CPU noise", "identical": same}


def part_attention() -> dict:
    from vace_core.attention import attention

    dev, dtype = device(), torch.bfloat16 if torch.cuda.is_available() else torch.float32
    tokens, heads = math.prod(SHAPE.check_latent) // 4, SHAPE.small.num_heads
    g = torch.Generator("cpu").manual_seed(0)
    q, k, v = (torch.randn(1, tokens, heads, SHAPE.small.head_dim, generator=g).to(dev, dtype) for _ in range(3))
    exact = attention(q.float(), k.float(), v.float(), "sdpa")
    result, bounds = {}, {"sdpa": 1e-2, "flash": 1e-2, "sage": 5e-2}
    for backend, module in (("sdpa", "torch"), ("flash", "flash_attn"), ("sage", "sageattention")):
        if not installed(module):
            result[backend] = "not installed"
            continue
        if backend != "sdpa" and not torch.cuda.is_available():
            result[backend] = "needs CUDA"
            continue
        out = attention(q, k, v, backend)
        seconds = statistics.median(timed(lambda b=backend: attention(q, k, v, b)) for _ in range(3))
        result[backend] = {"vs_fp32_sdpa": rel_err(out, exact), "seconds": seconds}
    over = [b for b, r in result.items() if isinstance(r, dict) and r["vs_fp32_sdpa"] > bounds[b]]
    return {"status": f"fail: {over}" if over else "ok", "tokens": tokens, "backends": result, "bounds": bounds}


def part_syncs() -> dict:
    """Steps 2..3 of a guided 3-step run: our host-read counter, and on CUDA torch's sync debug mode as errors."""
    from vace_core.pipeline import SamplerSettings, sample_latent

    cfg, dev, dtype = SHAPE.small, device(), fast_dtype()
    model = build(cfg, random_weights(cfg, dtype, dev))
    model.compute_dtype = dtype
    _, _, text, ctx = inputs(cfg, SHAPE.check_latent, 2, dtype)
    counter, cuda_error = HostSyncs(), []

    def callback(i, total, x, x0):
        if i == 1:
            counter.__enter__()
            if dev.type == "cuda":
                torch.cuda.set_sync_debug_mode("error")
        if i == total:
            counter.__exit__(None, None, None)
            if dev.type == "cuda":
                torch.cuda.set_sync_debug_mode("default")

    try:
        sample_latent(model, [ctx], text[:1], text[1:], None, SamplerSettings(steps=3), callback, dev)
    except RuntimeError as e:  # raised by the sync debug mode
        cuda_error.append(str(e).splitlines()[0])
    finally:
        if dev.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")
    ok = not counter.calls and not cuda_error
    return {"status": "ok" if ok else "fail: host syncs in the step loop", "host_reads": counter.calls,
            "cuda_sync_errors": cuda_error, "cuda_sync_debug_mode": dev.type == "cuda"}


def diffusers_model(cfg, sd, dtype):
    from diffusers import WanVACETransformer3DModel

    from vace_core.checkpoints.keymap import official_to_diffusers

    with torch.device(device()):  # not meta: the RoPE tables are buffers made at construction
        ref = WanVACETransformer3DModel(
            patch_size=cfg.patch_size, num_attention_heads=cfg.num_heads, attention_head_dim=cfg.head_dim,
            in_channels=cfg.in_dim, out_channels=cfg.out_dim, text_dim=cfg.text_dim, freq_dim=cfg.freq_dim,
            ffn_dim=cfg.ffn_dim, num_layers=cfg.num_layers, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
            vace_layers=list(cfg.vace_layers), vace_in_channels=cfg.vace_in_dim)
    ref.to(dtype).load_state_dict(official_to_diffusers(sd))
    for name, module in ref.named_modules():  # as from_pretrained(torch_dtype=...) leaves them
        if set(name.split(".")) & set(ref._keep_in_fp32_modules):
            module.float()
    ref.eval().requires_grad_(False)
    scales = torch.ones(len(cfg.vace_layers))

    def run(args):
        x, t, text, ctx = args
        text = torch.nn.functional.pad(text, (0, 0, 0, cfg.text_len - text.shape[1]))
        with torch.no_grad():
            return ref(x, t, text, control_hidden_states=ctx.expand(x.shape[0], -1, -1, -1, -1),
                       control_hidden_states_scale=scales, return_dict=False)[0]
    return run


def native_model(comfy, cfg, sd, dtype):
    native = comfy.ldm.wan.model.VaceWanModel(
        dim=cfg.dim, ffn_dim=cfg.ffn_dim, num_heads=cfg.num_heads, num_layers=cfg.num_layers, text_dim=cfg.text_dim,
        vace_layers=len(cfg.vace_layers), vace_in_dim=cfg.vace_in_dim, device="meta", dtype=dtype,
        operations=comfy.ops.manual_cast)
    native.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()},
                           assign=True)
    native.eval().requires_grad_(False)

    def run(args):
        x, t, text, ctx = args
        text = torch.nn.functional.pad(text, (0, 0, 0, cfg.text_len - text.shape[1]))
        with torch.no_grad():
            return native(x, t, text, vace_context=ctx[:, None].expand(x.shape[0], -1, -1, -1, -1, -1),
                          vace_strength=[1.0])
    return run


def interleaved(impls: dict, args, repeats: int) -> dict:
    """One warm-up each, then `repeats` rounds running every implementation once: median seconds each."""
    times = {name: [] for name in impls}
    for fn in impls.values():
        fn(args)
    for _ in range(repeats):
        for name, fn in impls.items():
            times[name].append(timed(lambda f=fn: f(args)))
    return {name: statistics.median(ts) for name, ts in times.items()}


def speed_report(seconds: dict, cfg, base: str) -> dict:
    tokens = math.prod(SHAPE.latent) // 4
    flops = 2 * flops_per_forward(cfg, tokens)  # CFG batch 2
    peak, source = bf16_peak()
    rows = {name: {"seconds_per_step": s, f"ratio_to_{base}": s / seconds[base]} for name, s in seconds.items()}
    if peak:
        floor = flops / peak
        for row in rows.values():
            row["ratio_to_flop_floor"] = row["seconds_per_step"] / floor
    return {"tokens": tokens, "pflop_per_step": flops / 1e15, "bf16_peak_tflops": peak and peak / 1e12,
            "peak_source": source, "floor_seconds": peak and flops / peak, "per_step": rows}


def part_speed() -> dict:
    """One CFG step (batch 2, one context stream) at 832x480x81: ours vs diffusers vs ComfyUI native, same
    bf16 weights, interleaved, median of 5."""
    cfg, dev, dtype = SHAPE.small, device(), fast_dtype()
    sd = random_weights(cfg, dtype, dev)
    ours = build(cfg, sd)
    impls = {"ours": lambda a: step(ours, a)}
    skipped = {}
    if installed("diffusers"):
        impls["diffusers"] = diffusers_model(cfg, sd, dtype)
    else:
        skipped["diffusers"] = "not installed"
    comfy = comfy_modules()
    if comfy is not None:
        impls["comfyui_native"] = native_model(comfy, cfg, sd, dtype)
    else:
        skipped["comfyui_native"] = "ComfyUI not importable (set COMFYUI_PATH)"
    seconds = interleaved(impls, inputs(cfg, SHAPE.latent, 2, dtype), SHAPE.repeats)
    return {"status": "ok", **speed_report(seconds, cfg, "ours"), "skipped": skipped}


def part_switches() -> dict:
    """Our speed switches, each vs the exact path at the speed shape: time per step and output difference."""
    cfg, dev = SHAPE.small, device()
    if dev.type == "cpu":
        torch._inductor.config.compile_threads = 1  # no pool of compile workers for 3 tiny graphs
    sd = random_weights(cfg, fast_dtype(), dev)
    args = inputs(cfg, SHAPE.latent, 2, fast_dtype())
    exact = build(cfg, sd)
    variants = {"exact": (exact, Speed()), "lean_chunk_8192": (build(cfg, sd), Speed(lean=True, ffn_chunk=8192)),
                "compile": (build(cfg, sd), Speed(compile=True))}
    if fp8_compute_supported():
        scaled = {k: v.to(dev) for k, v in drop_fp8_markers(quantize_scaled(sd, ops.E4M3)).items()}
        variants["fp8_compute"] = (build(cfg, scaled), Speed(fp8_compute=True))
    reference = step(exact, args)
    errors, compile_seconds = {}, None
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    for name, (model, speed) in variants.items():
        apply_speed(model, speed)
        if speed.compile:
            compile_seconds = timed(lambda m=model: step(m, args))
        errors[name] = rel_err(step(model, args), reference)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]  # one per block kind: regional compile
    runs = {name: lambda a, m=m: step(m, a) for name, (m, _) in variants.items()}
    seconds = interleaved(runs, args, SHAPE.repeats)
    return {"status": "ok", **speed_report(seconds, cfg, "exact"), "relative_error_vs_exact": errors,
            "compile_warmup_seconds": compile_seconds, "compiled_graphs": graphs,
            "blocks": len(exact.blocks) + len(exact.vace_blocks)}


def peak_of(fn, warmup: bool = True) -> dict:
    """Seconds and peak allocated bytes above the start (CUDA allocator statistics), after a warm-up call."""
    if warmup:
        fn()
    sync()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    seconds = timed(fn)
    return {"seconds": seconds, "peak_gib": (torch.cuda.max_memory_allocated() - base) / GIB}


CPU_ESTIMATE_SHAPES = {"ffn_dominant": (256, 2048), "attention_dominant": (256, 512)}  # (dim, ffn_dim)


def part_estimate() -> dict:
    """The activation estimate the sampler reserves for load_models_gpu vs the measured peak of one CFG step,
    exact and lean. CUDA: the 1.3B shape at the speed latent, bf16, allocator peaks. CPU: small models whose peak
    is FFN- or attention-bound, 2 x 2,048 tokens, float32 (bf16 CPU kernels are slow), peak resident memory
    (glibc returning freed blocks at once, see gpu_check.py)."""
    dev, dtype = device(), fast_dtype()
    if dev.type == "cuda":
        shapes, latent, peak = {"1.3B": (SHAPE.small.dim, SHAPE.small.ffn_dim)}, SHAPE.latent, peak_of
    else:
        from benchmarks.harness import measure

        shapes, latent = CPU_ESTIMATE_SHAPES, (4, 32, 64)

        def peak(fn):
            return {"peak_gib": measure(fn, repeats=1)["peak_mib"] / 1024}
    rows = {}
    for shape, (dim, ffn) in shapes.items():
        cfg = VaceConfig(dim=dim, ffn_dim=ffn, num_heads=dim // 128 or 1, num_layers=2, vace_layers=(0,),
                         text_dim=SHAPE.small.text_dim) if dev.type != "cuda" else SHAPE.small
        model = build(cfg, random_weights(cfg, dtype, dev))
        args = inputs(cfg, latent, 2, dtype)
        for name, speed in (("exact", Speed()), ("lean", Speed(lean=True, ffn_chunk=512))):
            apply_speed(model, speed)
            measured = peak(lambda m=model, a=args: step(m, a))["peak_gib"]
            estimate = activation_bytes(cfg, latent, 2, 1, dtype, speed) / GIB
            rows[f"{shape}_{name}"] = {"measured_gib": measured, "estimate_gib": estimate,
                                       "estimate_over_measured": estimate / measured}
        free(model)
    bad = [n for n, r in rows.items() if not 1 <= r["estimate_over_measured"] <= ESTIMATE_MARGIN]
    return {"status": f"fail: estimate off for {bad}" if bad else "ok", "rows": rows, "bound": [1, ESTIMATE_MARGIN]}


ESTIMATE_MARGIN = 1.3  # at most 30% over: more would make ComfyUI offload weights that would have fit


def part_vram() -> dict:
    """Peak VRAM of one CFG step: the 1.3B shape in bf16; the 14B shape stored in fp8 with block swap through
    ComfyUI's load_models_gpu under per-process caps (24 GB, 12 GB), exact and lean; time per step."""
    cfg, dev = SHAPE.small, device()
    if dev.type != "cuda":
        return {"status": "skipped: no CUDA", "large_fp8": large_fp8_under_caps()}
    model = build(cfg, random_weights(cfg, torch.bfloat16, dev))
    args = inputs(cfg, SHAPE.latent, 2, torch.bfloat16)
    small = {}
    for name, speed in (("exact", Speed()), ("lean", Speed(lean=True, ffn_chunk=8192))):
        apply_speed(model, speed)
        small[name] = peak_of(lambda: step(model, args)) | {
            "weights_gib": sum(p.nbytes for p in model.parameters()) / GIB}
    free(model, args)
    return {"status": "ok", "small_bf16": small, "large_fp8": large_fp8_under_caps()}


def large_fp8_under_caps() -> dict:
    comfy = comfy_modules(memory_manager=True)
    if comfy is None:
        return {"status": "skipped: ComfyUI's memory manager not importable (run with ComfyUI's Python)"}
    mm, memory = comfy.model_management, import_pack("nodes.memory")
    cfg, dev = SHAPE.large, device()
    state = random_weights(cfg, ops.E4M3, dev)
    state = {k: v.to("cpu") for k, v in state.items()}
    model = VaceTransformer(cfg, comfy.ops.manual_cast, device="meta")
    model.load_state_dict(state, assign=True)
    model.eval().requires_grad_(False)
    args = inputs(cfg, SHAPE.latent, 2, torch.bfloat16)
    caps = SHAPE.caps_gib if dev.type == "cuda" else (None,)
    rows = {}
    for cap in caps:
        for name, speed in (("exact", Speed()), ("lean", Speed(lean=True, ffn_chunk=8192))):
            apply_speed(model, speed)
            rows[f"{cap or 'no'}_cap_{name}"] = one_capped_step(mm, memory, model, args, cap, speed)
    return {"status": "ok" if dev.type == "cuda" else "skipped caps: no CUDA (one uncapped CPU step)",
            "weights_gib": sum(p.nbytes for p in model.parameters()) / GIB, "runs": rows,
            "fits_24gb": any(r.get("ok") for k, r in rows.items() if k.startswith("24_")) if caps != (None,) else None}


def one_capped_step(mm, memory, model, args, cap_gib, speed) -> dict:
    """Loads through ComfyUI with the sampler's reserve (activation estimate), under a cap ComfyUI also sees,
    then times two steps (the first streams weights in). An out-of-memory is a result, not a crash."""
    patcher = memory.patch(model, device(), torch.device("cpu"))
    cuda = device().type == "cuda"
    reserve = activation_bytes(model.config, SHAPE.latent, 2, 1, torch.bfloat16, speed)
    row = {"reserve_gib": reserve / GIB}
    try:
        if cuda:
            total = torch.cuda.get_device_properties(0).total_memory
            torch.cuda.set_per_process_memory_fraction(cap_gib * GIB / total)
            mm.EXTRA_RESERVED_VRAM = total - cap_gib * GIB  # ComfyUI reads free memory from the driver
            torch.cuda.reset_peak_memory_stats()
        loaded = memory.load(patcher, reserve)
        row["loaded_fraction"] = patcher.loaded_size() / patcher.model_size()
        first = timed(lambda: step(loaded, args))
        row |= {"first_step_seconds": first, "seconds_per_step": timed(lambda: step(loaded, args)), "ok": True}
        if cuda:
            row["peak_gib"] = torch.cuda.max_memory_allocated() / GIB
    except torch.OutOfMemoryError as e:
        row |= {"ok": False, "error": str(e).splitlines()[0][:200]}
    finally:
        memory.offload(patcher)
        if cuda:
            torch.cuda.set_per_process_memory_fraction(1.0)
            mm.EXTRA_RESERVED_VRAM = 0
        free()
    return row


def part_vae() -> dict:
    """Tiled decode of 81 frames at 480p and 720p (tile 256 px, overlap 64): ours vs diffusers' AutoencoderKLWan,
    peak and time; ours also with "auto" tiling (the free-memory branch) at 480p."""
    from vace_core.vae import Tiling, WanVAE

    dev, dtype = device(), fast_dtype()
    rows = {}
    ours = WanVAE(dim=SHAPE.vae_dim).eval().requires_grad_(False).to(dev, dtype)
    tile = 256 if SHAPE.vae_dim == 96 else 32
    ref = None
    if installed("diffusers"):
        from diffusers import AutoencoderKLWan

        ref = AutoencoderKLWan(base_dim=SHAPE.vae_dim).eval().requires_grad_(False).to(dev, dtype)
        ref.enable_tiling(tile, tile, tile - 64 if tile == 256 else tile - 8, tile - 64 if tile == 256 else tile - 8)
    overlap = 64 if tile == 256 else 8
    for name, latent in SHAPE.vae_latents.items():
        z = torch.randn(1, 16, *latent, device=dev, dtype=dtype)
        calls = {"ours_tiled": lambda z=z: ours.decode(z, tiling=Tiling(tile, overlap))}
        if name != "720p":
            calls["ours_auto"] = lambda z=z: ours.decode(z, tiling="auto")
        if ref is not None:
            calls["diffusers_tiled"] = lambda z=z: ref.decode(z).sample
        for impl, fn in calls.items():
            with torch.no_grad():
                rows[f"{name}_{impl}"] = peak_of(fn, warmup=False) if dev.type == "cuda" else {"seconds": timed(fn)}
    return {"status": "ok" if dev.type == "cuda" else "skipped peaks: no CUDA (timed on CPU)", "rows": rows,
            "tile": tile, "overlap": overlap}


def import_pack(module: str):
    """A module of this pack imported as ComfyUI imports custom nodes (a package, relative imports work)."""
    if "vace_pack" not in sys.modules:
        package = importlib.util.module_from_spec(importlib.machinery.ModuleSpec("vace_pack", None, is_package=True))
        package.__path__ = [str(ROOT)]
        sys.modules["vace_pack"] = package
    return importlib.import_module(f"vace_pack.{module}")


def part_e2e() -> dict:
    """The VACE Sampler node on the device through ComfyUI, in this process: 10 steps with previews, an interrupt
    at step 3 (models stay loaded, the next run works), weights streamed (lowvram forced) with offload after."""
    comfy = comfy_modules(memory_manager=True)
    if comfy is None or not installed("comfy_api"):
        return {"status": "skipped: ComfyUI's node API not importable (run with ComfyUI's Python, COMFYUI_PYTHON)"}
    import comfy.utils
    from comfy.cli_args import LatentPreviewMethod, args

    args.preview_method = LatentPreviewMethod.Latent2RGB
    mm = comfy.model_management
    sampler, loaders, memory = (import_pack(f"nodes.{m}") for m in ("sampler", "loaders", "memory"))
    core = import_pack("vace_core.transformer")
    cfg, dev = SHAPE.small, mm.get_torch_device()
    cuda = dev.type == "cuda"
    model = core.VaceTransformer(cfg, comfy.ops.manual_cast, device="meta")
    model.load_state_dict({k: v.cpu() for k, v in random_weights(cfg, torch.float16 if cuda else torch.float32,
                                                                  dev).items()}, assign=True)
    model.eval().requires_grad_(False).compute_dtype = torch.bfloat16 if cuda else torch.float32
    vace = loaders.LoadedVace(memory.patch(model, dev, mm.unet_offload_device()))
    vae = memory.patch(import_pack("vace_core.vae").WanVAE(dim=SHAPE.vae_dim).eval().requires_grad_(False),
                       mm.vae_device(), mm.vae_offload_device())
    unit = import_pack("vace_core.vcu").text_to_video(SHAPE.e2e_frames, *SHAPE.e2e_size)
    text = [[torch.randn(1, 24, cfg.text_dim), {}]]
    seen, stop_at = [], [None]

    def hook(value, total, preview, *_, **__):
        seen.append(preview is not None)
        if value == stop_at[0]:
            mm.interrupt_current_processing(True)

    comfy.utils.set_progress_bar_global_hook(hook)

    def run(steps, offload=False):
        seen.clear()
        out = sampler.VaceSampler.execute(vace, vae, text, text, steps=steps, cfg=5.0, shift=16.0, sampler="unipc",
                                          seed=1, offload_after=offload, vcu=unit, strength=1.0, start=0.0, end=1.0)
        return out.result[0]["samples"]

    result = {}
    latent = run(10)
    result["previews"] = f"{sum(seen)} of {len(seen)} steps"
    result["finite"] = bool(torch.isfinite(latent).all())
    stop_at[0] = 3
    try:
        run(10)
        result["interrupt"] = "not raised"
    except mm.InterruptProcessingException:
        result["interrupt"] = f"stopped after step {len(seen)}"
    mm.interrupt_current_processing(False)
    stop_at[0] = None
    result["loaded_after_interrupt"] = any(m.model is vace.patcher for m in mm.current_loaded_models)
    if cuda:  # ComfyUI believes only half the model fits: it streams the rest (lowvram)
        memory.offload(vace.patcher)
        mm.EXTRA_RESERVED_VRAM = mm.get_free_memory(dev) - vace.patcher.model_size() // 2
    before = torch.cuda.memory_allocated() if cuda else 0
    latent = run(3, offload=True)
    mm.EXTRA_RESERVED_VRAM = 0
    result |= {"lowvram_run_finite": bool(torch.isfinite(latent).all()),
               "lowvram_forced": cuda, "lowvram_applied": bool(getattr(model, "model_lowvram", False)),
               "offloaded": not any(m.model is vace.patcher for m in mm.current_loaded_models),
               "memory_after_offload_mib": (torch.cuda.memory_allocated() - before) / 2**20 if cuda else None}
    ok = (result["previews"] == "10 of 10 steps" and result["finite"] and result["interrupt"] == "stopped after step 3"
          and result["loaded_after_interrupt"] and result["offloaded"] and result["lowvram_run_finite"]
          and (result["lowvram_applied"] or not cuda))
    status = "ok" if ok else "fail"
    return {"status": status if cuda or not ok else "ok on CPU (lowvram skipped: no CUDA)", **result}


def host_status() -> dict:
    """This process's resident memory (bytes): now, peak since the last reset, anonymous."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {k: int(fields[k].split()[0]) * 1024 for k in ("VmRSS", "VmHWM", "RssAnon")}


def mapped_ranges(path: Path) -> list[tuple[int, int]]:
    """Address ranges of this process's memory maps of `path`."""
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] == str(path.resolve()):
            ranges.append(tuple(int(a, 16) for a in fields[0].split("-")))
    return ranges


def all_mapped(model, path: Path) -> bool:
    ranges = mapped_ranges(path)
    return all(any(a <= t.data_ptr() and t.data_ptr() + t.nbytes <= b for a, b in ranges)
               for t in model.state_dict().values())


HOST_SLACK = 128 * 2**20  # interpreter, meta model, the driver's staging buffers


def part_load() -> dict:
    """A 1.3B-shaped fp16 checkpoint file loaded with load_vace_model: to CUDA, the host's peak resident memory
    above the start is at most the largest tensor plus HOST_SLACK (each tensor read from the map, moved, its pages
    dropped, its NaN/inf check run on the GPU copy at once); on the CPU (dry run) the weights are the file's map
    (peak about the file, no anonymous copy) and their NaN/inf check runs in the background (`deferred_tensors`,
    done after `checked_seconds`). The weights equal safetensors' load_file bit for bit, and a damaged copy (NaN in
    one tensor) is refused by name (`nan_refused`). With ComfyUI: the Load VACE Model node's ModelPatcher holds
    the mapped file, and on CUDA one step streamed in low-VRAM mode (half the model) equals the fully loaded one."""
    import tempfile

    from safetensors import safe_open

    from vace_core.checkpoints import load_vace_model, save_checkpoint

    cfg, dev = SHAPE.small, device()
    if cfg.head_dim != 128:  # the node has no head-count input: the weights tell it with Wan's head size
        cfg = VaceConfig(dim=128, ffn_dim=256, num_heads=1, num_layers=4, vace_layers=(0, 2), text_dim=64)
    with tempfile.TemporaryDirectory() as tmp:
        path = save_checkpoint({k: v.cpu() for k, v in random_weights(cfg, torch.float16, dev).items()},
                               Path(tmp) / "diffusion_models" / "vace_fp16.safetensors", "official")
        free()
        size = path.stat().st_size
        if dev.type == "cuda":
            torch.zeros(1, device=dev)  # the CUDA context's host memory is not the loader's
        Path("/proc/self/clear_refs").write_text("5")
        before = host_status()
        start = time.perf_counter()
        model = load_vace_model(path, device=dev, compute_dtype=fast_dtype())
        sync()
        seconds = time.perf_counter() - start
        after = host_status()
        model.weights_checked()
        checked_seconds = time.perf_counter() - start
        largest = max(t.nbytes for t in model.state_dict().values())
        with safe_open(str(path), "pt") as f:
            exact = all(torch.equal(t.cpu(), f.get_tensor(k)) for k, t in model.state_dict().items())
        result = {"file_mib": size / 2**20, "seconds": seconds, "largest_tensor_mib": largest / 2**20,
                  "host_peak_mib": (after["VmHWM"] - before["VmRSS"]) / 2**20,
                  "host_anon_after_mib": (after["RssAnon"] - before["RssAnon"]) / 2**20, "bit_exact": exact,
                  "checked_seconds": checked_seconds, "deferred_tensors": model.weights_check.count}
        if dev.type == "cuda":
            ok = result["host_peak_mib"] * 2**20 <= largest + HOST_SLACK and result["deferred_tensors"] == 0
        else:
            result["mapped"] = all_mapped(model, path)
            ok = result["mapped"] and result["host_anon_after_mib"] * 2**20 <= 0.1 * size + HOST_SLACK
            ok = ok and result["deferred_tensors"] == len(model.state_dict())
        free(model)
        result["nan_refused"] = refuses_nan(cfg, dev, Path(tmp))
        ok = ok and result["nan_refused"]
        result["comfyui_node"] = node_load(Path(tmp), path, cfg)
    node_ok = result["comfyui_node"].get("ok", True)
    status = "ok" if ok and exact and node_ok else "fail"
    return {"status": status + ("" if dev.type == "cuda" else " on CPU (host peak bound needs CUDA)"), **result}


def refuses_nan(cfg, dev, folder: Path) -> bool:
    """Whether a checkpoint with a NaN in one tensor is refused naming it: while loading to CUDA (checked on the
    GPU), before the model's first call on the CPU (the background check)."""
    from vace_core.checkpoints import load_vace_model, save_checkpoint
    from vace_core.errors import VaceError

    weights = {k: v.cpu() for k, v in random_weights(cfg, torch.float16, dev).items()}
    key = "blocks.1.ffn.0.weight"
    weights[key].view(-1)[-1] = math.nan
    path = save_checkpoint(weights, folder / "damaged.safetensors", "official")
    try:
        load_vace_model(path, device=dev, compute_dtype=fast_dtype()).weights_checked()
    except VaceError as e:
        return key in str(e)
    return False


def node_load(models: Path, path: Path, cfg) -> dict:
    """The Load VACE Model node on `path` (in ComfyUI's models folder `models`): its patcher holds the file's map;
    on CUDA, low-VRAM streaming (ComfyUI told half the model fits) gives the fully loaded model's step."""
    comfy = comfy_modules(memory_manager=True)
    if comfy is None or not installed("comfy_api"):
        return {"status": "skipped: ComfyUI's node API not importable (run with ComfyUI's Python)"}
    import folder_paths

    folder_paths.add_model_folder_path("diffusion_models", str(models / "diffusion_models"))
    loaders, memory = import_pack("nodes.loaders"), import_pack("nodes.memory")
    mm = comfy.model_management
    vace = loaders.LoadVaceModel.execute(path.name, loaders.NO_BASE, "default", "auto", "sdpa", 0).result[0]
    model = vace.patcher.model
    out = {"mapped_on_offload_device": all_mapped(model, path)}
    if device().type == "cuda":
        dtype = model.compute_dtype
        args = inputs(cfg, SHAPE.check_latent, 2, dtype)
        full = step(memory.load(vace.patcher), args)
        memory.offload(vace.patcher)
        mm.EXTRA_RESERVED_VRAM = mm.get_free_memory(device()) - vace.patcher.model_size() // 2
        try:
            streamed = step(memory.load(vace.patcher), args)
            out |= {"lowvram_applied": bool(getattr(model, "model_lowvram", False)),
                    "lowvram_vs_full": rel_err(streamed, full)}
        finally:
            mm.EXTRA_RESERVED_VRAM = 0
            memory.offload(vace.patcher)
        out["ok"] = out["mapped_on_offload_device"] and out["lowvram_applied"] and out["lowvram_vs_full"] < 1e-3
    else:
        out["ok"] = out["mapped_on_offload_device"]
    return out


PARTS = {"env": part_env, "precision": part_precision, "noise": part_noise, "attention": part_attention,
         "syncs": part_syncs, "speed": part_speed, "switches": part_switches, "estimate": part_estimate,
         "vram": part_vram, "vae": part_vae, "e2e": part_e2e, "load": part_load}
SHAPE = SHAPES["full"]


def run_part(name: str, dry_run: bool) -> dict:
    global SHAPE
    SHAPE = SHAPES["dry" if dry_run else "full"]
    torch.manual_seed(0)
    with contextlib.ExitStack():
        return PARTS[name]()
