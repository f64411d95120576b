"""Command line: `python -m vace_core {run,demo,info,convert}`."""

import argparse
import logging
import sys
from dataclasses import fields

import torch

from .errors import VaceError
from .guidance_options import COMBINATIONS, HELP, GuidanceOptions
from .outputs import check_writable
from .video_io import WRITE_EXTS

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16,
          "fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}


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


def _models(args):
    """The user's files, or the embedded tiny default for all three."""
    from .embedded import tiny_model, tiny_vae

    device = _device(args.device)
    # --fsdp: the weights stay on the CPU until FSDP2 moves each block's shard to this process's GPU
    model_device = "cpu" if args.fsdp else device
    if args.model:
        from .checkpoints import load_vace_model
        from .experts import expert_folders, load_experts

        compute = torch.bfloat16 if device.type == "cuda" else None  # as if loaded on the GPU
        kwargs = {"storage_dtype": DTYPES.get(args.weight_dtype), "device": model_device, "compute_dtype": compute}
        if args.model_low or expert_folders(args.model):  # Wan2.2: two experts
            model = load_experts(args.model, args.model_low, base_high=args.base, base_low=args.base_low,
                                 boundary=args.boundary, guidance_low=args.cfg_low, **kwargs)
        else:
            model = load_vace_model(args.model, args.base, **kwargs)
    else:
        model = tiny_model().to(model_device)
    _apply_loras(model, args.lora)
    if args.vae:
        from .vae import load_vae

        vae = load_vae(args.vae, device=device)
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


def _apply_loras(model, specs):
    """--lora, applied unmerged (fp8 weights keep their precision; nothing is copied)."""
    from .experts import Experts
    from .lora import apply_lora

    models = [model.high, model.low] if isinstance(model, Experts) else [model]  # Wan2.2: on both experts
    for spec in specs:
        path, numbers = _lora_spec(spec)
        strength, context = (numbers + [1.0])[0], (numbers[1] if len(numbers) == 2 else None)
        for net in models:
            print(apply_lora(net, path, strength, context, merge=False).report())


def _settings(args):
    """The sampler settings: explicit flags, else the preset's, else the official VACE ones."""
    from .magcache import MagCache
    from .pipeline import SamplerSettings
    from .sampling.presets import lora_strength, preset
    from .step_cache import TeaCache

    if args.denoise < 1 and not args.init_video and not args.job:
        raise VaceError(f"--denoise {args.denoise} refines a video: give it with --init-video FILE")
    chosen = preset(args.preset or "official")
    values = {k: getattr(args, k) if getattr(args, k) is not None else getattr(chosen, v)
              for k, v in (("steps", "steps"), ("cfg", "guidance"), ("shift", "shift"), ("sampler", "solver"))}
    if args.preset and args.preset != "official":
        print(f"preset {args.preset}: {values['steps']} steps, cfg {values['cfg']}, shift {values['shift']}, "
              f"{values['sampler']} ({chosen.note}; LoRA strength {lora_strength(args.preset, values['steps'])})")
    if args.teacache and args.magcache:
        raise VaceError("--teacache and --magcache are two step caches: choose one")
    cache = TeaCache(args.teacache, args.teacache_mode) if args.teacache else \
        MagCache(args.magcache, args.magcache_retention, args.magcache_k) if args.magcache else None
    guidance = GuidanceOptions(**{f.name: getattr(args, f.name) for f in fields(GuidanceOptions)}).settings()
    return SamplerSettings(values["steps"], values["cfg"], values["shift"], values["sampler"], "wan", args.seed, cache,
                           denoise=args.denoise, **guidance)


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


def _run(args):
    from .long_video import LongVideoSettings
    from .tasks import TaskInputs, run
    from .video_io import read_image

    inputs = TaskInputs(prompt=args.prompt, negative=args.negative, video=args.video, mask=args.mask,
                        outpaint=tuple(args.outpaint) if args.outpaint else None, extend_to=args.extend_to,
                        first=args.first, last=args.last, refs=args.ref, width=args.width, height=args.height,
                        length=args.length, regions=[tuple(r) for r in args.region],
                        background_prompt=args.background_prompt, region_strength=tuple(args.region_strength),
                        region_end=args.region_end, init_video=args.init_video, strength_curve=args.strength_curve,
                        frame_weights=args.frame_weights)
    settings = _settings(args)
    check_writable(args.out, WRITE_EXTS)  # before minutes of work, not after
    _check_model_files(args)
    anchor = read_image(args.colour_anchor)[None, ..., :3] if args.colour_anchor else None
    long = LongVideoSettings(args.window, args.overlap, args.discard, args.mode, args.perturbation,
                             args.replace_latents, args.carry_guidance, args.keyframes, colour_method=args.colour,
                             colour_strength=args.colour_strength, colour_anchor=anchor)
    long.check()
    parallel = args.parallel or args.cfg_parallel or args.fsdp
    if parallel:
        from .distributed import launched, local_device

        if not launched():
            raise VaceError("--parallel, --cfg-parallel and --fsdp run under torchrun, one process per GPU: "
                            "torchrun --nproc-per-node N -m vace_core run ... --parallel usp")
        args.device = args.device or local_device()
    job = None
    if args.job:
        from .job import load_job, run_job

        job = load_job(args.job)  # before the models load, so a bad file fails fast
    model, vae, text = _models(args)
    writer = True
    if parallel:
        model, writer = _parallel(args, model)
    out = args.out if writer else None
    if job is not None:
        unit = job.vcus[0]
        run_job(job, model, vae, out, args.composite, tiling="auto")
    else:
        unit, _ = run(inputs, model, vae, text, out, settings, feather=args.composite, tiling="auto", long=long)
    if writer:
        print(f"wrote {args.out}: {unit.kind} VCU, {unit.length} frames, {unit.size[0]}x{unit.size[1]}")


