"""VACE Sampler: VCUs + ComfyUI text conditioning -> a LATENT in ComfyUI's Wan 2.1 convention."""

import comfy.latent_formats
import comfy.model_management as mm
import comfy.utils
import latent_preview
import torch
from comfy_api.latest import io

from ..vace_core.errors import VaceError
from ..vace_core.pipeline import SamplerSettings, encode_contexts, sample_latent
from ..vace_core.sampling import ContextStream
from ..vace_core.vae import to_comfy_latent
from . import memory
from .preview import vcu_ui
from .types import CATEGORY, VCU, VaceModel, VaceVAE

STREAMS = 3
SOLVERS = {"unipc": "unipc", "euler": "euler", "dpm++_2m": "dpmpp_2m"}


def stream_inputs(i: int):
    suffix, optional = ("", False) if i == 1 else (f"_{i}", True)
    return [
        VCU.Input(f"vcu{suffix}", optional=optional,
                  tooltip="A VCU (from Build VCU and friends)." if i == 1 else
                  "Another VCU as its own context stream, with its own strength (e.g. pose 1.0 + reference 0.7)."),
        io.Float.Input(f"strength{suffix}", default=1.0, min=0.0, max=10.0, step=0.01, optional=optional,
                       tooltip="How strongly this VCU steers the video (context scale)."),
        io.Float.Input(f"start{suffix}", default=0.0, min=0.0, max=1.0, step=0.01, optional=optional,
                       tooltip="Fraction of the steps where this VCU starts to apply."),
        io.Float.Input(f"end{suffix}", default=1.0, min=0.0, max=1.0, step=0.01, optional=optional,
                       tooltip="Fraction of the steps where this VCU stops applying."),
    ]


def text_features(conditioning, what: str) -> torch.Tensor:
    """CONDITIONING from CLIPTextEncode with a Wan (umt5) text encoder -> (1, L, 4096)."""
    if not conditioning:
        raise VaceError(f"the {what} conditioning is empty: connect a CLIP Text Encode with a Wan text encoder")
    return conditioning[0][0]


def activation_bytes(model, latent_shape, guided: bool, streams: int) -> int:
    """A generous estimate of the peak activations of one forward pass (CFG batched)."""
    cfg = model.config
    batch = 2 if guided else 1
    tokens = latent_shape[0] * latent_shape[1] * latent_shape[2] // 4
    return batch * tokens * ((cfg.ffn_dim + 6 * cfg.dim) * 2 + (1 + streams) * cfg.dim * 4)


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
                io.Int.Input("steps", default=50, min=1, max=200, tooltip="Sampling steps (official: 50)."),
                io.Float.Input("cfg", default=5.0, min=1.0, max=30.0, step=0.1,
                               tooltip="Classifier-free guidance (official: 5). 1 skips the negative pass."),
                io.Float.Input("shift", default=16.0, min=0.1, max=100.0, step=0.1,
                               tooltip="Sigma shift (official VACE: 16). Higher spends more steps on layout."),
                io.Combo.Input("sampler", options=list(SOLVERS), default="unipc",
                               tooltip="Flow-matching solver. unipc is the official one."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Noise seed: the same seed gives the same noise on every device."),
                io.Boolean.Input("offload_after", default=False,
                                 tooltip="Move the model off the GPU when done (frees VRAM for decoding)."),
            ],
            outputs=[io.Latent.Output(display_name="latent")],
        )

    @classmethod
    def execute(cls, vace_model, vace_vae, positive, negative, steps, cfg, shift, sampler, seed, offload_after,
                **streams) -> io.NodeOutput:
        units, settings_per_stream = [], []
        for i in range(1, STREAMS + 1):
            suffix = "" if i == 1 else f"_{i}"
            if streams.get(f"vcu{suffix}") is not None:
                units.append(streams[f"vcu{suffix}"])
                # streams 2 and 3 are optional (API prompts may leave their settings out): ContextStream's defaults
                given = {k: streams[f"{k}{suffix}"] for k in ("strength", "start", "end") if f"{k}{suffix}" in streams}
                settings_per_stream.append(ContextStream(**given))
        vae = memory.load(vace_vae)
        device = mm.get_torch_device()
        contexts = encode_contexts(units, lambda v: vae.encode(v.to(device), tiling="auto"))
        settings = SamplerSettings(steps, cfg, shift, SOLVERS[sampler], "wan", seed)
        patcher = vace_model.patcher
        reserve = activation_bytes(patcher.model, contexts[0].shape[2:],
                                   cfg != 1, len(units))
        model = memory.load(patcher, reserve + memory.swap_reserve(patcher.model, vace_model.block_swap))
        hooks = interrupt_hooks(model)
        try:
            latent = sample_latent(model, contexts, text_features(positive, "positive"),
                                   text_features(negative, "negative"), settings_per_stream, settings,
                                   progress(steps, device, len(units[0].references)), device)
        finally:
            for hook in hooks:
                hook.remove()
            if offload_after:
                memory.offload(patcher)
        latent = latent[:, :, len(units[0].references):]
        return io.NodeOutput({"samples": to_comfy_latent(latent).to(mm.intermediate_device())}, ui=vcu_ui(*units))


NODES = [VaceSampler]
