"""A VACE job file: everything `pipeline.generate` takes except the models, in one safetensors file.

ComfyUI's Save VACE Job node writes it (the VCUs built in the graph, the encoded prompts, the stream
strengths and the sampler settings); `python -m vace_core run --job FILE` (or torchrun with --parallel
for several GPUs) samples it outside the ComfyUI server and needs no text encoder.

Tensors: vcu.{i}.frames (3, T, H, W), vcu.{i}.masks (T, H, W), vcu.{i}.ref.{j} (3, H, W), positive and
negative (1, L, D) text features; the metadata "vace_job" holds JSON: version, kinds, streams, settings.

Version 2 adds a long video's saved state (optional, so one file re-renders one window later): the long-video
settings (JSON "long", tensor long.colour_anchor), the timeline (timeline.prompt.{i} features,
timeline.ref.{w}.{j} and timeline.end.{w} images, JSON starts / blend / seeds / loop), and the run: state.video
(3, T, H, W) float32 (every output frame, bit for bit: 3·T·H·W·4 bytes, e.g. 1.2 GB for 241 frames at
832x480), the colour anchor's statistics (state.anchor.*) and per window its frames, carried frames, seed and
prompt (JSON "records"). Each window's VCU is rebuilt from the VCUs, the plan and the saved video exactly as
the run built it.

Regional prompts (optional; version 2 files without them read as before): regions.features (L, D) and
regions.token_group (L,) (the composed text, whose features are the positive), regions.masks (n, T, H, W), and
the knobs (JSON "regions").
"""

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from .colour import ColourAnchor
from .easycache import EasyCache
from .errors import VaceError
from .long_video import LongVideo, LongVideoSettings, Resume, WindowRecord
from .magcache import MagCache
from .nag import NAG
from .outputs import atomic_output, save_safetensors
from .pipeline import SamplerSettings
from .regional import RegionalText, Regions
from .sampling import ContextStream
from .sampling.guiders import AdaptiveProjectedGuidance, CFGZeroStar, SkipLayerGuidance
from .step_cache import TeaCache
from .timeline import Timeline
from .vcu import VCU

VERSION = 2
READS = (1, 2)
ANCHOR = ("lab_mean", "lab_std", "rgb_mean", "rgb_cov")


@dataclass
class Job:
    """What to sample; `long` / `timeline` for a long video, `init_video` to refine (settings.denoise < 1), and
    `video` / `anchor` / `records` once it ran (the saved state a window is re-rendered from)."""

    vcus: list[VCU]
    positive: torch.Tensor  # (1, L, D) text features
    negative: torch.Tensor | None
    streams: list[ContextStream]
    settings: SamplerSettings
    long: LongVideoSettings | None = None
    timeline: Timeline | None = None
    video: torch.Tensor | None = None  # (3, T, H, W) in [-1, 1]
    anchor: ColourAnchor | None = None
    records: list[WindowRecord] = field(default_factory=list)
    init_video: torch.Tensor | None = None  # (3, T, H, W) in [-1, 1], the first VCU's size and length
    regions: Regions | None = None  # regional prompts (positive = their composed text)

    def with_run(self, result: LongVideo) -> "Job":
        """This job with a long-video run's state (to save, then re-render a window from)."""
        return replace(self, video=result.video, anchor=result.anchor, records=list(result.records))

    def rerender(self, window: int, seed: int | None = None, prompt: torch.Tensor | None = None) -> "Job":
        """This saved run set to sample window `window` with a new seed and / or prompt features (1, L, D)."""
        self.resume(window)  # checks there is a saved run
        timeline = self.timeline or Timeline()
        records = self.records
        if prompt is not None:
            timeline = timeline.with_window_prompt(window, prompt, [r.prompt for r in records], self.positive)
            records = [replace(r, prompt=j) for j, r in enumerate(records)]
        if seed is not None:
            timeline = replace(timeline, seeds={**timeline.seeds, window: seed})
        return replace(self, timeline=timeline, records=records)

    def resume(self, window: int, later: str = "keep") -> Resume:
        if self.video is None or self.long is None:
            raise VaceError("this job file holds no long-video run to re-render a window of: save the state of a "
                            "long-video run (--save-state, or the Long Video Sampler's save_state)")
        return Resume(self.video, self.anchor, self.records, window, later)


def _long_meta(long: LongVideoSettings) -> dict:
    return {f.name: getattr(long, f.name) for f in fields(long) if f.name != "colour_anchor"}


