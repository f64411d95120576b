"""Worker side of tests/test_distributed.py, in its own module so spawned processes can import it by name
(the test modules load under pytest's importlib mode, and site-packages holds an unrelated `tests`).

Each rank runs every case of its world size, compares with the single-process forward it also computes,
and writes the errors and the bytes it sent (with the count `step_volume` predicts) to `<out>.<rank>`."""

import json
from contextlib import contextmanager
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from vace_core.config import VaceConfig
from vace_core.distributed import ParallelVace, init_parallel, shard_weights
from vace_core.distributed.volume import step_volume
from vace_core.transformer import VaceTransformer

TOL = 1e-5  # relative error (norm), fp32
# Long video decodes window 1 and re-encodes its frames into window 2 (and matches colours): float noise grows.
# Measured on one process: 3e-7 relative noise on the DiT's output alone moves this video by 1.6e-4.
TOLERANCE = {"long video, 2 windows": 1e-3}


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


def tiny(heads: int, seed: int = 0) -> VaceTransformer:
    torch.manual_seed(seed)
    cfg = VaceConfig(dim=16 * heads, ffn_dim=32, num_heads=heads, num_layers=3, vace_layers=(0, 2), text_dim=32)
    return VaceTransformer(cfg).eval().requires_grad_(False)