def _info(args):
    from .checkpoints import detect_config, load_state_dict, merge_vace_module

    state_dict = load_state_dict(args.path)
    if args.base:
        state_dict = merge_vace_module(load_state_dict(args.base), state_dict)
    print(detect_config(state_dict))


def _convert(args):
    from .checkpoints import load_state_dict, merge_vace_module, save_checkpoint

    check_writable(args.dst)
    state_dict = load_state_dict(args.src)
    if args.base:
        state_dict = merge_vace_module(load_state_dict(args.base), state_dict)
    dtype = DTYPES[args.dtype.removesuffix("_scaled")] if args.dtype else None
    scaled = bool(args.dtype and args.dtype.endswith("_scaled"))
    save_checkpoint(state_dict, args.dst, args.layout, dtype, scaled=scaled)
    print(f"wrote {args.dst}")


def _long_video_flags(run):
    """Long video (vace_core/long_video.py): used when the VCU is longer than --window."""
    from .colour import METHODS
    from .long_video import MODES

    g = run.add_argument_group("long video (a VCU longer than --window)")
    g.add_argument("--window", type=int, default=81, help="frames per window, 4n+1 (VACE was trained on 81)")
    g.add_argument("--overlap", type=int, default=5, help="frames each window carries over from the one before")
    g.add_argument("--mode", choices=MODES, default="autoregressive",
                   help="windows carrying the video forward, keyframes then interpolation, or fused windows")
    g.add_argument("--discard", type=int, default=0, help="frames dropped from the end of each window but the last")
    g.add_argument("--perturbation", type=float, default=0.02, help="noise level on the carried frames' context")
    g.add_argument("--replace-latents", action="store_true", help="re-noise carried latents to each step's level")
    g.add_argument("--carry-guidance", type=float, default=0.0, help="LVDM unconditional guidance weight (0 = off)")
    g.add_argument("--keyframes", type=int, default=0, help="hierarchical: keyframes, 4n+1 (0 = automatic)")
    g.add_argument("--colour", choices=METHODS, default="reinhard", help="colour anchoring method")
    g.add_argument("--colour-strength", type=float, default=1.0, help="colour anchoring strength, 0 = off")
    g.add_argument("--colour-anchor", help="image whose colours every window matches (default: the first window)")


def _guidance_flags(run):
    """NAG, skip-layer guidance, CFG-Zero* / APG (vace_core/guidance_options.py: one help text per knob)."""
    g = run.add_argument_group("guidance add-ons (all off by default: plain CFG)")
    for f in fields(GuidanceOptions):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "combination":
            g.add_argument(flag, choices=COMBINATIONS, default=f.default, help=HELP[f.name])
        else:
            g.add_argument(flag, type=type(f.default), default=f.default, help=HELP[f.name])
    g.add_argument("--strength-curve", default="", help="the VCU's strength per step: keyframes '0:1.0, 0.3:0.6, "
                   "1:0.2' (step fraction:value) or one value per step")
    g.add_argument("--frame-weights", default="", help="the VCU's weight per latent frame (references first): "
                   "keyframes '0:1, 0.2:0' or one value per latent frame")
    g.add_argument("--init-video", help="video-to-video: the video to refine (fitted to --width/--height/--length)")
    g.add_argument("--denoise", type=float, default=1.0, help="with --init-video: the fraction of the schedule "
                   "run from it noised (as KSampler's denoise; 1 = from pure noise)")