def _timeline_tensors(timeline: Timeline) -> tuple[dict, dict]:
    tensors = {f"timeline.prompt.{i}": p for i, p in enumerate(timeline.prompts)}
    tensors |= {f"timeline.ref.{w}.{j}": r for w, refs in timeline.references.items() for j, r in enumerate(refs)}
    tensors |= {f"timeline.end.{w}": e for w, e in timeline.end_frames.items()}
    meta = {"prompts": len(timeline.prompts), "starts": timeline.starts, "blend": timeline.blend,
            "references": {str(w): len(r) for w, r in timeline.references.items()},
            "end_frames": list(timeline.end_frames), "seeds": {str(w): s for w, s in timeline.seeds.items()},
            "loop": timeline.loop}
    return tensors, meta


def _read_timeline(meta: dict, tensors: dict) -> Timeline:
    return Timeline([tensors[f"timeline.prompt.{i}"] for i in range(meta["prompts"])], meta["starts"], meta["blend"],
                    {int(w): [tensors[f"timeline.ref.{w}.{j}"] for j in range(n)]
                     for w, n in meta["references"].items()},
                    {int(w): tensors[f"timeline.end.{w}"] for w in meta["end_frames"]},
                    {int(w): s for w, s in meta["seeds"].items()}, meta["loop"])


CACHES = {"TeaCache": TeaCache, "MagCache": MagCache, "EasyCache": EasyCache}
GUIDES = {"nag": NAG, "slg": SkipLayerGuidance, "cfg_zero_star": CFGZeroStar, "apg": AdaptiveProjectedGuidance}


def _regions_tensors(regions: Regions) -> tuple[dict, dict]:
    knobs = {f.name: getattr(regions, f.name) for f in fields(regions) if f.name not in ("text", "masks")}
    knobs["blocks"] = None if regions.blocks is None else sorted(regions.blocks)
    # a copy: the positive is often these very features, and safetensors refuses two names for one storage
    return {"regions.features": regions.text.features.clone(), "regions.token_group": regions.text.token_group,
            "regions.masks": regions.masks}, knobs


def _read_regions(path, meta: dict, tensors: dict) -> Regions:
    text = RegionalText(_checked(path, "regions.features", tensors, -math.inf, math.inf, "text features"),
                        tensors["regions.token_group"].long())
    blocks = None if meta["blocks"] is None else frozenset(meta["blocks"])
    return Regions(text, _checked(path, "regions.masks", tensors, 0, 1, "region masks"), **{**meta, "blocks": blocks})


def _spec(curve) -> str | None:
    """A stream's curve as the text it was written in (None: flat)."""
    return None if curve is None else getattr(curve, "spec", curve)


def _settings_record(settings: SamplerSettings) -> dict:
    """The settings as JSON: the guidance add-ons by their constructor fields (APG's running average is per run);
    the step cache apart (`_cache_record`)."""
    record = asdict(replace(settings, step_cache=None, **dict.fromkeys(GUIDES)))
    for name, cls in GUIDES.items():
        value = getattr(settings, name)
        record[name] = None if value is None else {f.name: getattr(value, f.name) for f in fields(cls) if f.init}
    return record


def _settings_from(record: dict) -> SamplerSettings:
    guides = {name: None if record.get(name) is None else cls(**record[name]) for name, cls in GUIDES.items()}
    return SamplerSettings(**{**record, **guides})


def _cache_record(cache) -> dict:
    """A step cache's settings (not the run's cache state): TeaCache's as version 1 wrote them (an older file
    without context_every_step reads as off), MagCache's and EasyCache's with their kind."""
    record = {f.name: getattr(cache, f.name) for f in fields(cache) if f.name != "stats"}
    return record if isinstance(cache, TeaCache) else {"kind": type(cache).__name__, **record}


def _cache_from(record: dict):
    record = dict(record)
    return CACHES[record.pop("kind", "TeaCache")](**record)


