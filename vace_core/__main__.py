"""Command line: `python -m vace_core {demo,info,convert}`."""

import argparse
import sys

import torch

from .errors import VaceError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16,
          "fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}


def _demo(args):
    from .demo import run

    run(args.out)


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
    save_checkpoint(state_dict, args.dst, args.layout, dtype, scaled=bool(args.dtype and args.dtype.endswith("_scaled")))
    print(f"wrote {args.dst}")


def main(argv=None):
    from .checkpoints import LAYOUTS

    p = argparse.ArgumentParser(prog="python -m vace_core", description="VACE (Wan2.1-VACE) from the command line.")
    sub = p.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="write the embedded tiny model in every checkpoint format, load and run each")
    demo.add_argument("--out", help="keep the checkpoints in this folder (default: a temporary one)")
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
