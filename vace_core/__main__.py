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

        model = load_vace_model(args.model, args.base, storage_dtype=DTYPES.get(args.weight_dtype), device=device)
    else:
        model = tiny_model().to(device)
    _apply_loras(model, args.lora)
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
    from .lora import apply_lora

    for spec in specs:
        path, numbers = _lora_spec(spec)
        strength, context = (numbers + [1.0])[0], (numbers[1] if len(numbers) == 2 else None)
        print(apply_lora(model, path, strength, context, merge=False).report())


def _settings(args):
    """The sampler settings: explicit flags, else the preset's, else the official VACE ones."""
    from .pipeline import SamplerSettings
    from .sampling.presets import lora_strength, preset

    chosen = preset(args.preset or "official")
    values = {k: getattr(args, k) if getattr(args, k) is not None else getattr(chosen, v)
              for k, v in (("steps", "steps"), ("cfg", "guidance"), ("shift", "shift"), ("sampler", "solver"))}
    if args.preset and args.preset != "official":
        print(f"preset {args.preset}: {values['steps']} steps, cfg {values['cfg']}, shift {values['shift']}, "
              f"{values['sampler']} ({chosen.note}; LoRA strength {lora_strength(args.preset, values['steps'])})")
    return SamplerSettings(values["steps"], values["cfg"], values["shift"], values["sampler"], "wan", args.seed)


def _run(args):
    from .tasks import TaskInputs, run

    inputs = TaskInputs(prompt=args.prompt, negative=args.negative, video=args.video, mask=args.mask,
                        outpaint=tuple(args.outpaint) if args.outpaint else None, extend_to=args.extend_to,
                        first=args.first, last=args.last, refs=args.ref, width=args.width, height=args.height,
                        length=args.length)
    settings = _settings(args)
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
    run.add_argument("--model", help="VACE checkpoint (file or folder); default: the embedded tiny model")
    run.add_argument("--base", help="Wan2.1 T2V base, when --model is a VACE module file")
    run.add_argument("--weight-dtype", choices=list(DTYPES), help="storage dtype (default: the file's)")
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
