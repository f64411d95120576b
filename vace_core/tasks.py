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
from .job import Job, save_job
from .long_video import LongVideoSettings, generate_long
from .pipeline import SamplerSettings, composite, generate
from .regional import Regions, check_coverage, encode_text
from .sampling import ContextStream
from .settings import knob
from .timeline import Timeline, parse_prompts
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
    width: int = knob(832, "Video width, a multiple of 16 (others are rounded down).", min=16, max=4096, step=16)
    height: int = knob(480, "Video height, a multiple of 16 (others are rounded down).", min=16, max=4096, step=16)
    length: int = knob(81, "Frames, 4n+1 (81 = 5 s at 16 fps); others are rounded down.", min=1, max=1025, step=4)
    regions: list[tuple[str, str]] = field(default_factory=list)  # (prompt, mask file): regional prompts
    background_prompt: str = ""
    stream: ContextStream | None = None  # the VCU's strength, start, end and curves (None: full strength, every step)
    region_settings: dict = field(default_factory=dict)  # Regions' knobs (self_strength, end...): the rest default
    timeline: "TimelineInputs | None" = None  # long video: per-window prompts, references, end frames, seeds, loop
    init_video: str | None = None  # video-to-video: the video refined with the settings' denoise < 1


@dataclass
class TimelineInputs:
    """The command line's timeline (vace_core.timeline): prompts (one per window, or "frame: prompt" lines),
    window -> reference image files / end frame file / seed, loop."""

    prompts: str = ""
    blend: bool = False
    references: dict[int, list[str]] = field(default_factory=dict)
    end_frames: dict[int, str] = field(default_factory=dict)
    seeds: dict[int, int] = field(default_factory=dict)
    loop: bool = False

    def build(self, text_encoder) -> Timeline:
        prompts, starts = parse_prompts(self.prompts) if self.prompts.strip() else ([], None)
        return Timeline([text_encoder.encode(p) for p in prompts], starts, self.blend,
                        {w: [read_image(f) for f in files] for w, files in self.references.items()},
                        {w: read_image(f)[..., :3] for w, f in self.end_frames.items()}, dict(self.seeds), self.loop)


def read_masks(path: str) -> torch.Tensor:
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


def check_extension(extend_to: int, clip_frames: int) -> None:
    """--extend-to is the whole video's length (4n+1, rounded down): it must leave frames to generate."""
    kept = (clip_frames - 1) // 4 * 4 + 1
    if (extend_to - 1) // 4 * 4 + 1 <= kept:
        used = "" if kept == clip_frames else f" ({kept} used: videos are 4n+1 frames)"
        raise VaceError(f"--extend-to {extend_to}: the clip has {clip_frames} frames{used}, and --extend-to is the "
                        f"length of the whole extended video (4n+1; other counts are rounded down), so it must be "
                        f"more than {kept}: give {kept + 4} or more (e.g. {max(81, kept + 4)})")


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
        if inputs.extend_to:
            check_extension(inputs.extend_to, len(video))
        length = V.fit_length(min(len(video), inputs.extend_to or inputs.length))
        if inputs.mask:
            unit = V.inpaint(video, read_masks(inputs.mask), length=length, **size)
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
    masks = [read_masks(m) for _, m in inputs.regions]
    check_coverage(masks)
    return Regions(text, masks, **inputs.region_settings)


def run(inputs: TaskInputs, model, vae, text_encoder, out: str | None, settings: SamplerSettings | None = None,
        feather: int | None = None, tiling=None, long: LongVideoSettings | None = None,
        state: str | None = None) -> tuple[V.VCU, torch.Tensor]:
    """Builds the VCU, samples, writes the video (unless `out` is None: the other ranks of a multi-process
    run); returns (VCU, video (3, T, H, W) in [-1, 1]). A VCU longer than `long.window` (or long.mode "fused")
    goes through vace_core.long_video, window by window, each window's frames streamed to the file as they
    are final; `inputs.timeline` directs its windows, and `state` saves the run (a job file to re-render a
    window from)."""
    settings = settings or SamplerSettings()
    unit, fps = build_vcu(inputs)
    regions = build_regions(inputs, text_encoder) if inputs.regions else None
    streams = None if inputs.stream is None else [inputs.stream]
    positive = text_encoder.encode(inputs.prompt) if regions is None else regions.text.features
    negative = text_encoder.encode_negative(inputs.negative)
    log.info("VACE: %s VCU, %d frames at %dx%d, %d reference(s)", unit.kind, unit.length, *unit.size,
             len(unit.references))
    timeline = inputs.timeline.build(text_encoder) if inputs.timeline is not None else None
    init = V.fit_to(read_video(inputs.init_video)[0], unit) if inputs.init_video else None
    if long is not None and (unit.length > long.window or long.mode == "fused"):
        job = Job([unit], positive, negative, streams or [ContextStream()], settings, long, timeline)
        return unit, _run_long(job, model, vae, out, fps, feather, tiling, state, regions, init)
    if timeline is not None or state is not None:
        raise VaceError(f"a timeline and --save-state direct long videos: the VCU has {unit.length} frames, within "
                        f"one {long.window if long else 81}-frame window. Make it longer (--length), or drop them")
    video = generate(model, vae, unit, positive, negative, streams, settings=settings, tiling=tiling, regions=regions,
                     init_video=init)
    if feather is not None:
        video = composite(video, unit, feather)
    if out is not None:
        write_video(out, V.to_images(video), fps)
    return unit, video


def _run_long(job: Job, model, vae, out, fps, feather, tiling, state, regions, init=None) -> torch.Tensor:
    stream = VideoStream(out, fps) if out is not None else None
    try:
        result = generate_long(model, vae, job.vcus, job.positive, job.negative, job.streams, settings=job.settings,
                               long=job.long, tiling=tiling, composite_feather=feather, timeline=job.timeline,
                               regions=regions, init_video=init,
                               on_frames=None if stream is None else lambda frames: stream.write(V.to_images(frames)))
    except BaseException:  # a failed or stopped run leaves `out` as it was (an earlier video stays whole)
        if stream is not None:
            stream.abort()
        raise
    if stream is not None:
        stream.close()
    if state is not None:
        save_job(state, job.with_run(result))
    return result.video
