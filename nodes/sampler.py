"""VACE Sampler: VCUs + ComfyUI text conditioning -> a LATENT in ComfyUI's Wan 2.1 convention."""

import dataclasses

import comfy.latent_formats
import comfy.model_management as mm
import comfy.utils
import latent_preview
import torch
from comfy_api.latest import io

from ..vace_core.errors import VaceError
from ..vace_core.lora.region import TokenSpace
from ..vace_core.pipeline import SamplerSettings, encode_contexts, sample_latent
from ..vace_core.sampling import ContextStream, parse_curve
from ..vace_core.sampling.guidance import CURVE_KNOBS, STREAM_KNOBS
from ..vace_core.settings import knobs
from ..vace_core.vae import from_comfy_latent, to_comfy_latent
from . import memory
from .experts import loaded_models, two_experts
from .inputs import widget
from .preview import vcu_ui
from .speed import use_speed
from .types import CATEGORY, VCU, Guidance, LowNoiseExpert, RegionsType, StepCache, VaceModel, VaceVAE

STREAMS = 3
SOLVERS = {"unipc": "unipc", "euler": "euler", "dpm++_2m": "dpmpp_2m", "lcm": "lcm"}  # ComfyUI's names -> ours
SETTINGS = knobs(SamplerSettings)


def stream_inputs(i: int):
    suffix, optional = ("", False) if i == 1 else (f"_{i}", True)
    return [
        VCU.Input(f"vcu{suffix}", optional=optional,
                  tooltip="A VCU (from Build VCU and friends)." if i == 1 else
                  "Another VCU as its own context stream, with its own strength (e.g. pose 1.0 + reference 0.7)."),
        *[widget(spec, f"{name}{suffix}", optional=optional) for name, spec in STREAM_KNOBS.items()],
        *[widget(spec, f"{name}{suffix}", optional=True) for name, spec in CURVE_KNOBS.items()],
    ]


def sampling_inputs():
    """steps, cfg, shift, sampler, seed: SamplerSettings' knobs."""
    return [
        widget(SETTINGS["steps"]),
        widget(SETTINGS["guidance"], "cfg"),
        widget(SETTINGS["shift"]),
        widget(SETTINGS["solver"], "sampler", labels=SOLVERS),
        widget(SETTINGS["seed"], control_after_generate=True),
    ]


def sampler_settings(steps, cfg, shift, sampler, seed, step_cache=None, **options) -> SamplerSettings:
    """The sampling_inputs' values (and further SamplerSettings fields in `options`) -> SamplerSettings."""
    return SamplerSettings(steps=steps, guidance=cfg, shift=shift, solver=SOLVERS[sampler], seed=seed,
                           step_cache=step_cache, **options)


def context_streams(streams: dict) -> tuple[list, list[ContextStream]]:
    """The stream inputs (vcu, strength, start, end; _2 and _3 suffixed) -> (VCUs, their ContextStreams)."""
    units, settings_per_stream = [], []
    for i in range(1, STREAMS + 1):
        suffix = "" if i == 1 else f"_{i}"
        if streams.get(f"vcu{suffix}") is not None:
            units.append(streams[f"vcu{suffix}"])
            # streams 2 and 3 are optional (API prompts may leave their settings out): ContextStream's defaults
            given = {k: streams[f"{k}{suffix}"] for k in ("strength", "start", "end") if f"{k}{suffix}" in streams}
            curves = {k: parse_curve(streams.get(f"{name}{suffix}")) for k, name in (("curve", "curve"),
                                                                                    ("frames", "frame_weights"))}
            settings_per_stream.append(ContextStream(**given, **curves))
    return units, settings_per_stream


def text_features(conditioning, what: str, width: int) -> torch.Tensor:
    """CONDITIONING from CLIPTextEncode with a Wan (umt5) text encoder -> (1, L, 4096)."""
    if not conditioning:
        raise VaceError(f"the {what} conditioning is empty: connect a CLIP Text Encode with a Wan text encoder")
    features = conditioning[0][0]
    if features.ndim != 3 or features.shape[-1] != width:
        raise VaceError(f"the {what} conditioning is {tuple(features.shape)}: VACE needs umt5-xxl features "
                        f"(1, tokens, {width}). Load the text encoder with Load CLIP, type wan "
                        "(umt5_xxl_fp8_e4m3fn_scaled.safetensors), not another model's CLIP.")
    return features


GUIDANCE_INPUTS = [
    Guidance.Input("guidance", optional=True,
                   tooltip="From VACE Guidance: NAG (negative prompt at cfg 1), skip-layer guidance, CFG-Zero*, APG."),
    # optional: graphs and workflows saved without it validate (1: from noise)
    widget(SETTINGS["denoise"], optional=True),
]


def guidance_settings(guidance, denoise: float) -> dict:
    """SamplerSettings fields from the VACE Guidance node's options and the denoise input."""
    return {**(guidance.settings() if guidance is not None else {}), "denoise": denoise}


def init_latent(latent, denoise: float, unit):
    """The LATENT to refine (ComfyUI's Wan 2.1 convention) -> ours, or None for a whole run."""
    if denoise > 0.9999:
        return None
    if latent is None:
        raise VaceError(f"denoise {denoise} refines a video: connect its latent (VAE Encode of the video at "
                        f"{unit.size[1]}x{unit.size[0]}, {unit.length} frames), or set denoise to 1")
    return from_comfy_latent(latent["samples"].float())


