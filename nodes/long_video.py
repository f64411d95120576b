"""VACE Long Video Sampler (windows that carry the video forward, keyframes, fused windows; decodes inside) and
Color Match (any IMAGE batch matched to an anchor)."""

import dataclasses
import logging

import comfy.latent_formats
import comfy.model_management as mm
import comfy.utils
import latent_preview
from comfy_api.latest import io
from comfy_execution.utils import get_executing_context

from ..vace_core.colour import METHOD_HELP, METHODS, ColourAnchor, match_colours
from ..vace_core.long_video import LongVideoSettings, generate_long, plan_windows
from ..vace_core.pipeline import FEATHER
from ..vace_core.settings import knobs
from ..vace_core.vcu import to_images
from . import memory
from .experts import loaded_models, two_experts
from .inputs import widget
from .sampler import VaceSampler, context_streams, sampler_settings, text_features
from .speed import use_speed
from .types import CATEGORY

log = logging.getLogger("vace")


def progress(windows: int, steps: int, device, references: int):
    """Window i of n, step j of m, with previews. An interrupt ends the run after the current step, keeping
    the finished windows (returning False stops vace_core's loop cleanly)."""
    from server import PromptServer  # ComfyUI's server (and its frontend) only while a prompt runs

    context = get_executing_context()
    node_id = context.node_id if context is not None else None
    bar = comfy.utils.ProgressBar(windows * steps, node_id=node_id)
    previewer = latent_preview.get_previewer(device, comfy.latent_formats.Wan21())

    def callback(window, windows, step, total, x, x0):
        if mm.processing_interrupted():
            return False
        if step == 1 and node_id is not None:
            PromptServer.instance.send_progress_text(f"window {window + 1} of {windows}", node_id)
        image = previewer.decode_latent_to_preview_image("JPEG", x0[:, :, references:]) if previewer else None
        bar.update_absolute(window * total + step, windows * total, image)
    return callback


LONG = knobs(LongVideoSettings)
LONG_INPUTS = [
    *(widget(spec) for name, spec in LONG.items() if name != "colour_masked"),
    io.Image.Input("colour_anchor", optional=True,
                   tooltip="The fixed colour anchor (e.g. a reference image or the clip you extend). Default: the "
                           "first window. Never the previous window, which would let drift accumulate."),
    widget(LONG["colour_masked"]),
    io.Boolean.Input("paste_kept", default=False,
                     tooltip="Paste the VCU's kept pixels (mask black) back over each window (editing tasks)."),
    widget(FEATHER),
]


class VaceLongVideoSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VACELongVideoSampler", display_name="VACE Long Video Sampler", category=CATEGORY,
            description="Any VCU longer than one window (e.g. 241 frames) as windows that carry the video "
                        "forward, keyframes + interpolation, or fused windows; decodes each window (windows need "
                        "decoded frames) and outputs the whole video as IMAGE. Cancel returns the finished windows.",
            inputs=[*VaceSampler.define_schema().inputs, *LONG_INPUTS],
            outputs=[io.Image.Output(display_name="images")],
        )

    @classmethod
    def execute(cls, vace_model, vace_vae, positive, negative, steps, cfg, shift, sampler, seed, offload_after,
                mode, window, overlap, discard, perturbation, replace_latents, carry_guidance, keyframes,
                fused_weights, colour_method, colour_strength, colour_masked, paste_kept, feather,
                colour_anchor=None, regions=None, step_cache=None, low_noise_expert=None, **streams) -> io.NodeOutput:
        units, stream_settings = context_streams(streams)
        long = LongVideoSettings(mode=mode, window=window, overlap=overlap, discard=discard, perturbation=perturbation,
                                 replace_latents=replace_latents, carry_guidance=carry_guidance, keyframes=keyframes,
                                 fused_weights=fused_weights, colour_method=colour_method,
                                 colour_strength=colour_strength, colour_anchor=colour_anchor,
                                 colour_masked=colour_masked)
        windows = 1 if mode == "fused" else len(plan_windows(units[0].length, long))
        use_speed(*loaded_models(vace_model, low_noise_expert))
        patcher = vace_model.patcher
        window_latent = (len(units[0].references) + (min(window, units[0].length) - 1) // 4 + 1,
                         *units[0].latent_shape[1:])
        guided = cfg != 1 or (low_noise_expert is not None and low_noise_expert.cfg != 1)
        reserve = memory.sampling_bytes(patcher.model, window_latent, guided, len(units) + (carry_guidance > 0))
        device = mm.get_torch_device()
        memory.require(reserve, device, f"sampling {window}-frame windows at {units[0].size[0]}x{units[0].size[1]}",
                       "Use a shorter window, a smaller size, or cfg 1.")
        model = memory.Managed(patcher, reserve + memory.swap_reserve(patcher.model, vace_model.block_swap)) \
            if low_noise_expert is None else two_experts(vace_model, low_noise_expert, reserve)
        step_cache = dataclasses.replace(step_cache) if step_cache is not None else None  # this run's own cache
        settings = sampler_settings(steps, cfg, shift, sampler, seed, step_cache)
        width = patcher.model.config.text_dim
        try:
            result = generate_long(
                model, memory.ManagedVAE(vace_vae), units, text_features(positive, "positive", width),
                text_features(negative, "negative", width), stream_settings, settings, long,
                progress(windows, steps, device, len(units[0].references)), "auto",
                feather if paste_kept else None, device=device, regions=regions)
        finally:
            if offload_after:
                for loaded in loaded_models(vace_model, low_noise_expert):
                    memory.offload(loaded.patcher)
        if result.interrupted:
            if not result.video.shape[1]:
                raise mm.InterruptProcessingException()
            mm.interrupt_current_processing(False)  # the user gets the finished windows: the graph goes on
            log.warning("VACE long video: cancelled; returning %d frames (%d of %d windows)",
                        result.video.shape[1], result.windows_done, result.windows)
        ui = {} if result.cache_stats is None else {"text": [str(result.cache_stats)]}
        return io.NodeOutput(to_images(result.video), ui=ui)


class ColorMatch(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VACEColorMatch", display_name="Color Match", category=CATEGORY,
            description="Matches every frame's colours to a fixed anchor image (or batch): removes colour and "
                        "exposure drift from long or extended videos. Works on any IMAGE batch.",
            inputs=[
                io.Image.Input("images", tooltip="The frames to correct."),
                io.Image.Input("anchor", tooltip="The colours to match: a reference image, or the first frames of "
                                                 "the video (every pixel of the batch counts)."),
                io.Combo.Input("method", options=list(METHODS), default="reinhard", tooltip=METHOD_HELP),
                io.Float.Input("strength", default=1.0, min=0.0, max=1.0, step=0.05,
                               tooltip="0 = unchanged, 1 = fully matched. Lower it when the scene's colours "
                                       "really change (matching would undo that too)."),
                io.Mask.Input("masks", optional=True,
                              tooltip="Only where the mask is white: statistics and changes (e.g. the generated "
                                      "area of an inpainting), the rest stays exactly as it is."),
            ],
            outputs=[io.Image.Output(display_name="images")],
        )

    @classmethod
    def execute(cls, images, anchor, method, strength, masks=None) -> io.NodeOutput:
        return io.NodeOutput(match_colours(images, ColourAnchor.from_images(anchor), method, strength, masks))


NODES = [VaceLongVideoSampler, ColorMatch]
