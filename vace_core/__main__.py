"""Command line: `python -m vace_core {run,demo,info,convert}`."""

import argparse
import logging
import sys

import torch

from .errors import VaceError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16,
          "fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}


def _demo(args):
    from .demo import main

    main(args.out, args.checkpoints)


def _models(args):
    """The user's files, or the embedded tiny default for what is not given."""
    from .embedded import tiny_model, tiny_vae

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.model:
        from .checkpoints import load_vace_model
        from .experts import expert_folders, load_experts

        kwargs = {"storage_dtype": DTYPES.get(args.weight_dtype), "device": device}
        if args.model_low or expert_folders(args.model):  # Wan2.2: two experts
            model = load_experts(args.model, args.model_low, base_high=args.base, base_low=args.base_low,
                                 boundary=args.boundary, guidance_low=args.cfg_low, **kwargs)
        else:
            model = load_vace_model(args.model, args.base, **kwargs)
    else:
        model = tiny_model().to(device)
    if args.vae:
        from .vae import load_vae

        vae = load_vae(args.vae, device=device)
    else:
        vae = tiny_vae().to(device)
    if args.text_encoder:
        from .text import load_text_encoder

        text = load_text_encoder(args.text_encoder, device=device)
    else:
        from .text import tiny_text_encoder

        text = tiny_text_encoder()
    if not (args.model and args.vae and args.text_encoder):
        print("using the embedded tiny default for the "
              + ", ".join(n for n, given in (("model", args.model), ("VAE", args.vae),
                                             ("text encoder", args.text_encoder)) if not given))
    return model, vae, text


def _run(args):
    from .pipeline import SamplerSettings
    from .tasks import TaskInputs, run

    inputs = TaskInputs(prompt=args.prompt, negative=args.negative, video=args.video, mask=args.mask,
                        outpaint=tuple(args.outpaint) if args.outpaint else None, extend_to=args.extend_to,
                        first=args.first, last=args.last, refs=args.ref, width=args.width, height=args.height,
                        length=args.length)
    from .step_cache import TeaCache

    cache = TeaCache(args.teacache, args.teacache_mode) if args.teacache else None
    settings = SamplerSettings(args.steps, args.cfg, args.shift, args.sampler, "wan", args.seed, cache)
    model, vae, text = _models(args)
    unit, _ = run(inputs, model, vae, text, args.out, settings, feather=args.composite, tiling="auto")
    print(f"wrote {args.out}: {unit.kind} VCU, {unit.length} frames, {unit.size[0]}x{unit.size[1]}")


def _info(args):
    from .checkpoints import detect_config, load_state_dict, merge_vace_module

    state_dict = load_state_dict(args.path)
    if args.base:
        state_dict = merge_vace_module(load_state_dict(args.base), state_dict)
    print(detect_config(state_dict))


def _convert(args):
    from .checkpoints import load_state_dict, merge_vace_module, save_checkpoint

    state_dict = load_state_dict(args.src)
    if args.base:
        state_dict = merge_vace_module(load_state_dict(args.base), state_dict)
    dtype = DTYPES[args.dtype.removesuffix("_scaled")] if args.dtype else None
    scaled = bool(args.dtype and args.dtype.endswith("_scaled"))
    save_checkpoint(state_dict, args.dst, args.layout, dtype, scaled=scaled)
    print(f"wrote {args.dst}")


def _run_parser(sub):
    run = sub.add_parser("run", help="run a VACE task from files (see vace_core/tasks.py for which VCU is built)")
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
    run.add_argument("--width", type=int, default=832)
    run.add_argument("--height", type=int, default=480)
    run.add_argument("--length", type=int, default=81, help="frames, 4n+1")
    run.add_argument("--steps", type=int, default=50)
    run.add_argument("--cfg", type=float, default=5.0)
    run.add_argument("--shift", type=float, default=16.0)
    run.add_argument("--sampler", choices=["unipc", "euler", "dpmpp_2m"], default="unipc")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--composite", type=int, metavar="FEATHER", help="paste kept pixels back (feather in px)")
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
    run.add_argument("--teacache-mode", choices=["t_emb", "e"], default="t_emb",
                     help="t_emb: timestep embedding (published default); e: modulation, first 5 steps kept")
    run.add_argument("--vae", help="Wan2.1 VAE file; default: the embedded tiny VAE")
    run.add_argument("--text-encoder", help="umt5-xxl file or folder; default: the embedded tiny encoder")
    run.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    run.add_argument("--out", default="out/vace.mp4", help=".mp4, .webp or .gif")
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


if __name__ == "__main__":
    main()