def interrupt_hooks(model):
    """Checks ComfyUI's interrupt before every block, so Cancel stops within a step."""
    def check(*_):
        mm.throw_exception_if_processing_interrupted()
    return [block.register_forward_pre_hook(check) for block in [*model.blocks, *model.vace_blocks]]


def progress(steps: int, device, references: int):
    bar = comfy.utils.ProgressBar(steps)
    previewer = latent_preview.get_previewer(device, comfy.latent_formats.Wan21())

    def callback(step, total, x, x0):
        image = previewer.decode_latent_to_preview_image("JPEG", x0[:, :, references:]) if previewer else None
        bar.update_absolute(step, total, image)  # also raises on interrupt
    return callback


REFERENCE = ("reference_weight", "reference_decay")
# optional: API prompts and workflows saved before them keep today's attention
REFERENCE_INPUTS = [widget(knobs(SamplerSettings)[name], optional=True) for name in REFERENCE]


def reference_settings(options: dict) -> dict:
    """The reference leak inputs (absent from older API prompts: today's attention) as SamplerSettings fields."""
    return {k: float(options.pop(k, knobs(SamplerSettings)[k].default)) for k in REFERENCE}


class VaceSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VACESampler", display_name="VACE Sampler", category=CATEGORY,
            description="Generates the video latent for one or more VCUs. Output LATENT works with VACE Decode "
                        "and with the native VAE Decode (reference frames are already removed).",
            inputs=[
                VaceModel.Input("vace_model", tooltip="From Load VACE Model."),
                VaceVAE.Input("vace_vae", tooltip="From Load VACE VAE: encodes the VCUs."),
                io.Conditioning.Input("positive", tooltip="CLIP Text Encode with a Wan umt5 text encoder "
                                                          "(Load CLIP, type wan)."),
                io.Conditioning.Input("negative", tooltip="The negative prompt (Wan's default one works well)."),
                *[inp for i in range(1, STREAMS + 1) for inp in stream_inputs(i)],
                *sampling_inputs(),
                io.Boolean.Input("offload_after", default=False,
                                 tooltip="Move the model off the GPU when done (frees VRAM for decoding)."),
                RegionsType.Input("regions", optional=True,
                                  tooltip="From Regional Prompts: a prompt per masked region. Its `positive` output "
                                          "must be this sampler's positive."),
                StepCache.Input("step_cache", optional=True,
                                tooltip="From a VACE Step Cache node (TeaCache, MagCache or EasyCache): skip the "
                                        "work of near-redundant steps (faster)."),
                LowNoiseExpert.Input("low_noise_expert", optional=True,
                                     tooltip="Wan2.2-VACE-Fun: the low-noise expert (vace_model is then the "
                                             "high-noise one, and cfg its guidance)."),
                *REFERENCE_INPUTS,
                *GUIDANCE_INPUTS,
                io.Latent.Input("latent", optional=True,
                                tooltip="Video-to-video: the latent to refine (VAE Encode of a video at the VCU's "
                                        "size and length). Used when denoise is below 1."),
            ],
            outputs=[io.Latent.Output(display_name="latent")],
        )

    @classmethod
    def execute(cls, vace_model, vace_vae, positive, negative, steps, cfg, shift, sampler, seed, offload_after,
                regions=None, step_cache=None, low_noise_expert=None, guidance=None, denoise=1.0, latent=None,
                **streams) -> io.NodeOutput:
        options = reference_settings(streams)
        units, settings_per_stream = context_streams(streams)
        experts = loaded_models(vace_model, low_noise_expert)
        use_speed(*experts)
        patcher = vace_model.patcher
        texts = [text_features(c, what, patcher.model.config.text_dim)
                 for c, what in ((positive, "positive"), (negative, "negative"))]
        device = mm.get_torch_device()
        guided = cfg != 1 or (low_noise_expert is not None and low_noise_expert.cfg != 1)
        reserve = memory.sampling_bytes(patcher.model, units[0].latent_shape, guided, len(units))
        memory.require(reserve, device, f"sampling {units[0].length} frames at {units[0].size[0]}x{units[0].size[1]}",
                       "Use fewer frames (or long-video windows), a smaller size, or cfg 1 (halves the batch).")
        vae = memory.load(vace_vae)
        contexts = encode_contexts(units, lambda v: vae.encode(v.to(device), tiling="auto"))
        step_cache = dataclasses.replace(step_cache) if step_cache is not None else None  # this run's own cache
        settings = sampler_settings(steps, cfg, shift, sampler, seed, step_cache, **options,
                                    **guidance_settings(guidance, denoise))
        init = init_latent(latent, denoise, units[0])

        model = memory.load(patcher, reserve + memory.swap_reserve(patcher.model, vace_model.block_swap)) \
            if low_noise_expert is None else two_experts(vace_model, low_noise_expert, reserve)
        hooks = [h for e in experts for h in interrupt_hooks(e.patcher.model)]
        try:
            latent = sample_latent(model, contexts, *texts, settings_per_stream, settings,
                                   progress(steps, device, len(units[0].references)), device,
                                   regions=regions.for_vcu(units[0]) if regions is not None else None,
                                   space=TokenSpace.for_vcu(units[0], region_masks=getattr(regions, "masks", None)),
                                   init_latent=init)
        finally:
            for hook in hooks:
                hook.remove()
            if offload_after:
                for e in experts:
                    memory.offload(e.patcher)
        latent = latent[:, :, len(units[0].references):]
        ui = vcu_ui(*units) | ({} if step_cache is None else {"text": [str(step_cache.stats)]})
        return io.NodeOutput({"samples": to_comfy_latent(latent).to(mm.intermediate_device())}, ui=ui)


NODES = [VaceSampler]
