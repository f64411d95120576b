"""Command line: `python -m vace_core {run,demo,info,convert}`."""

import argparse
import logging
import sys
from pathlib import Path

import torch

from .denoiser import refuse
from .errors import VaceError
from .experts import WAN22_BOUNDARY
from .guidance_options import GuidanceOptions
from .outputs import check_writable
from .settings import add_flag, knobs
from .video_io import WRITE_EXTS


def _demo(args):
    from .demo import main

    main(args.out, args.checkpoints)


def _device(name: str | None) -> torch.device:
    """--device checked before anything loads."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise VaceError(f"--device {name!r} is not a device: use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise VaceError(f"--device {name!r}: VACE runs on cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise VaceError(f"--device {name}: this PyTorch sees no CUDA GPU (a CPU-only build, or no driver); "
                        "use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise VaceError(f"--device {name}: there are {torch.cuda.device_count()} CUDA devices (cuda:0 to "
                        f"cuda:{torch.cuda.device_count() - 1})")
    return device


def _check_model_files(args):
    """The embedded tiny defaults only fit each other: the user's files come as a set."""
    given = {"--model": args.model, "--vae": args.vae, "--text-encoder": args.text_encoder}
    if args.job:  # a job file carries its encoded prompts
        del given["--text-encoder"]
    missing = [flag for flag, value in given.items() if not value]
    if missing and len(missing) < len(given):
        raise VaceError(f"{' and '.join(missing)} missing: with your own model files give --model, --vae and "
                        "--text-encoder together (e.g. --text-encoder umt5_xxl_fp8_e4m3fn_scaled.safetensors); "
                        "the embedded tiny defaults only work with each other")


# (flag, dest, its default): a flag counts as given when it holds anything else
MODEL_FLAGS = (("--model-low", "model_low", None), ("--base-low", "base_low", None),
               ("--boundary", "boundary", WAN22_BOUNDARY), ("--cfg-low", "cfg_low", None), ("--base", "base", None),
               ("--weight-dtype", "weight_dtype", "default"))
EXPERT_FLAGS = ("--boundary", "--cfg-low", "--base-low")


def _check_model_flags(args):
    """Flags that set up the model given with --model are refused where they would be ignored."""
    from .experts import expert_folders

    given = [flag for flag, name, default in MODEL_FLAGS if getattr(args, name) != default]
    if given and not args.model:
        verb = "set" if len(given) > 1 else "sets"
        raise VaceError(f"{', '.join(given)} {verb} up the model given with --model (Wan2.2: --model is the high-noise "
                        "expert, --model-low the low-noise one), but there is no --model: the embedded tiny default "
                        "would run and ignore them. Give --model, or drop them")
    experts = [flag for flag in given if flag in EXPERT_FLAGS]
    if experts and args.model and not (args.model_low or expert_folders(args.model)):
        raise VaceError(f"{', '.join(experts)} only apply to Wan2.2's two experts: give the low-noise one with "
                        "--model-low (or a --model folder with high_noise_model/ and low_noise_model/), or drop "
                        f"{', '.join(experts)}")


def _check_preset(args):
    """A speed preset without its LoRA samples a model that was not distilled for so few steps."""
    from .sampling.presets import preset

    if args.preset in (None, "official") or args.lora:
        return
    chosen = preset(args.preset)
    logging.getLogger("vace").warning(
        "VACE: --preset %s runs %d steps at cfg %g, the settings of the %s LoRA, but no --lora is given: unless "
        "--model has that LoRA merged in, so few steps make a blurry, unfinished video. Add it with --lora "
        "FILE:STRENGTH, or drop --preset.", args.preset, chosen.steps, chosen.guidance, args.preset)


