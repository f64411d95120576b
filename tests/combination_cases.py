"""The combination matrix's runs (tests/test_combinations.py), in their own module so the two-process (gloo) worker
can import them by name.

A run is a `Spec`; each entry of FEATURES turns a spec into the same spec with that feature on, so any two compose
by applying both. To add a row: add `"name": function(spec) -> spec` to FEATURES (and a field to Spec if the
feature needs one, read in `run`); a feature with an "off" setting that must equal the plain run bit for bit adds
it to REDUCTIONS. EXCLUSIVE lists pairs that are one choice (two long-video modes); REFUSED the pairs the code
refuses, with the words of the refusal.

Everything is tiny: the embedded 4-block DiT, a width-4 Wan VAE, 16x32 frames, 3 steps.
"""

import json
import tempfile
from dataclasses import dataclass, replace
from itertools import combinations
from pathlib import Path

import torch
import torch.distributed as dist

from vace_core import vcu as V
from vace_core.easycache import EasyCache
from vace_core.embedded import tiny_model
from vace_core.experts import Experts
from vace_core.job import Job, load_job, run_job, save_job
from vace_core.long_video import LongVideoSettings, generate_long
from vace_core.lora import apply_lora
from vace_core.lora.apply import param_shapes
from vace_core.magcache import MAG_RATIOS, MagCache
from vace_core.nag import NAG
from vace_core.pipeline import SamplerSettings, generate
from vace_core.regional import RegionalText, Regions
from vace_core.sampling import ContextStream
from vace_core.sampling.guiders import AdaptiveProjectedGuidance, CFGZeroStar, SkipLayerGuidance
from vace_core.speed import Speed, apply_speed
from vace_core.step_cache import TeaCache
from vace_core.timeline import Timeline
from vace_core.vae import WanVAE

FRAMES, LONG = 9, 13  # one window of 9 frames; a long video of 13 (2 autoregressive windows)
SIZE = (16, 32)  # (H, W): 1 x 2 tokens a frame, so a left and a right region are tokens of their own
KEYFRAMED = 17  # hierarchical: 5 keyframes 4 frames apart, then 4 gaps (fewer frames leave no room for them)
IDENTITY = (1.0, 0.0)  # TeaCache's polynomial for the tiny model (no published fit): the raw relative change


@dataclass(frozen=True)
class Spec:
    experts: bool = False
    long: LongVideoSettings | None = None
    length: int = FRAMES
    cache: float | None = None  # the step cache's threshold (None: no cache)
    cache_kind: str = "teacache"  # which: one of CACHES
    steps: int = 3
    regions: str | None = None  # "split": two regions, left and right; "full": one region covering everything
    lora: bool = False
    fast: bool = False  # cfg 1 + the LCM solver (a speed LoRA's settings)
    streams: int = 1
    job: bool = False
    lean: bool = False
    timeline: bool = False  # a second prompt from frame 8 on (frame-mapped: any window count)
    nag: float | None = None  # NAG scale (None: no NAG; 0: NAG off, the plain run)
    slg: bool = False  # skip-layer guidance on block 1 (the unconditional pass)
    combination: str = "cfg"  # or "cfg-zero*", "apg"
    curve: str | None = None  # the first stream's strength curve and frame weights (None: flat)
    denoise: float | None = None  # video-to-video from an init video (None: none given)
    magcache: float | None = None  # MagCache threshold (None: no cache)


def _long(spec: Spec, length: int = LONG, **changes) -> Spec:
    long = replace(spec.long or LongVideoSettings(window=FRAMES, overlap=5), **changes)
    return replace(spec, long=long, length=max(spec.length, length))


