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
    # --fsdp: the weights stay on the CPU until FSDP2 moves each block's shard to this process's GPU
    model_device = "cpu" if args.fsdp else device
    if args.model:
        from .checkpoints import load_vace_model

        compute = torch.bfloat16 if torch.device(device).type == "cuda" else None  # as if loaded on the GPU
        model = load_vace_model(args.model, args.base, storage_dtype=DTYPES.get(args.weight_dtype),
                                device=model_device, compute_dtype=compute)
    else:
        model = tiny_model().to(model_device)
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
    if not (args.model and args.vae and (args.text_encoder or args.job)):
        print("using the embedded tiny default for the "
              + ", ".join(n for n, given in (("model", args.model), ("VAE", args.vae),
                                             ("text encoder", args.text_encoder or args.job)) if not given))
    return model, vae, text


def _parallel(args, model):
    """Under torchrun with --parallel / --cfg-parallel / --fsdp: the model wrapped for this process's share."""
    from .distributed import ParallelVace, init_parallel, shard_weights

    layout = init_parallel(model.config.num_heads, args.parallel or "usp", args.cfg_parallel, args.ulysses_degree)
    if args.fsdp:
        shard_weights(model, layout)
    d = layout.degrees
    if layout.mesh.get_rank():
        logging.getLogger("vace").setLevel(logging.WARNING)  # rank 0 reports progress
    print(f"rank {layout.mesh.get_rank()}: CFG {d.cfg} x ring {d.ring} x Ulysses {d.ulysses} on {layout.device}"
          + (", weights sharded (FSDP2)" if args.fsdp else ""))
    return ParallelVace(model, layout), layout.mesh.get_rank() == 0


def _run(args):
    from .pipeline import SamplerSettings
    from .tasks import TaskInputs, run

    inputs = TaskInputs(prompt=args.prompt, negative=args.negative, video=args.video, mask=args.mask,
                        outpaint=tuple(args.outpaint) if args.outpaint else None, extend_to=args.extend_to,
                        first=args.first, last=args.last, refs=args.ref, width=args.width, height=args.height,
                        length=args.length)
    settings = SamplerSettings(args.steps, args.cfg, args.shift, args.sampler, "wan", args.seed)
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
        unit, _ = run(inputs, model, vae, text, out, settings, feather=args.composite, tiling="auto")
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

    state_dict = load_state_dict(args.src)
    if args.base:
        state_dict = merge_vace_module(load_state_dict(args.base), state_dict)
    dtype = DTYPES[args.dtype.removesuffix("_scaled")] if args.dtype else None
    scaled = bool(args.dtype and args.dtype.endswith("_scaled"))
    save_checkpoint(state_dict, args.dst, args.layout, dtype, scaled=scaled)
    print(f"wrote {args.dst}")


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


if __name__ == "__main__":
    main()