def _models(args):
    """The user's files, or the embedded tiny default for all three."""
    from .embedded import tiny_model, tiny_vae

    device = _device(args.device)
    # --fsdp: the weights stay on the CPU until FSDP2 moves each block's shard to this process's GPU
    model_device = "cpu" if args.fsdp else device
    if args.model:
        from .checkpoints import COMPUTE_DTYPES, DTYPES, load_vace_model
        from .experts import expert_folders, load_experts

        auto = torch.bfloat16 if device.type == "cuda" else None  # as if loaded on the GPU
        kwargs = {"storage_dtype": DTYPES.get(args.weight_dtype), "device": model_device,
                  "compute_dtype": COMPUTE_DTYPES.get(args.compute_dtype, auto), "attention_backend": args.attention}
        if args.model_low or expert_folders(args.model):  # Wan2.2: two experts
            model = load_experts(args.model, args.model_low, base_high=args.base, base_low=args.base_low,
                                 boundary=args.boundary, guidance_low=_guidance_low(args), **kwargs)
        else:
            model = load_vace_model(args.model, args.base, **kwargs)
    else:
        model = tiny_model().to(model_device)
    _apply_loras(model, args.loras)
    _apply_speed(model, args)
    if args.vae:
        from .checkpoints import COMPUTE_DTYPES
        from .vae import load_vae

        vae = load_vae(args.vae, dtype=COMPUTE_DTYPES.get(args.vae_dtype), device=device)
    else:
        vae = tiny_vae().to(device)
    text = None  # a job file carries its encoded prompts
    if args.text_encoder:
        from .text import load_text_encoder

        text = load_text_encoder(args.text_encoder, device=device)
    elif not args.job:
        from .text import tiny_text_encoder

        text = tiny_text_encoder()
    if not args.model:
        print("using the embedded tiny default model, VAE and text encoder (random weights: a demo, not a video)")
    return model, vae, text


def _guidance_low(args) -> float:
    """--cfg-low, else the distilled preset's cfg (a speed LoRA runs both experts at it), else Wan2.2's 3."""
    from .experts import Experts
    from .sampling.presets import preset

    if args.cfg_low is not None:
        return args.cfg_low
    if args.preset and args.preset != "official":
        return preset(args.preset).guidance
    return knobs(Experts)["guidance_low"].default


def _speed(args):
    """--compile / --lean / --ffn-chunk / --fp8-compute as a Speed, or None when all are off (the exact path)."""
    from .speed import Speed

    chosen = {name: getattr(args, name) for name in knobs(Speed)}
    return Speed(**chosen) if chosen != {name: k.default for name, k in knobs(Speed).items()} else None


def _apply_speed(model, args):
    """The speed switches on the DiT (both Wan2.2 experts); nothing changes when they are off."""
    from .experts import Experts
    from .speed import apply_speed

    speed = _speed(args)
    if speed is not None:
        for net in [model.high, model.low] if isinstance(model, Experts) else [model]:
            apply_speed(net, speed)


def _lora_spec(spec: str) -> tuple[str, list[float]]:
    """FILE[:STRENGTH[:CONTEXT_STRENGTH]] -> (FILE, strengths); a path may itself hold colons."""
    parts, numbers = spec.split(":"), []
    while len(parts) > 1 and len(numbers) < 2:
        try:
            numbers.insert(0, float(parts[-1]))
        except ValueError:
            break
        parts.pop()
    return ":".join(parts), numbers


def _lora_region(spec: str, regions: list) -> tuple[str, int | torch.Tensor | None]:
    """FILE...[@REGION] -> (FILE..., region): REGION is the number of a --region (1, 2, ...) or a mask image or
    video (white = the region); without it the LoRA changes the whole video."""
    from .tasks import read_masks

    head, at, region = spec.rpartition("@")
    if not at or Path(_lora_spec(spec)[0]).exists():  # a LoRA file whose path holds an @
        return spec, None
    if region.isdigit():
        if not 1 <= int(region) <= len(regions):
            raise VaceError(f"--lora {spec}: region {region} needs that many --region flags (given: {len(regions)}); "
                            "give the LoRA a --region's number or a mask file after @")
        return head, int(region)
    if not Path(region).is_file():
        raise VaceError(f"--lora {spec}: after @ comes a --region's number (1, 2, ...) or a mask file, and "
                        f"{region} is neither")
    return head, read_masks(region)


def _apply_loras(model, loras: list[tuple[str, object]]):
    """--lora (each as (spec, region) from _lora_region), applied unmerged (fp8 weights keep their precision;
    nothing is copied); with a region, confined to its tokens (vace_core.lora.region)."""
    from .experts import Experts
    from .lora import apply_lora

    models = [model.high, model.low] if isinstance(model, Experts) else [model]  # Wan2.2: on both experts
    for spec, region in loras:
        path, numbers = _lora_spec(spec)
        strength, context = (numbers + [1.0])[0], (numbers[1] if len(numbers) == 2 else None)
        for net in models:
            print(apply_lora(net, path, strength, context, merge=False, region=region).report())