def _run_parser(sub):
    run = sub.add_parser("run", help="run a VACE task from files (see vace_core/tasks.py for which VCU is built)")
    run.add_argument("--job", help="a VACE job file (ComfyUI's Save VACE Job node): its VCUs, encoded prompts, "
                     "strengths and sampler settings replace the task and sampling flags")
    run.add_argument("--prompt", default="", help="what the video shows")
    run.add_argument("--negative", help="negative prompt (default: Wan's official one)")
    run.add_argument("--video", help="control video, or the video to edit with --mask / --outpaint")
    run.add_argument("--mask", help="mask image or video: white = generate")
    run.add_argument("--outpaint", type=float, nargs=4, metavar=("LEFT", "RIGHT", "TOP", "BOTTOM"),
                     help="pixels (>= 1) or fractions (< 1) to add on each side")
    run.add_argument("--extend-to", type=int, help="generate frames after the video up to this count")
    run.add_argument("--first", help="first frame image (image-to-video / interpolation)")
    run.add_argument("--last", help="last frame image (interpolation)")
    run.add_argument("--ref", action="append", default=[], help="reference image (repeatable)")
    run.add_argument("--region", nargs=2, action="append", default=[], metavar=("PROMPT", "MASK"),
                     help="regional prompt: a region's prompt and its mask image or video (white = the region); "
                          "repeatable. Best written word for word inside --prompt")
    run.add_argument("--background-prompt", default="", help="with --region: what the area outside every mask shows")
    run.add_argument("--region-strength", type=float, nargs=2, default=(0.3, 1.0), metavar=("SELF", "CROSS"),
                     help="with --region: self- and cross-attention strengths (VideoGrain: 0.3 1.0)")
    run.add_argument("--region-end", type=float, default=0.3,
                     help="with --region: fraction of the steps with the modulation (VideoGrain: 0.3 = 15 of 50)")
    run.add_argument("--width", type=int, default=832)
    run.add_argument("--height", type=int, default=480)
    run.add_argument("--length", type=int, default=81, help="frames, 4n+1; longer than --window: long video")
    run.add_argument("--steps", type=int, help="default 50 (or the preset's)")
    run.add_argument("--cfg", type=float, help="default 5 (or the preset's); 1 skips the negative pass")
    run.add_argument("--shift", type=float, help="default 16 (or the preset's)")
    run.add_argument("--sampler", choices=["unipc", "euler", "dpmpp_2m", "lcm"], help="default unipc (or the preset's)")
    run.add_argument("--preset", choices=["official", "causvid", "lightx2v"],
                     help="sampler settings for a speed LoRA (README: Presets); explicit flags win")
    run.add_argument("--lora", action="append", default=[], metavar="FILE[:STRENGTH[:CONTEXT]]",
                     help="a Wan2.1 LoRA (repeatable), e.g. causvid.safetensors:0.5")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--composite", type=int, metavar="FEATHER", help="paste kept pixels back (feather in px)")
    _long_video_flags(run)
    _guidance_flags(run)
    run.add_argument("--model", help="VACE checkpoint (file or folder); default: the embedded tiny model")
    run.add_argument("--base", help="Wan2.1 T2V base, when --model is a VACE module file")
    run.add_argument("--weight-dtype", choices=list(DTYPES), help="storage dtype (default: the file's)")
    run.add_argument("--model-low", help="Wan2.2: the low-noise expert (--model is then the high-noise one); a "
                                          "--model folder with high_noise_model/ and low_noise_model/ needs none")
    run.add_argument("--base-low", help="Wan2.2 T2V A14B low-noise base, when --model-low is a VACE module file")
    run.add_argument("--boundary", type=float, default=0.875, help="Wan2.2: low-noise expert below t = 1000 x this")
    run.add_argument("--cfg-low", type=float, help="Wan2.2: the low-noise expert's cfg (default: --cfg)")
    run.add_argument("--teacache", type=float, default=0.0, metavar="THRESHOLD",
                     help="step caching (TeaCache): 1.3B 0.05-0.08, 14B 0.14-0.2; 0 = off")
    run.add_argument("--magcache", type=float, default=0.0, metavar="THRESHOLD",
                     help="step caching (MagCache, published Wan2.1 ratios): 0.12 published default; 0 = off")
    run.add_argument("--magcache-retention", type=float, default=0.2, help="MagCache: first steps always computed")
    run.add_argument("--magcache-k", type=int, default=2, help="MagCache: most steps in a row from the cache")
    run.add_argument("--teacache-mode", choices=["t_emb", "e"], default="t_emb",
                     help="t_emb: timestep embedding (published default); e: modulation, first 5 steps kept")
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


def main(argv=None):
    from .checkpoints import LAYOUTS

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = argparse.ArgumentParser(prog="python -m vace_core", description="VACE (Wan2.1-VACE) from the command line.")
    sub = p.add_subparsers(dest="command", required=True)
    _run_parser(sub)
    demo = sub.add_parser("demo", help="the main job on the embedded tiny default: formats, two tasks, contact sheet")
    demo.add_argument("--out", default="out/demo", help="folder for the videos and the contact sheet")
    demo.add_argument("--checkpoints", help="keep the demo's checkpoints in this folder (default: temporary)")
    demo.set_defaults(fn=_demo)
    info = sub.add_parser("info", help="print the model config detected from a checkpoint's weights")
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
    args = p.parse_args(argv)
    try:
        args.fn(args)
    except VaceError as e:  # a user's mistake: the message, not a traceback
        sys.exit(f"error: {e}")
    except OSError as e:  # the machine's: unreadable files, a full disk...
        sys.exit(f"error: {e.strerror or e}" + (f": {e.filename}" if e.filename else ""))


if __name__ == "__main__":
    main()
