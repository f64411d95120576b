"""A VACE job file: everything `pipeline.generate` takes except the models, in one safetensors file.

ComfyUI's Save VACE Job node writes it (the VCUs built in the graph, the encoded prompts, the stream
strengths and the sampler settings); `python -m vace_core run --job FILE` (or torchrun with --parallel
for several GPUs) samples it outside the ComfyUI server and needs no text encoder.

Tensors: vcu.{i}.frames (3, T, H, W), vcu.{i}.masks (T, H, W), vcu.{i}.ref.{j} (3, H, W), positive and
negative (1, L, D) text features; the metadata "vace_job" holds JSON: version, kinds, streams, settings.
"""

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .errors import VaceError
from .nag import NAG
from .pipeline import SamplerSettings
from .sampling import ContextStream
from .sampling.guiders import AdaptiveProjectedGuidance, CFGZeroStar, SkipLayerGuidance
from .vcu import VCU

VERSION = 1


@dataclass
class Job:
    vcus: list[VCU]
    positive: torch.Tensor  # (1, L, D) text features
    negative: torch.Tensor | None
    streams: list[ContextStream]
    settings: SamplerSettings


GUIDES = {"nag": NAG, "slg": SkipLayerGuidance, "cfg_zero_star": CFGZeroStar, "apg": AdaptiveProjectedGuidance}


def _spec(curve) -> str | None:
    """A stream's curve as the text it was written in (None: flat)."""
    return None if curve is None else getattr(curve, "spec", curve)


def _settings_record(settings: SamplerSettings) -> dict:
    """The settings as JSON: the guidance add-ons by their constructor fields (APG's running average is per run)."""
    record = asdict(replace(settings, **dict.fromkeys(GUIDES)))
    for name, cls in GUIDES.items():
        value = getattr(settings, name)
        record[name] = None if value is None else {f.name: getattr(value, f.name) for f in fields(cls) if f.init}
    return record


def _settings_from(record: dict) -> SamplerSettings:
    guides = {name: None if record.get(name) is None else cls(**record[name]) for name, cls in GUIDES.items()}
    return SamplerSettings(**{**record, **guides})


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
    meta = {"version": VERSION, "kinds": [u.kind for u in job.vcus],
            "streams": [[*s[:3], _spec(s.curve), _spec(s.frames)] for s in map(ContextStream._make, job.streams)],
            "settings": _settings_record(job.settings)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.float().contiguous().cpu() for k, v in tensors.items()}, path,
              metadata={"vace_job": json.dumps(meta)})
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
    meta = json.loads(meta)
    if meta.get("version") != VERSION:
        raise VaceError(f"{path} is a version {meta.get('version')} VACE job; this code reads version {VERSION}")
    vcus = []
    for i, kind in enumerate(meta["kinds"]):
        refs = sorted((k for k in names if k.startswith(f"vcu.{i}.ref.")), key=lambda k: int(k.rsplit(".", 1)[1]))
        vcus.append(VCU(tensors[f"vcu.{i}.frames"], tensors[f"vcu.{i}.masks"], [tensors[k] for k in refs], kind))
    return Job(vcus, tensors["positive"], tensors.get("negative"), [ContextStream(*s) for s in meta["streams"]],
               _settings_from(meta["settings"]))


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