FEATURES = {
    "experts": lambda s: replace(s, experts=True),
    "autoregressive": lambda s: _long(s, mode="autoregressive"),
    "hierarchical": lambda s: _long(s, KEYFRAMED, mode="hierarchical"),
    "fused": lambda s: _long(s, mode="fused"),
    "carry guidance": lambda s: _long(s, carry_guidance=1.0),
    "teacache": lambda s: replace(s, cache=1e9),  # skips every step it may
    "teacache context every step": lambda s: replace(s, cache=1e9, cache_kind="teacache context"),
    # EasyCache measures its rate on two computed steps and always computes the last: 4 steps let it skip one
    "easycache": lambda s: replace(s, cache=1e9, cache_kind="easycache", steps=4),
    "regions": lambda s: replace(s, regions="split"),
    "lora": lambda s: replace(s, lora=True),
    "cfg 1 + lcm": lambda s: replace(s, fast=True),
    "vcu streams": lambda s: replace(s, streams=2),
    "job file": lambda s: replace(s, job=True),
    "lean": lambda s: replace(s, lean=True),
    "timeline": lambda s: replace(_long(s), timeline=True),
    "anchor guidance": lambda s: _long(s, anchor_guidance=1.0, anchor_end=0.7),
    "nag": lambda s: replace(s, nag=10.0),  # with the guidance of the run (4, or 1 with "cfg 1 + lcm")
    "nag at cfg 1": lambda s: replace(s, nag=10.0, fast=True),  # a speed LoRA's settings: NAG alone guides
    "slg": lambda s: replace(s, slg=True),
    "cfg-zero*": lambda s: replace(s, combination="cfg-zero*"),
    "apg": lambda s: replace(s, combination="apg"),
    "strength curve": lambda s: replace(s, curve="0:1, 1:0.4"),  # over the steps, and over the latent frames
    "denoise": lambda s: replace(s, denoise=0.6),
    "magcache": lambda s: replace(s, magcache=1e9),  # skips every step it may
}
MODES = {"autoregressive", "hierarchical", "fused"}
CACHE_FEATURES = ("teacache", "teacache context every step", "easycache", "magcache")  # one a run
EXCLUSIVE = {frozenset(p) for p in (("autoregressive", "hierarchical"), ("autoregressive", "fused"),
                                    ("hierarchical", "fused"), ("cfg-zero*", "apg"),  # one combination
                                    *combinations(CACHE_FEATURES, 2),  # one step cache
                                    ("nag", "nag at cfg 1"), ("cfg 1 + lcm", "nag at cfg 1"))}  # the same runs
UNCOND = "changes the unconditional \\(negative-prompt\\) pass, which guidance 1 does not run"
REFUSED = {frozenset(("timeline", "fused")): "a timeline directs windows one after another, but fused windows are "
                                             "denoised together",
           frozenset(("timeline", "regions")): "regional prompts and a timeline's per-window prompts cannot be "
                                               "combined",
           # the CFG variants act on the negative-prompt pass: at cfg 1 NAG (or SLG's third pass) is the way
           **{frozenset((variant, fast)): f"{label} {UNCOND}: raise cfg above 1 with a negative prompt, or use SLG "
              "mode 'third' / NAG at cfg 1" for variant, label in (("slg", "SLG mode 'uncond'"),
                                                                  ("cfg-zero*", "CFG-Zero\\*"), ("apg", "APG"))
              for fast in ("cfg 1 + lcm", "nag at cfg 1")}}


# each issue-20 option switched off (tests/test_combinations.py also holds each one alone): NAG scale 0, MagCache
# threshold 0, denoise 1 with an init video given, a flat strength curve and frame weights
ADD_ONS_OFF = {"nag": 0.0, "magcache": 0.0, "denoise": 1.0, "curve": "0:1, 1:1"}


def add_ons_off(s: Spec) -> Spec:
    """Every add-on of ADD_ONS_OFF switched off where none is on (MagCache's only where TeaCache is not the cache)."""
    if any(getattr(s, name) is not None for name in ADD_ONS_OFF):
        return s
    return replace(s, **{k: v for k, v in ADD_ONS_OFF.items() if k != "magcache" or s.cache is None})