def save_job(path, job: Job) -> Path:
    """Writes the job (float32 pixels and features); returns the path."""
    if len(job.vcus) != len(job.streams) or not job.vcus:
        raise VaceError(f"a job needs at least one VCU and one stream setting per VCU (got {len(job.vcus)} VCUs, "
                        f"{len(job.streams)} stream settings)")
    if job.settings.denoise <= 0.9999 and job.init_video is None:
        raise VaceError(f"denoise {job.settings.denoise} refines a video, but the job holds none: give the job its "
                        "init video (the Save VACE Job node's init_images), or set denoise to 1")
    tensors = {"positive": job.positive}
    if job.init_video is not None:
        tensors["init_video"] = job.init_video
    if job.negative is not None:
        tensors["negative"] = job.negative
    for i, unit in enumerate(job.vcus):
        tensors |= {f"vcu.{i}.frames": unit.frames, f"vcu.{i}.masks": unit.masks}
        tensors |= {f"vcu.{i}.ref.{j}": ref for j, ref in enumerate(unit.references)}
    meta = {"version": VERSION, "kinds": [u.kind for u in job.vcus],
            "streams": [[*s[:3], _spec(s.curve), _spec(s.frames)] for s in (ContextStream(*t) for t in job.streams)],
            "settings": _settings_record(job.settings)}
    if job.settings.step_cache is not None:  # its settings; the run's cache state is not part of the job
        meta["step_cache"] = _cache_record(job.settings.step_cache)
    tensors = {k: v.float() for k, v in tensors.items()}
    if job.long is not None:
        meta["long"] = _long_meta(job.long)
        if job.long.colour_anchor is not None:
            tensors["long.colour_anchor"] = job.long.colour_anchor.float()
    if job.regions is not None:
        more, meta["regions"] = _regions_tensors(job.regions)
        tensors |= {k: v.float() for k, v in more.items()}
    if job.timeline is not None:
        more, meta["timeline"] = _timeline_tensors(job.timeline)
        tensors |= {k: v.float() for k, v in more.items()}
    if job.video is not None:
        tensors["state.video"] = job.video.float()
        meta["records"] = [asdict(r) for r in job.records]
        if job.anchor is not None:  # float64 statistics, kept exact
            tensors |= {f"state.anchor.{k}": torch.from_numpy(np.asarray(getattr(job.anchor, k))) for k in ANCHOR}
    path = Path(path)
    with atomic_output(path) as temp:  # whole or not at all
        save_safetensors({k: v.contiguous().cpu() for k, v in tensors.items()}, temp,
                         {"vace_job": json.dumps(meta)})
    return path


def load_job(path) -> Job:
    """Reads a job file; a missing, foreign or damaged file is a VaceError saying which."""
    try:
        with safe_open(str(path), "pt") as f:
            meta, names = (f.metadata() or {}).get("vace_job"), set(f.keys())
            tensors = {k: f.get_tensor(k) for k in names}
    except (OSError, SafetensorError) as e:
        raise VaceError(f"cannot read the VACE job file {path}: {e}") from e
    if meta is None:
        raise VaceError(f"{path} is not a VACE job file (no 'vace_job' metadata): save one with the "
                        "Save VACE Job node")
    return _job(path, _metadata(path, meta), tensors)


def _metadata(path, text: str) -> dict:
    """The job's JSON metadata: readable, this version, every key there."""
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        raise VaceError(f"{path}: its 'vace_job' metadata is not JSON ({e}); the file was edited or damaged: save "
                        "the job again with the Save VACE Job node") from None
    if not isinstance(meta, dict) or meta.get("version") not in READS:
        version = meta.get("version") if isinstance(meta, dict) else None
        raise VaceError(f"{path} is a version {version} VACE job; this code reads versions "
                        f"{', '.join(map(str, READS))}")
    if missing := [k for k in ("kinds", "streams", "settings") if k not in meta]:
        raise VaceError(f"{path}: its 'vace_job' metadata lacks {', '.join(missing)}: save the job again with "
                        "the Save VACE Job node")
    known = {f.name for f in fields(SamplerSettings)}
    if not isinstance(meta["settings"], dict) or (unknown := sorted(set(meta["settings"]) - known)):
        raise VaceError(f"{path}: unknown sampler settings {unknown if isinstance(meta['settings'], dict) else ''} "
                        f"in the job (this code knows {', '.join(sorted(known))}): save the job again with this "
                        "version of the pack")
    return meta


def _checked(path, name: str, tensors: dict, low: float, high: float, what: str) -> torch.Tensor:
    """A job tensor, present and within its range (NaN and 0..255 pixels are refused when read, not sampled)."""
    if name not in tensors:
        raise VaceError(f"{path} lacks the tensor {name!r}: the file is damaged; save the job again")
    x = tensors[name]
    if not torch.isfinite(torch.sum(x, dtype=torch.float32)):
        raise VaceError(f"{path}: {name} holds NaN or infinite values: the job file is damaged, or was saved from "
                        "invalid inputs. Save it again from a graph that runs.")
    lo, hi = (float(v) for v in torch.aminmax(x.float())) if x.numel() else (low, high)
    if lo < low - 1e-3 or hi > high + 1e-3:
        hint = " (0..255 values: a job's pixels are -1..1)" if hi > 2 else ""
        raise VaceError(f"{path}: {name} runs from {lo:.4g} to {hi:.4g}, but {what} are {low:g}..{high:g}{hint}. "
                        "Save the job with the Save VACE Job node.")
    return x