def _settings(args):
    """The sampler settings: explicit flags, else the preset's, else the official VACE ones."""
    from .easycache import EasyCache
    from .magcache import MagCache
    from .pipeline import SamplerSettings
    from .sampling.presets import lora_strength, preset
    from .step_cache import COEFFICIENTS, SIZES, TeaCache

    if args.denoise < 1 and not args.init_video and not args.job:
        raise VaceError(f"--denoise {args.denoise} refines a video: give it with --init-video FILE")
    chosen = preset(args.preset or "official")
    values = {k: getattr(args, k) if getattr(args, k) is not None else getattr(chosen, v)
              for k, v in (("steps", "steps"), ("cfg", "guidance"), ("shift", "shift"), ("sampler", "solver"))}
    if args.preset and args.preset != "official":
        print(f"preset {args.preset}: {values['steps']} steps, cfg {values['cfg']}, shift {values['shift']}, "
              f"{values['sampler']} ({chosen.note}; LoRA strength {lora_strength(args.preset, values['steps'])})")
    chosen_caches = [flag for flag, value in (("--teacache", args.teacache), ("--magcache", args.magcache),
                                              ("--easycache", args.easycache)) if value]
    if len(chosen_caches) > 1:
        raise VaceError(f"{' and '.join(chosen_caches)} are {len(chosen_caches)} step caches: choose one")
    if args.teacache_context_every_step and not args.teacache:
        raise VaceError("--teacache-context-every-step is a TeaCache option: give --teacache THRESHOLD too")
    cache = None
    if args.teacache:
        size = SIZES[args.teacache_coefficients]
        cache = TeaCache(threshold=args.teacache, mode=args.teacache_mode,
                         coefficients=None if size is None else COEFFICIENTS[args.teacache_mode, size],
                         context_every_step=args.teacache_context_every_step)
    elif args.magcache:
        cache = MagCache(threshold=args.magcache, retention=args.magcache_retention, k=args.magcache_k)
    elif args.easycache:
        cache = EasyCache(threshold=args.easycache, warmup=args.easycache_warmup)
    guidance = GuidanceOptions(**{name: getattr(args, name) for name in knobs(GuidanceOptions)}).settings()
    return SamplerSettings(steps=values["steps"], guidance=values["cfg"], shift=values["shift"],
                           solver=values["sampler"], seed=args.seed, step_cache=cache,
                           reference_weight=args.reference_weight, reference_decay=args.reference_decay,
                           denoise=args.denoise, **guidance)


def _check_launch(args) -> bool:
    """Whether this is a multi-process run; refuses one started by torchrun without a way to share the work
    (every process would sample the whole video and write the same file)."""
    from .distributed import check_environment, launched

    parallel = bool(args.parallel or args.cfg_parallel or args.fsdp)
    if launched():
        check_environment()
        if not parallel:
            raise VaceError("this process was started by torchrun (RANK and WORLD_SIZE are set) without --parallel, "
                            "--cfg-parallel or --fsdp: every process would sample the whole video and write the same "
                            "file. Add --parallel usp (split each video over the processes), or run without torchrun")
    elif parallel:
        raise VaceError("--parallel, --cfg-parallel and --fsdp run under torchrun, one process per GPU: "
                        "torchrun --nproc-per-node N -m vace_core run ... --parallel usp")
    return parallel


def _preflight(args, long, steps: int):
    """The frames' size and RAM, and the run's length in windows, before anything is read or loaded."""
    from .preflight import check_frames, warn_when_long

    length = args.extend_to or args.length
    check_frames(length, args.height, args.width)
    if args.video and (args.outpaint or args.extend_to):
        from .tasks import check_extension
        from .vcu.builders import outpaint_pads
        from .video_io import read_video

        clip, _ = read_video(args.video, max_frames=None if args.extend_to else 1)
        if args.outpaint:  # the canvas before it is fitted to --width/--height
            outpaint_pads(*clip.shape[1:3], *args.outpaint)
        if args.extend_to:
            check_extension(args.extend_to, len(clip))
    warn_when_long(length, long, steps)