def inputs(batch, latent, streams=1, refs=0, seed=1):
    """Noisy latent (B, 16, T, H, W), timesteps, text, VCU contexts (first `refs` frames are references:
    zero mask channels)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 16, *latent, generator=g)
    t = torch.rand(batch, generator=g) * 1000
    text = torch.randn(batch, 9, 32, generator=g)
    contexts = [torch.randn(1, 96, *latent, generator=g) for _ in range(streams)]
    for c in contexts:
        c[:, 32:, :refs] = 0
    return x, t, text, contexts


def biases(batch, heads, tokens, seed=2):
    """A float self-attention bias per head and a boolean cross-attention keep-mask (B, H, L, 512)."""
    g = torch.Generator().manual_seed(seed)
    self_bias = torch.randn(batch, heads, tokens, tokens, generator=g)
    cross = torch.rand(batch, 1, tokens, 512, generator=g) > 0.3
    cross[..., 0] = True  # every row keeps a key
    return self_bias, cross


class Case(NamedTuple):
    mode: str
    heads: int = 2
    latent: tuple = (3, 6, 6)  # (T, H, W) of the latent: tokens = T * H/2 * W/2
    streams: int = 1
    refs: int = 0
    batch: int = 1  # 2 = conditional + unconditional, as guidance runs them
    cfg: bool = False
    biases: bool = False
    fsdp: bool = False


ODD = (2, 4, 10)  # 20 tokens: divides by neither 3 nor 8; (3, 6, 6) is 27 tokens, odd
CASES = {
    2: {
        "ulysses, 27 tokens (odd)": Case("ulysses"),
        "ulysses, 2 streams, 1 ref, biases": Case("ulysses", streams=2, refs=1, biases=True),
        "ring, 3 heads, 2 streams, 1 ref": Case("ring", heads=3, streams=2, refs=1),
        "ring, biases, batch 2": Case("ring", heads=3, latent=ODD, batch=2, biases=True),
        "usp (heads 3: ring 2)": Case("usp", heads=3, latent=(3, 4, 6), refs=1),
        "cfg parallel, 2 streams": Case("ulysses", streams=2, refs=1, batch=2, cfg=True),
        "cfg parallel, biases": Case("ring", latent=ODD, batch=2, cfg=True, biases=True),
        "ulysses + fsdp2": Case("ulysses", streams=2, refs=1, fsdp=True),
    },
    3: {
        "ring, 2 heads over 3 ranks, 20 tokens": Case("ring", latent=ODD),
        "ring, 2 streams, 2 refs, biases": Case("ring", latent=(4, 4, 6), streams=2, refs=2, batch=2, biases=True),
        "ulysses, 3 heads, 2 streams": Case("ulysses", heads=3, latent=ODD, streams=2, refs=1, biases=True),
        "usp default (heads 2: ring 3)": Case("usp", latent=ODD),
        "ring + fsdp2": Case("ring", latent=ODD, streams=2, refs=1, fsdp=True),
    },
    4: {
        "usp ulysses 2 x ring 2, biases": Case("usp", latent=(3, 4, 6), streams=2, refs=1, biases=True),
        "cfg parallel x ring 2, 3 heads": Case("ring", heads=3, latent=ODD, refs=1, batch=2, cfg=True, biases=True),
    },
}


def _forward_cases(world, results):
    for name, (mode, heads, latent, streams, refs, batch, cfg, bias, fsdp) in CASES[world].items():
        model = tiny(heads)
        x, t, text, contexts = inputs(batch, latent, streams, refs)
        strengths = [1.0, 0.6][:streams]
        tokens = latent[0] * (latent[1] // 2) * (latent[2] // 2)
        kwargs = dict(zip(("self_bias", "cross_bias"), biases(batch, heads, tokens), strict=True)) if bias else {}
        expected = model(x, t, text, contexts, strengths, **kwargs)
        layout = init_parallel(heads, mode, cfg)
        if fsdp:
            shard_weights(model, layout)
            weight = model.blocks[0].self_attn.q.weight
            assert isinstance(weight, DTensor) and weight.to_local().numel() < weight.numel(), "FSDP2 did not shard"
        with counting_bytes() as sent:
            got = ParallelVace(model, layout)(x, t, text, contexts, strengths, **kwargs)
        results["errors"][name] = rel_err(got, expected)
        results["bytes"][name] = [sent[0], step_volume(model.config, tokens, layout.degrees, streams, batch, 4).total]


@contextmanager
def counting_bytes():
    """Counts the bytes this rank sends through the collectives sequence parallelism uses (ring algorithm
    counts for all-gather; FSDP2's own all-gathers are not counted)."""
    sent, real = [0], (dist.all_to_all_single, dist.all_gather, dist.P2POp)
    size = lambda t: t.numel() * t.element_size()  # noqa: E731

    def all_to_all_single(out, x, group=None, **kw):
        sent[0] += size(x) * (group.size() - 1) // group.size()
        return real[0](out, x, group=group, **kw)

    def all_gather(parts, x, group=None, **kw):
        sent[0] += size(x) * (len(parts) - 1)
        return real[1](parts, x, group=group, **kw)

    def p2p(op, tensor, *args, **kw):
        sent[0] += size(tensor) if op is dist.isend else 0
        return real[2](op, tensor, *args, **kw)

    dist.all_to_all_single, dist.all_gather, dist.P2POp = all_to_all_single, all_gather, p2p
    try:
        yield sent
    finally:
        dist.all_to_all_single, dist.all_gather, dist.P2POp = real


def _generate_case(results):
    """A whole task (2 steps, guidance 5) with ring x CFG parallel equals one process's video."""
    from vace_core import vcu
    from vace_core.embedded import tiny_model, tiny_vae
    from vace_core.pipeline import SamplerSettings, generate

    model, vae = tiny_model(), tiny_vae()
    g = torch.Generator().manual_seed(3)
    video, masks = torch.rand(5, 32, 48, 3, generator=g), torch.zeros(5, 32, 48)
    masks[:, 8:24, 16:40] = 1
    unit = vcu.with_references(vcu.inpaint(video, masks), [torch.rand(32, 48, 3, generator=g)])
    text, negative = torch.randn(7, 64, generator=g), torch.randn(5, 64, generator=g)
    settings = SamplerSettings(steps=2, guidance=5.0, shift=5.0, seed=4)
    with torch.no_grad():
        expected = generate(model, vae, unit, text, negative, settings=settings)
        layout = init_parallel(model.config.num_heads, "ring", cfg_parallel=dist.get_world_size() % 2 == 0)
        got = generate(ParallelVace(model, layout), vae, unit, text, negative, settings=settings)
    results["errors"]["generate"] = rel_err(got, expected)


def _long_video_case(results):
    """Long video (two 9-frame windows over 13 frames, guidance 5) through ParallelVace with ring attention
    equals the single-process long video."""
    from vace_core import vcu
    from vace_core.embedded import tiny_model, tiny_vae
    from vace_core.long_video import LongVideoSettings, generate_long
    from vace_core.pipeline import SamplerSettings

    model, vae = tiny_model(), tiny_vae()
    g = torch.Generator().manual_seed(6)
    text, negative = torch.randn(6, 64, generator=g), torch.randn(4, 64, generator=g)
    settings, long = SamplerSettings(steps=2, guidance=5.0, seed=2), LongVideoSettings(window=9, overlap=5)
    run = lambda m: generate_long(m, vae, vcu.text_to_video(13, 16, 32), text, negative,  # noqa: E731
                                  settings=settings, long=long).video
    expected = run(model)
    got = run(ParallelVace(model, init_parallel(model.config.num_heads, "ring")))
    results["errors"]["long video, 2 windows"] = rel_err(got, expected)


def _fsdp_equals_one_process(results, name: str, model, heads: int):
    """FSDP2 over a loaded model (ring attention) against the same model on one process."""
    x, t, text, contexts = inputs(1, (2, 4, 10), 2, 1)
    expected = model(x, t, text, contexts, [1.0, 0.5])
    layout = init_parallel(heads, "ring")
    shard_weights(model, layout)
    got = ParallelVace(model, layout)(x, t, text, contexts, [1.0, 0.5])
    results["errors"][name] = rel_err(got, expected)


def _fp8_checkpoint_case(results, folder):
    """A model loaded from an fp8 checkpoint (cast layers: fp8 weights, fp32 norms and modulation in one block)."""
    from vace_core.checkpoints import load_vace_model, save_checkpoint

    path = f"{folder}.rank{dist.get_rank()}.safetensors"
    save_checkpoint(tiny(2).state_dict(), path, "official", torch.float8_e4m3fn)
    model = load_vace_model(path, device="cpu", num_heads=2)
    _fsdp_equals_one_process(results, "ring + fsdp2, fp8 checkpoint", model, 2)


def _gguf_checkpoint_case(results, folder):
    """A model loaded from a GGUF file: Q8_0 Linear weights kept as ggml blocks, sharded by rows and gathered
    before each block runs."""
    from gguf_files import write_gguf

    from vace_core import ops
    from vace_core.checkpoints import load_vace_model

    path = write_gguf(tiny(4).state_dict(), f"{folder}.rank{dist.get_rank()}.gguf", "Q8_0")  # 64 wide: blocks
    model = load_vace_model(path, device="cpu", num_heads=4)
    assert ops.is_quantized(model.blocks[0].self_attn.q)
    _fsdp_equals_one_process(results, "ring + fsdp2, GGUF checkpoint", model, 4)


def worker(rank, world, store, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    results = {"errors": {}, "bytes": {}}  # {case: relative error}, {case: [bytes sent, step_volume's count]}
    with torch.no_grad():
        _forward_cases(world, results)
        if world == 2:
            _fp8_checkpoint_case(results, out)
            _gguf_checkpoint_case(results, out)
            _long_video_case(results)
    if world == 4:
        _generate_case(results)
    dist.barrier()
    with open(f"{out}.{rank}", "w") as f:
        json.dump(results, f)
    dist.destroy_process_group()
