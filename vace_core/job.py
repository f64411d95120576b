"""A VACE job file: everything `pipeline.generate` takes except the models, in one safetensors file.

ComfyUI's Save VACE Job node writes it (the VCUs built in the graph, the encoded prompts, the stream
strengths and the sampler settings); `python -m vace_core run --job FILE` (or torchrun with --parallel
for several GPUs) samples it outside the ComfyUI server and needs no text encoder.

Tensors: vcu.{i}.frames (3, T, H, W), vcu.{i}.masks (T, H, W), vcu.{i}.ref.{j} (3, H, W), positive and
negative (1, L, D) text features; the metadata "vace_job" holds JSON: version, kinds, streams, settings.
"""

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from .errors import VaceError
from .outputs import atomic_output, save_safetensors
from .pipeline import SamplerSettings
from .sampling import ContextStream
from .vcu import VCU

VERSION = 1


@dataclass
class Job:
    vcus: list[VCU]
    positive: torch.Tensor  # (1, L, D) text features
    negative: torch.Tensor | None
    streams: list[ContextStream]
    settings: SamplerSettings


def save_job(path, job: Job) -> Path:
    """Writes the job (float32 pixels and features); returns the path."""
    if len(job.vcus) != len(job.streams) or not job.vcus:
        raise VaceError(f"a job needs at least one VCU and one stream setting per VCU (got {len(job.vcus)} VCUs, "
                        f"{len(job.streams)} stream settings)")
    tensors = {"positive": job.positive}
    if job.negative is not None:
        tensors["negative"] = job.negative
    for i, unit in enumerate(job.vcus):
        tensors |= {f"vcu.{i}.frames": unit.frames, f"vcu.{i}.masks": unit.masks}
        tensors |= {f"vcu.{i}.ref.{j}": ref for j, ref in enumerate(unit.references)}
    meta = {"version": VERSION, "kinds": [u.kind for u in job.vcus], "streams": [list(s) for s in job.streams],
            "settings": asdict(job.settings)}
    path = Path(path)
    with atomic_output(path) as temp:  # whole or not at all
        save_safetensors({k: v.float().contiguous().cpu() for k, v in tensors.items()}, temp,
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
    if not isinstance(meta, dict) or meta.get("version") != VERSION:
        version = meta.get("version") if isinstance(meta, dict) else None
        raise VaceError(f"{path} is a version {version} VACE job; this code reads version {VERSION}")
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
        raise VaceError(f"{path}: its streams {meta['streams']!r} are not (strength, start, end) per VCU: save the "
                        "job again with the Save VACE Job node") from None
    settings = SamplerSettings(**meta["settings"])
    settings.check()  # the sampler's ranges, as the node and the command line hold them
    return Job(vcus, positive, negative, streams, settings)


def run_job(job: Job, model, vae, out: str | None, feather: int | None = None, tiling=None) -> torch.Tensor:
    """Samples the job and writes the video at 16 fps (unless `out` is None: the other ranks of a
    multi-process run); returns the video (3, T, H, W) in [-1, 1]."""
    from .pipeline import generate
    from .vcu import to_images
    from .video_io import write_video

    if job.positive.shape[-1] != model.config.text_dim:
        raise VaceError(f"the job's prompts are {job.positive.shape[-1]}-wide text features but the model reads "
                        f"{model.config.text_dim}: save the job with the text encoder of this model (umt5-xxl: 4096)")
    video = generate(model, vae, job.vcus, job.positive, job.negative, job.streams, job.settings, tiling=tiling,
                     composite_feather=feather)
    if out is not None:
        write_video(out, to_images(video), 16)
    return video