def _job(path, meta: dict, tensors: dict) -> Job:
    vcus = []
    for i, kind in enumerate(meta["kinds"]):
        refs = sorted((k for k in tensors if k.startswith(f"vcu.{i}.ref.")), key=lambda k: int(k.rsplit(".", 1)[1]))
        pixels = [_checked(path, k, tensors, -1, 1, "VCU pixels") for k in (f"vcu.{i}.frames", *refs)]
        masks = _checked(path, f"vcu.{i}.masks", tensors, 0, 1, "VCU masks")
        vcus.append(VCU(pixels[0], masks, pixels[1:], kind))
    positive = _checked(path, "positive", tensors, -math.inf, math.inf, "text features")
    negative = _checked(path, "negative", tensors, -math.inf, math.inf, "text features") \
        if "negative" in tensors else None
    try:
        streams = [ContextStream(*s) for s in meta["streams"]]
    except TypeError:
        raise VaceError(f"{path}: its streams {meta['streams']!r} are not (strength, start, end[, curve, frame "
                        "weights]) per VCU: save the job again with the Save VACE Job node") from None
    settings = _settings_from(meta["settings"])
    settings.check()  # the sampler's ranges, as the node and the command line hold them
    if "step_cache" in meta:
        settings = replace(settings, step_cache=_cache_from(meta["step_cache"]))
    job = Job(vcus, positive, negative, streams, settings)
    if "init_video" in tensors:
        job.init_video = _checked(path, "init_video", tensors, -1, 1, "init video pixels")
    if "long" in meta:
        job.long = LongVideoSettings(**meta["long"], colour_anchor=tensors.get("long.colour_anchor"))
    if "regions" in meta:
        job.regions = _read_regions(path, meta["regions"], tensors)
    if "timeline" in meta:
        job.timeline = _read_timeline(meta["timeline"], tensors)
    if "state.video" in tensors:
        job.video = tensors["state.video"]
        job.records = [WindowRecord(**{k: tuple(v) if isinstance(v, list) else v for k, v in r.items()})
                       for r in meta["records"]]
        if "state.anchor.lab_mean" in tensors:
            job.anchor = ColourAnchor(*(tensors[f"state.anchor.{k}"].numpy() for k in ANCHOR))
    return job


def run_job(job: Job, model, vae, out: str | None, feather: int | None = None, tiling=None, long=None,
            step_cache=None, rerender: int | None = None, later: str = "keep",
            state: str | Path | None = None) -> torch.Tensor:
    """Samples the job and writes the video at 16 fps (unless `out` is None: the other ranks of a
    multi-process run); returns the video (3, T, H, W) in [-1, 1]. model: a denoiser or Wan2.2 `Experts`.
    long: `long_video.LongVideoSettings` for a job longer than its window (or fused mode; a saved long-video
    run's own settings win); step_cache: a `TeaCache` for this run (else the job's). rerender: sample only
    that window again from the job's saved run (later windows `keep` or `regenerate`); state: save the run's
    state there (a job file to re-render from)."""
    from dataclasses import replace

    from .long_video import generate_long
    from .pipeline import generate
    from .vcu import to_images
    from .video_io import write_video

    if job.positive.shape[-1] != model.config.text_dim:
        raise VaceError(f"the job's prompts are {job.positive.shape[-1]}-wide text features but the model reads "
                        f"{model.config.text_dim}: save the job with the text encoder of this model (umt5-xxl: 4096)")
    job = replace(job, settings=replace(job.settings, step_cache=step_cache or job.settings.step_cache),
                  long=job.long or long)
    windows = job.long is not None and (job.vcus[0].length > job.long.window or job.long.mode == "fused"
                                        or job.video is not None)
    if not windows and (rerender is not None or state is not None):
        raise VaceError("re-rendering a window and saving a run's state are for long-video jobs: this job fits one "
                        "window and has no saved run (save it from a long-video run)")
    if not windows:
        video = generate(model, vae, job.vcus, job.positive, job.negative, job.streams, job.settings, tiling=tiling,
                         composite_feather=feather, regions=job.regions, init_video=job.init_video)
    else:
        resume = None if rerender is None else job.resume(rerender, later)
        result = generate_long(model, vae, job.vcus, job.positive, job.negative, job.streams, job.settings, job.long,
                               tiling=tiling, composite_feather=feather, regions=job.regions,
                               timeline=job.timeline, resume=resume, init_video=job.init_video)
        video = result.video
        if state is not None:
            save_job(state, job.with_run(result))
    if out is not None:
        write_video(out, to_images(video), 16)
    return video