def _check_sampling(args, model, job, long, settings):
    """One window's sampling against the device's free memory, after the model loaded and before the first step."""
    from .preflight import check_device

    if job is not None:
        unit, streams, guidance = job.vcus[0], len(job.vcus), job.settings.guidance
        latent = unit.latent_shape
    else:
        frames, streams, guidance = min(args.extend_to or args.length, long.window), 1 + bool(long.carry_guidance), \
            settings.guidance
        latent = (len(args.ref) + (frames - 1) // 4 + 1, args.height // 8, args.width // 8)
    guided = guidance != 1 or (args.cfg_low is not None and args.cfg_low != 1)
    check_device(model, latent, guided, streams, _device(args.device))


def _parallel(args, model):
    """Under torchrun with --parallel / --cfg-parallel / --fsdp: the model wrapped for this process's share."""
    from .distributed import ParallelVace, init_parallel, shard_weights
    from .experts import Experts

    layout = init_parallel(model.config.num_heads, args.parallel or "usp", args.cfg_parallel, args.ulysses_degree)
    experts = isinstance(model, Experts)  # Wan2.2: each expert on the processes
    if args.fsdp:
        model.each(lambda m: shard_weights(m, layout)) if experts else shard_weights(model, layout)
    d = layout.degrees
    if layout.mesh.get_rank():
        logging.getLogger("vace").setLevel(logging.WARNING)  # rank 0 reports progress
    print(f"rank {layout.mesh.get_rank()}: CFG {d.cfg} x ring {d.ring} x Ulysses {d.ulysses} on {layout.device}"
          + (", weights sharded (FSDP2)" if args.fsdp else ""))
    parallel = model.each(lambda m: ParallelVace(m, layout)) if experts else ParallelVace(model, layout)
    return parallel, layout.mesh.get_rank() == 0


def _window_values(specs: list[str], flag: str, convert=str) -> dict:
    """WINDOW:VALUE flags -> {window: value} (repeatable; a path may hold colons)."""
    out = {}
    for spec in specs:
        window, _, value = spec.partition(":")
        if not window.strip().isdigit() or not value:
            raise VaceError(f"{flag} {spec!r}: write WINDOW:VALUE with the window's number from 0, e.g. {flag} 2:x")
        try:
            out.setdefault(int(window), []).append(convert(value))
        except ValueError:
            raise VaceError(f"{flag} {spec!r}: {value!r} is not a whole number") from None
    return out


def _timeline(args):
    """The timeline flags -> TimelineInputs, or None when none is given."""
    from .tasks import TimelineInputs

    prompts = "\n".join(args.prompt) if len(args.prompt) > 1 else ""
    if args.prompts:
        try:
            prompts = open(args.prompts, encoding="utf-8").read()
        except OSError as e:
            raise VaceError(f"cannot read --prompts {args.prompts}: {e.strerror}") from None
    given = TimelineInputs(prompts, args.blend_prompts, _window_values(args.window_ref, "--window-ref"),
                           {w: v[-1] for w, v in _window_values(args.end_frame, "--end-frame").items()},
                           {w: v[-1] for w, v in _window_values(args.window_seed, "--window-seed", int).items()},
                           args.loop)
    return None if given == TimelineInputs(blend=args.blend_prompts) else given


def _rerender(args, job):
    """--rerender K on a saved state: the job set to sample window K (new seed / prompt when given)."""
    prompt = None
    if args.rerender_prompt is not None:
        from .text import load_text_encoder, tiny_text_encoder

        encoder = load_text_encoder(args.text_encoder) if args.text_encoder else tiny_text_encoder()
        prompt = encoder.encode(args.rerender_prompt)
    return job.rerender(args.rerender, args.rerender_seed, prompt)


def _run(args):
    from .long_video import LongVideoSettings
    from .sampling import ContextStream
    from .tasks import TaskInputs, run
    from .video_io import read_image

    if args.rerender is None and (args.rerender_seed is not None or args.rerender_prompt is not None):
        raise VaceError("--rerender-seed and --rerender-prompt go with --rerender WINDOW (and --job STATE)")
    if args.rerender is not None and not args.job:
        raise VaceError("--rerender WINDOW re-renders a saved run: give its state with --job (saved by --save-state)")
    self_strength, cross_strength = args.region_strength
    inputs = TaskInputs(prompt=(args.prompt or [""])[0], negative=args.negative, video=args.video, mask=args.mask,
                        outpaint=tuple(args.outpaint) if args.outpaint else None, extend_to=args.extend_to,
                        first=args.first, last=args.last, refs=args.ref, width=args.width, height=args.height,
                        length=args.length, regions=[tuple(r) for r in args.region],
                        background_prompt=args.background_prompt,
                        stream=ContextStream(strength=args.strength, start=args.start, end=args.end,
                                             curve=args.strength_curve or None, frames=args.frame_weights or None),
                        region_settings=dict(self_strength=self_strength, cross_strength=cross_strength,
                                             end=args.region_end, context_blocks=args.region_context_blocks,
                                             soft_edges=args.region_soft_edges),
                        timeline=_timeline(args), init_video=args.init_video)
    settings = _settings(args)
    check_writable(args.out, WRITE_EXTS)  # before minutes of work, not after
    _check_model_files(args)
    _check_model_flags(args)
    _check_preset(args)
    parallel = _check_launch(args)
    _speed(args)  # a bad combination (--ffn-chunk without --lean) fails before anything loads
    args.loras = [_lora_region(spec, args.region) for spec in args.lora]  # a bad @REGION too
    anchor = read_image(args.colour_anchor)[None, ..., :3] if args.colour_anchor else None
    long = LongVideoSettings(colour_anchor=anchor, **{name: getattr(args, name) for name in knobs(LongVideoSettings)})
    long.check()
    if not args.job:
        _preflight(args, long, settings.steps)
    if parallel:
        from .distributed import local_device

        args.device = args.device or local_device()
    job = None
    if args.job:
        from .job import load_job, run_job

        if args.region:
            refuse("--region", "--job", "a job file carries its prompts and regions already encoded (Save VACE "
                   "Job's regions input); run the task with --prompt and --region instead of the job file")

        job = load_job(args.job)  # before the models load, so a bad file fails fast
        if args.rerender is not None:
            job = _rerender(args, job)
    model, vae, text = _models(args)
    writer = True
    if not parallel:
        _check_sampling(args, model, job, long, settings)
    else:
        model, writer = _parallel(args, model)
    out = args.out if writer else None
    if job is not None:
        unit = job.vcus[0]
        run_job(job, model, vae, out, args.composite, tiling="auto", long=long, step_cache=settings.step_cache,
                rerender=args.rerender, later=args.later, state=args.save_state if writer else None)
    else:
        unit, _ = run(inputs, model, vae, text, out, settings, feather=args.composite, tiling="auto", long=long,
                      state=args.save_state if writer else None)
    if writer:
        print(f"wrote {args.out}: {unit.kind} VCU, {unit.length} frames, {unit.size[0]}x{unit.size[1]}")


def _info(args):
    from .checkpoints import detect_config, load_state_dict, merge_vace_module
    from .checkpoints.gguf import storage_types

    state_dict = load_state_dict(args.path)
    if args.base:
        state_dict = merge_vace_module(load_state_dict(args.base), state_dict)
    print(detect_config(state_dict))
    print(f"storage: {storage_types(state_dict)}")


def _convert(args):
    from .checkpoints import DTYPES, load_state_dict, merge_vace_module, save_checkpoint
    from .checkpoints.gguf import dequantize_all

    check_writable(args.dst)
    state_dict = dequantize_all(load_state_dict(args.src))  # GGUF blocks -> float32, then any dtype
    if args.base:
        state_dict = merge_vace_module(dequantize_all(load_state_dict(args.base)), state_dict)
    dtype = DTYPES[args.dtype.removesuffix("_scaled")] if args.dtype else None
    scaled = bool(args.dtype and args.dtype.endswith("_scaled"))
    save_checkpoint(state_dict, args.dst, args.layout, dtype, scaled=scaled)
    print(f"wrote {args.dst}")


def _long_video_flags(run):
    """Long video (vace_core/long_video.py): used when the VCU is longer than --window."""
    from .long_video import LongVideoSettings

    g = run.add_argument_group("long video (a VCU longer than --window)")
    flags = {"colour_method": "--colour"}  # the command line's older, shorter name
    for name, spec in knobs(LongVideoSettings).items():
        add_flag(g, spec, flags.get(name), dest=name)
    g.add_argument("--colour-anchor", help="image whose colours every window matches (default: the first window)")
    t = run.add_argument_group("long-video timeline (vace_core/timeline.py)")
    t.add_argument("--prompts", metavar="FILE", help="prompts file: one per window, or 'frame: prompt' lines")
    t.add_argument("--blend-prompts", action="store_true",
                   help="a window whose prompt changes reads beta*previous + (1-beta)*its own features, beta = "
                        "carried frames / window frames")
    t.add_argument("--window-ref", action="append", default=[], metavar="WINDOW:IMAGE",
                   help="reference image for one window (repeatable; replaces the --ref images there)")
    t.add_argument("--end-frame", action="append", default=[], metavar="WINDOW:IMAGE",
                   help="pin a window's last frame to this image (kept, mask 0)")
    t.add_argument("--window-seed", action="append", default=[], metavar="WINDOW:SEED",
                   help="seed of one window (default: --seed + window)")
    t.add_argument("--loop", action="store_true",
                   help="seamless loop: the last --overlap frames repeat the first ones (play all but them)")
    t.add_argument("--save-state", metavar="FILE",
                   help="save the run's state (a job file: VCU, prompts, settings, every window's seed and frames)")
    t.add_argument("--rerender", type=int, metavar="WINDOW",
                   help="with --job STATE: sample this window again, reusing every other window's frames")
    t.add_argument("--later", choices=["keep", "regenerate"], default="keep",
                   help="with --rerender: keep the later windows (re-blending the seam) or regenerate them")
    t.add_argument("--rerender-seed", type=int, help="with --rerender: the window's new seed (default: its own)")
    t.add_argument("--rerender-prompt", help="with --rerender: the window's new prompt (needs the text encoder)")


def _region_flags(run):
    """Regional prompts (vace_core/regional.py): the Regional Prompts node's inputs."""
    from .regional import Regions

    spec = knobs(Regions)
    run.add_argument("--region", nargs=2, action="append", default=[], metavar=("PROMPT", "MASK"),
                     help="regional prompt: a region's prompt and its mask image or video (white = the region); "
                          "repeatable. Best written word for word inside --prompt")
    run.add_argument("--background-prompt", default="", help="with --region: what the area outside every mask shows")
    # one flag for both strengths: their knobs share one range (tests/test_settings.py checks it)
    add_flag(run, spec["self_strength"], "--region-strength", nargs=2, metavar=("SELF", "CROSS"),
             default=(spec["self_strength"].default, spec["cross_strength"].default),
             help_suffix=" SELF; then CROSS: " + spec["cross_strength"].help)
    add_flag(run, spec["end"], "--region-end")
    add_flag(run, spec["context_blocks"], "--region-context-blocks")
    add_flag(run, spec["soft_edges"], "--region-soft-edges")


def _sampling_flags(run):
    """The VACE Sampler's inputs; steps, cfg, shift and sampler default to the preset's (official: the knobs')."""
    from .pipeline import SamplerSettings
    from .sampling.guidance import STREAM_KNOBS

    spec = knobs(SamplerSettings)
    for name, flag in (("steps", "--steps"), ("guidance", "--cfg"), ("shift", "--shift"), ("solver", "--sampler")):
        add_flag(run, spec[name], flag, default=None, help_suffix=f" Default {spec[name].default} (or the preset's).")
    run.add_argument("--preset", choices=["official", "causvid", "lightx2v"],
                     help="sampler settings for a speed LoRA (README: Presets); explicit flags win")
    add_flag(run, spec["seed"], "--seed")
    for name in ("reference_weight", "reference_decay"):
        add_flag(run, spec[name], help_suffix=" (with --ref)")
    for name, stream in STREAM_KNOBS.items():
        add_flag(run, stream, f"--{name}")


def _model_flags(run):
    """Load VACE Model / Load VACE VAE, Wan2.2's low-noise expert, the step cache and the speed switches."""
    from .checkpoints import LoadSettings
    from .easycache import EasyCache
    from .experts import Experts
    from .magcache import MagCache
    from .speed import Speed
    from .step_cache import SIZES, SIZES_HELP, TeaCache

    run.add_argument("--model", help="VACE checkpoint (file or folder); default: the embedded tiny model")
    run.add_argument("--base", help="Wan2.1 T2V base, when --model is a VACE module file")
    for spec in knobs(LoadSettings).values():
        add_flag(run, spec)
    run.add_argument("--model-low", help="Wan2.2: the low-noise expert (--model is then the high-noise one); a "
                                          "--model folder with high_noise_model/ and low_noise_model/ needs none")
    run.add_argument("--base-low", help="Wan2.2 T2V A14B low-noise base, when --model-low is a VACE module file")
    experts = knobs(Experts)
    add_flag(run, experts["boundary"], "--boundary")
    add_flag(run, experts["guidance_low"], "--cfg-low", default=None,
             help_suffix=f" Default {experts['guidance_low'].default} (with a speed-LoRA --preset: the preset's cfg).")
    cache = knobs(TeaCache)
    add_flag(run, cache["threshold"], "--teacache", default=0.0, metavar="THRESHOLD", help_suffix=" Default 0 (off).")
    add_flag(run, cache["mode"], "--teacache-mode")
    run.add_argument("--teacache-coefficients", choices=list(SIZES), default="auto", help=SIZES_HELP)
    add_flag(run, cache["context_every_step"], "--teacache-context-every-step")
    magcache = knobs(MagCache)
    add_flag(run, magcache["threshold"], "--magcache", default=0.0, metavar="THRESHOLD",
             help_suffix=" Default 0 (off).")
    add_flag(run, magcache["retention"], "--magcache-retention")
    add_flag(run, magcache["k"], "--magcache-k")
    easy = knobs(EasyCache)
    add_flag(run, easy["threshold"], "--easycache", default=0.0, metavar="THRESHOLD", help_suffix=" Default 0 (off).")
    add_flag(run, easy["warmup"], "--easycache-warmup")
    speed = run.add_argument_group("speed switches (default off: the exact path)")
    for name, spec in knobs(Speed).items():
        add_flag(speed, spec, dest=name)


def _guidance_flags(run):
    """NAG, skip-layer guidance, CFG-Zero* / APG (vace_core/guidance_options.py), the VCU's strength curves and
    video-to-video."""
    from .pipeline import SamplerSettings
    from .sampling.guidance import CURVE_KNOBS

    g = run.add_argument_group("guidance add-ons (all off by default: plain CFG)")
    for spec in knobs(GuidanceOptions).values():
        add_flag(g, spec)
    add_flag(g, CURVE_KNOBS["curve"], "--strength-curve")
    add_flag(g, CURVE_KNOBS["frame_weights"], "--frame-weights")
    g.add_argument("--init-video", help="video-to-video: the video to refine (fitted to --width/--height/--length)")
    add_flag(g, knobs(SamplerSettings)["denoise"], help_suffix=" With --init-video FILE.")


def _run_parser(sub):
    from .pipeline import FEATHER
    from .tasks import TaskInputs

    run = sub.add_parser("run", help="run a VACE task from files (see vace_core/tasks.py for which VCU is built)")
    run.add_argument("--job", help="a VACE job file (ComfyUI's Save VACE Job node): its VCUs, encoded prompts, "
                     "strengths and sampler settings replace the task and sampling flags (the long-video flags, "
                     "--teacache, --lora and the model flags still apply; --region does not: the prompts are encoded)")
    run.add_argument("--prompt", action="append", default=[],
                     help="what the video shows; repeated: one prompt per long-video window, in order")
    run.add_argument("--negative", help="negative prompt (default: Wan's official one)")
    run.add_argument("--video", help="control video, or the video to edit with --mask / --outpaint")
    run.add_argument("--mask", help="mask image or video: white = generate")
    run.add_argument("--outpaint", type=float, nargs=4, metavar=("LEFT", "RIGHT", "TOP", "BOTTOM"),
                     help="pixels (>= 1) or fractions (< 1) to add on each side")
    run.add_argument("--extend-to", type=int, help="generate frames after the video up to this count")
    run.add_argument("--first", help="first frame image (image-to-video / interpolation)")
    run.add_argument("--last", help="last frame image (interpolation)")
    run.add_argument("--ref", action="append", default=[], help="reference image (repeatable)")
    _region_flags(run)
    size = knobs(TaskInputs)
    add_flag(run, size["width"])
    add_flag(run, size["height"])
    add_flag(run, size["length"], help_suffix=" Longer than --window: long video.")
    _sampling_flags(run)
    run.add_argument("--lora", action="append", default=[], metavar="FILE[:STRENGTH[:CONTEXT]][@REGION]",
                     help="a Wan2.1 LoRA (repeatable), e.g. causvid.safetensors:0.5; @REGION confines it to a "
                          "--region (its number: 1, 2, ...) or to a mask file's white area, e.g. cat.safetensors@1")
    add_flag(run, FEATHER, "--composite", default=None, metavar="FEATHER",
             help_suffix=" Given: paste the kept pixels (mask black) back, with this soft edge.")
    _long_video_flags(run)
    _guidance_flags(run)
    _model_flags(run)
    run.add_argument("--vae", help="Wan2.1 VAE file; default: the embedded tiny VAE")
    run.add_argument("--text-encoder", help="umt5-xxl file or folder; default: the embedded tiny encoder")
    run.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    run.add_argument("--out", default="out/vace.mp4", help=".mp4, .webp or .gif")
    multi = run.add_argument_group("multi-GPU (under torchrun; rank 0 writes --out)")
    multi.add_argument("--parallel", choices=["ulysses", "ring", "usp"],
                       help="split each video's tokens over the processes: ulysses (heads must divide by the "
                       "processes), ring (any head count), usp (Ulysses x ring)")
    multi.add_argument("--cfg-parallel", action="store_true",
                       help="conditional and unconditional passes on two halves of the processes (guidance != 1)")
    multi.add_argument("--ulysses-degree", type=int, help="Ulysses degree for usp (default: the largest that fits)")
    multi.add_argument("--fsdp", action="store_true",
                       help="shard the weights over the processes (FSDP2) when a replica does not fit")
    run.set_defaults(fn=_run)


def parser() -> argparse.ArgumentParser:
    from .checkpoints import DTYPES, LAYOUTS

    p = argparse.ArgumentParser(prog="python -m vace_core", description="VACE (Wan2.1-VACE) from the command line.")
    sub = p.add_subparsers(dest="command", required=True)
    _run_parser(sub)
    demo = sub.add_parser("demo", help="the main job on the embedded tiny default: formats, two tasks, contact sheet")
    demo.add_argument("--out", default="out/demo", help="folder for the videos and the contact sheet")
    demo.add_argument("--checkpoints", help="keep the demo's checkpoints in this folder (default: temporary)")
    demo.set_defaults(fn=_demo)
    info = sub.add_parser("info", help="print the model config detected from a checkpoint's weights, and how they "
                          "are stored (dtypes; GGUF quantization types)")
    info.add_argument("path")
    info.add_argument("--base", help="the Wan2.1 T2V base, when PATH is a VACE module file")
    info.set_defaults(fn=_info)
    conv = sub.add_parser("convert", help="rewrite a checkpoint in another layout or dtype (e.g. fp32 14B to fp8)")
    conv.add_argument("src")
    conv.add_argument("dst")
    conv.add_argument("--layout", choices=LAYOUTS, default="official")
    conv.add_argument("--dtype", choices=[*DTYPES, "fp8_e4m3fn_scaled", "fp8_e5m2_scaled"])
    conv.add_argument("--base", help="merge a VACE module file (SRC) onto this T2V base first")
    conv.set_defaults(fn=_convert)
    return p


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parser().parse_args(argv)
    try:
        args.fn(args)
    except VaceError as e:  # a user's mistake: the message, not a traceback
        sys.exit(f"error: {e}")
    except OSError as e:  # the machine's: unreadable files, a full disk...
        sys.exit(f"error: {e.strerror or e}" + (f": {e.filename}" if e.filename else ""))


if __name__ == "__main__":
    main()
