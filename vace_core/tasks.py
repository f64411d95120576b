"""A VACE task from files (the command line's `run`): inputs -> VCU -> video file.

Which VCU is built follows from the inputs given:
- no video: text-to-video (or first/last-frame placement with --first / --last);
- --video alone: a control video (pose, depth, flow, gray, scribble, layout, already annotated);
- --video + --mask: inpainting; --video + --outpaint: outpainting;
- --extend-to N: the VCU above covers the video's frames, and frames up to N are generated after it
  (composition with a temporal extension);
- --ref (repeatable): reference images, on any of the above.
"""

import logging
from dataclasses import dataclass, field

import torch

from . import vcu as V
from .errors import VaceError
from .long_video import LongVideoSettings, generate_long
from .pipeline import SamplerSettings, composite, generate
from .regional import CROSS_STRENGTH, END, SELF_STRENGTH, Regions, encode_text
from .sampling import ContextStream
from .video_io import VideoStream, read_image, read_video, write_video

log = logging.getLogger("vace")


@dataclass
class TaskInputs:
    prompt: str = ""
    negative: str | None = None
    video: str | None = None
    mask: str | None = None
    outpaint: tuple[float, float, float, float] | None = None  # left, right, top, bottom
    extend_to: int | None = None
    first: str | None = None
    last: str | None = None
    refs: list[str] = field(default_factory=list)
    width: int = 832
    height: int = 480
    length: int = 81
    regions: list[tuple[str, str]] = field(default_factory=list)  # (prompt, mask file): regional prompts
    background_prompt: str = ""
    region_strength: tuple[float, float] = (SELF_STRENGTH, CROSS_STRENGTH)  # self, cross
    region_end: float = END
    init_video: str | None = None  # video-to-video: the video refined with the settings' denoise < 1
    strength_curve: str = ""  # the VCU's strength per step (sampling.curves); "" flat
    frame_weights: str = ""  # the VCU's weight per latent frame; "" flat


def _masks(path: str) -> torch.Tensor:
    frames, _ = read_video(path)
    return frames.mean(-1)  # white = generate


def _padded(unit: V.VCU, length: int) -> V.VCU:
    """The VCU followed by generated (gray, mask 1) frames up to `length`."""
    n = V.fit_length(length)
    extra = n - unit.length
    if extra <= 0:
        raise VaceError(f"--extend-to {length} must be longer than the {unit.length}-frame video")
    frames = torch.cat([unit.frames, torch.zeros(3, extra, *unit.size)], dim=1)
    masks = torch.cat([unit.masks, torch.ones(extra, *unit.size)])
    return V.VCU(frames, masks, unit.references, unit.kind)


def build_vcu(inputs: TaskInputs) -> tuple[V.VCU, float]:
    """-> (VCU, fps of the input video, else 16)."""
    fps, size = 16.0, {"height": inputs.height, "width": inputs.width}
    if inputs.video is None:
        if inputs.mask or inputs.outpaint:
            raise VaceError("--mask and --outpaint edit a video: give it with --video")
        places = {i: read_image(p) for i, p in ((0, inputs.first), (-1, inputs.last)) if p}
        unit = V.place_frames(places, inputs.length, **size) if places else V.text_to_video(inputs.length, **size)
    else:
        video, fps = read_video(inputs.video)
        length = V.fit_length(min(len(video), inputs.extend_to or inputs.length))
        if inputs.mask:
            unit = V.inpaint(video, _masks(inputs.mask), length=length, **size)
        elif inputs.outpaint:
            unit = V.outpaint(video, *inputs.outpaint, length=length, **size)
        else:
            unit = V.control(video, length=length, **size)
        if inputs.extend_to:
            clip_end = V.extend(torch.zeros(unit.length, *unit.size, 3), inputs.extend_to, "end")
            unit = V.compose(_padded(unit, inputs.extend_to), clip_end)
    if inputs.refs:
        unit = V.with_references(unit, [read_image(p) for p in inputs.refs])
    return unit, fps


def build_regions(inputs: TaskInputs, text_encoder) -> Regions:
    """--region PROMPT MASK (repeated) -> regional prompts over the global --prompt."""
    text = encode_text(lambda p: (text_encoder.token_ids(p), text_encoder.encode(p)), inputs.prompt,
                       [p for p, _ in inputs.regions], inputs.background_prompt)
    return Regions(text, [_masks(m) for _, m in inputs.regions], *inputs.region_strength, inputs.region_end)


def run(inputs: TaskInputs, model, vae, text_encoder, out: str | None, settings: SamplerSettings | None = None,
        feather: int | None = None, tiling=None, long: LongVideoSettings | None = None) -> tuple[V.VCU, torch.Tensor]:
    """Builds the VCU, samples, writes the video (unless `out` is None: the other ranks of a multi-process
    run); returns (VCU, video (3, T, H, W) in [-1, 1]). A VCU longer than `long.window` (or long.mode "fused")
    goes through vace_core.long_video, window by window, each window's frames streamed to the file as they
    are final."""
    settings = settings or SamplerSettings()
    unit, fps = build_vcu(inputs)
    regions = build_regions(inputs, text_encoder) if inputs.regions else None
    positive = text_encoder.encode(inputs.prompt) if regions is None else regions.text.features
    negative = text_encoder.encode_negative(inputs.negative)
    log.info("VACE: %s VCU, %d frames at %dx%d, %d reference(s)", unit.kind, unit.length, *unit.size,
             len(unit.references))
    streams = [ContextStream(curve=inputs.strength_curve or None, frames=inputs.frame_weights or None)]
    init = V.fit_to(read_video(inputs.init_video)[0], unit) if inputs.init_video else None
    if long is not None and (unit.length > long.window or long.mode == "fused"):
        if regions is not None:
            raise VaceError("--region works within one window: drop --window/--mode, or generate at most "
                            f"{long.window} frames (regional prompts over long-video windows are not supported yet)")
        return unit, _run_long(unit, model, vae, positive, negative, out, fps, settings, feather, tiling, long,
                               streams, init)
    video = generate(model, vae, unit, positive, negative, streams, settings=settings, tiling=tiling, regions=regions,
                     init_video=init)
    if feather is not None:
        video = composite(video, unit, feather)
    if out is not None:
        write_video(out, V.to_images(video), fps)
    return unit, video


def _run_long(unit, model, vae, positive, negative, out, fps, settings, feather, tiling, long, streams,
              init) -> torch.Tensor:
    if out is None:
        return generate_long(model, vae, unit, positive, negative, streams, settings=settings, long=long,
                             tiling=tiling, composite_feather=feather, init_video=init).video
    stream = VideoStream(out, fps)
    try:
        result = generate_long(model, vae, unit, positive, negative, streams, settings=settings, long=long,
                               tiling=tiling, composite_feather=feather, init_video=init,
                               on_frames=lambda frames: stream.write(V.to_images(frames)))
    finally:
        stream.close()
    return result.video
