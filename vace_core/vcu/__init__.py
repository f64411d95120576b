"""The Video Condition Unit: data type, task builders, composition and context tokenisation."""

from .builders import (
    control,
    every_kth,
    extend,
    first_frame,
    first_last,
    fit_to,
    inpaint,
    last_frame,
    outpaint,
    place_frames,
    text_to_video,
    with_references,
)
from .compose import compose
from .encode import decouple, encode_vcu, tokenise_masks
from .pixels import to_images
from .unit import VCU, fit_length, fit_size
from .windows import keep_frames, select_frames

__all__ = [
    "VCU", "compose", "control", "decouple", "encode_vcu", "every_kth", "extend", "first_frame", "first_last",
    "fit_length", "fit_size", "fit_to", "inpaint", "keep_frames", "last_frame", "outpaint", "place_frames",
    "select_frames", "text_to_video", "to_images", "tokenise_masks", "with_references",
]
