"""VACE Timeline: per-window prompts, a reference, an end frame and seeds for the VACE Long Video Sampler."""

import re

from comfy_api.latest import io

from ..vace_core.errors import VaceError
from ..vace_core.timeline import Timeline, parse_prompts
from .types import CATEGORY, TimelineType

SEED_LINE = re.compile(r"^\s*(-?\d+)\s*:\s*(\d+)\s*$")


def window_seeds(text: str) -> dict[int, int]:
    """'window: seed' lines -> {window: seed}."""
    seeds = {}
    for line in filter(str.strip, text.splitlines()):
        match = SEED_LINE.match(line)
        if match is None:
            raise VaceError(f"seeds line {line!r}: write 'window: seed' (e.g. '2: 1234'), one per line")
        seeds[int(match.group(1))] = int(match.group(2))
    return seeds


class VaceTimeline(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VACETimeline", display_name="VACE Timeline", category=CATEGORY,
            description="Directs a long video window by window: a prompt per window (or from a frame on), a "
                        "character reference, an end frame, seeds, a seamless loop. Connect it to the VACE Long "
                        "Video Sampler's timeline input.",
            inputs=[
                io.Clip.Input("clip", tooltip="The Wan text encoder (Load CLIP, type wan): encodes every prompt."),
                io.String.Input("prompts", multiline=True, default="",
                                tooltip="One prompt per line, one per window in order (the last repeats), or "
                                        "'frame: prompt' lines (e.g. '0: a cat sleeps' / '80: the cat wakes up'): "
                                        "a window reads the prompt of the first frame it generates. Empty: every "
                                        "window reads the sampler's positive."),
                io.Boolean.Input("blend", default=False,
                                 tooltip="Where the prompt changes, the window reads beta x previous + (1 - beta) x "
                                         "its own prompt features, beta = carried frames / window frames."),
                io.Image.Input("reference", optional=True,
                               tooltip="A reference image (e.g. the character) for the windows from "
                                       "reference_window on; it replaces the VCU's references there."),
                io.Int.Input("reference_window", default=0, min=0, max=255, optional=True,
                             tooltip="The first window that gets the reference (0: every window)."),
                io.Image.Input("end_frame", optional=True,
                               tooltip="An image pinned as the last frame of end_frame_window (kept, like "
                                       "first/last-frame interpolation), at the video's size."),
                io.Int.Input("end_frame_window", default=-1, min=-64, max=255, optional=True,
                             tooltip="Which window ends on end_frame: 0, 1, ... or -1 for the last window."),
                io.String.Input("seeds", multiline=True, default="", optional=True,
                                tooltip="Optional 'window: seed' lines; other windows use the sampler's seed + "
                                        "their number."),
                io.Boolean.Input("loop", default=False,
                                 tooltip="Seamless loop (autoregressive): the video's last `overlap` frames are its "
                                         "first frames, kept at the end of the last window. Play all but those "
                                         "frames in a loop."),
            ],
            outputs=[TimelineType.Output(display_name="timeline")],
        )

    @classmethod
    def execute(cls, clip, prompts, blend, loop, reference=None, reference_window=0, end_frame=None,
                end_frame_window=-1, seeds="") -> io.NodeOutput:
        texts, starts = parse_prompts(prompts) if prompts.strip() else ([], None)
        features = [clip.encode_from_tokens(clip.tokenize(t)).float().cpu() for t in texts]
        if reference is not None and reference_window < 0:
            raise VaceError("reference_window counts windows from 0")
        references = {} if reference is None else {reference_window: list(reference)}  # from that window on
        end_frames = {} if end_frame is None else {end_frame_window: end_frame[0]}
        return io.NodeOutput(Timeline(features, starts, blend, references, end_frames, window_seeds(seeds or ""),
                                      loop))


NODES = [VaceTimeline]