def _one_window(mode):
    def reduce(s: Spec) -> Spec:
        long = replace(s.long or LongVideoSettings(window=FRAMES, overlap=5), mode=mode)
        return replace(s, long=long) if s.length <= FRAMES else s
    return reduce


# the defined reductions: feature off (or trivially on) == the run without it, bit for bit
REDUCTIONS = {
    "teacache threshold 0 == no cache": lambda s: replace(s, cache=0.0) if s.cache is None else s,
    "easycache threshold 0 == no cache": lambda s: replace(s, cache=0.0, cache_kind="easycache")
    if s.cache is None else s,
    # every step computed through the stages, the hints split off and added back: the plain forward
    "teacache context every step, no step skipped == no cache":
        lambda s: replace(s, cache=1e-12, cache_kind="teacache context") if s.cache is None else s,
    "one-window autoregressive == generate": _one_window("autoregressive"),
    "one-window fused == generate": _one_window("fused"),
    "one region covering everything == plain": lambda s: replace(s, regions="full")
    if s.regions is None and not s.timeline else s,  # regions with a timeline's prompts are refused
    "job file == the same run": lambda s: replace(s, job=True),
    "every add-on off == today": add_ons_off,
}


def tiny_vae():
    torch.manual_seed(0)
    return WanVAE(dim=4, dim_mult=(1, 1, 1, 1), num_res_blocks=1).eval().requires_grad_(False)


def _dit(seed: int, spec: Spec):
    model = tiny_model(seed)
    if spec.lora:
        apply_lora(model, _lora(model), 1.0, merge=False)
    return apply_speed(model, Speed(lean=True)) if spec.lean else model


def _lora(model) -> dict:
    from lora_files import comfy_lora

    return comfy_lora(param_shapes(model), seed=3)


def make_model(spec: Spec):
    """The tiny DiT (a fresh one: LoRAs and speed switches change it), or two of them as Wan2.2 experts
    (3 steps at shift 3 give timesteps 999, 856, 599: the high-noise expert for the first step only)."""
    if spec.experts:
        return Experts(_dit(0, spec), _dit(1, spec), guidance_low=2.0)
    return _dit(0, spec)


def _clip(frames: int, seed: int) -> torch.Tensor:
    base = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(seed))
    t = torch.linspace(0, 1, frames)[:, None, None, None]
    return (torch.nn.functional.interpolate(base, size=SIZE, mode="bilinear") * (0.6 + 0.4 * t)).permute(0, 2, 3, 1)


def make_vcus(spec: Spec) -> tuple[list, list]:
    """An inpainting VCU (the middle square generated), and with 2 streams a control clip from 30 % of the steps."""
    masks = torch.zeros(spec.length, *SIZE)
    masks[:, 4:12, 8:24] = 1
    units = [V.inpaint(_clip(spec.length, 0), masks)]
    streams = [ContextStream(1.0, 0.0, 1.0, spec.curve, spec.curve)]
    if spec.streams == 2:
        units.append(V.control(_clip(spec.length, 1)))
        streams.append((0.6, 0.3, 1.0))
    return units, streams


def make_texts(spec: Spec) -> tuple[torch.Tensor, torch.Tensor, Regions | None]:
    """(positive, negative, regions): the regions' text is the positive prompt's own features."""
    g = torch.Generator().manual_seed(1)
    positive, negative = torch.randn(1, 7, 64, generator=g), torch.randn(1, 5, 64, generator=g)
    if spec.regions is None:
        return positive, negative, None
    left = torch.zeros(*SIZE)
    left[:, : SIZE[1] // 2] = 1
    if spec.regions == "full":
        groups, masks = torch.tensor([1, 1, 1, -1, -1, -1, -1]), [torch.ones(*SIZE)]
    else:
        groups, masks = torch.tensor([1, 1, 1, 2, 2, 2, -1]), [left, 1 - left]
    return positive, negative, Regions(RegionalText(positive[0], groups), masks, end=0.7)


def make_timeline(spec: Spec) -> Timeline | None:
    if not spec.timeline:
        return None
    second = torch.randn(1, 6, 64, generator=torch.Generator().manual_seed(2))
    return Timeline(prompts=[make_texts(spec)[0], second], starts=[0, 8])


CACHES = {"teacache": lambda t: TeaCache(t, coefficients=IDENTITY),
          "teacache context": lambda t: TeaCache(t, coefficients=IDENTITY, context_every_step=True),
          "easycache": lambda t: EasyCache(t, warmup=0)}


def settings_of(spec: Spec) -> SamplerSettings:
    cache = None if spec.cache is None else CACHES[spec.cache_kind](spec.cache)
    if spec.magcache is not None:  # the tiny model has no published ratios: the 1.3B ones, resampled to 3 steps
        cache = MagCache(spec.magcache, k=3, ratios=MAG_RATIOS[1536])
    guides = {"nag": None if spec.nag is None else NAG(spec.nag),
              "slg": SkipLayerGuidance((1,), 0.0, 1.0) if spec.slg else None,
              "cfg_zero_star": CFGZeroStar(1) if spec.combination == "cfg-zero*" else None,
              "apg": AdaptiveProjectedGuidance(0.0, 2.0, -0.5) if spec.combination == "apg" else None}
    return SamplerSettings(steps=spec.steps, guidance=1.0 if spec.fast else 4.0, shift=3.0,
                           solver="lcm" if spec.fast else "unipc", seed=1, step_cache=cache,
                           denoise=1.0 if spec.denoise is None else spec.denoise, **guides)


def init_video(spec: Spec) -> torch.Tensor | None:
    """The video to refine (3, T, H, W) in [-1, 1]: another clip at the VCU's size and length."""
    return None if spec.denoise is None else _clip(spec.length, 5).permute(3, 0, 1, 2) * 2 - 1


def run(spec: Spec, vae, wrap=None) -> torch.Tensor:
    """The spec's video (3, T, H, W); wrap: applied to the DiT (each expert), e.g. ParallelVace."""
    model = make_model(spec)
    if wrap is not None:
        model = model.each(wrap) if isinstance(model, Experts) else wrap(model)
    units, streams = make_vcus(spec)
    positive, negative, regions = make_texts(spec)
    settings = settings_of(spec)
    timeline, init = make_timeline(spec), init_video(spec)
    with torch.no_grad():
        if spec.job:
            with tempfile.TemporaryDirectory() as tmp:
                path = save_job(Path(tmp) / "job.safetensors",
                                Job(units, positive, negative, streams, replace(settings, step_cache=None),
                                    timeline=timeline, init_video=init, regions=regions))
                return run_job(load_job(path), model, vae, None, long=spec.long, step_cache=settings.step_cache)
        if spec.long is not None:
            return generate_long(model, vae, units, positive, negative, streams, settings, spec.long,
                                 regions=regions, timeline=timeline, init_video=init).video
        return generate(model, vae, units, positive, negative, streams, settings, regions=regions, init_video=init)


def rel_err(a, b) -> float:
    return ((a - b).norm() / b.norm()).item()


PARALLEL = {name: FEATURES[name](Spec()) for name in FEATURES}  # each feature with 2 processes (Ulysses)


def worker(rank, store, out):
    """One of 2 gloo processes: every PARALLEL run through ParallelVace (Ulysses over the 2 heads), its relative
    error against the same run on this process alone, to `<out>.<rank>`."""
    from vace_core.distributed import ParallelVace, init_parallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    layout = init_parallel(2, "ulysses")
    vae, errors = tiny_vae(), {}
    for name, spec in PARALLEL.items():
        errors[name] = rel_err(run(spec, vae, lambda m: ParallelVace(m, layout)), run(spec, vae))
    dist.barrier()
    with open(f"{out}.{rank}", "w") as f:
        json.dump(errors, f)
    dist.destroy_process_group()
