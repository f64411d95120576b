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

from ..vace_core.colour import METHODS, ColourAnchor, match_colours
from ..vace_core.errors import VaceError
from ..vace_core.long_video import FUSED_WEIGHTS, MODES, LongVideoSettings, generate_long, plan_windows
from ..vace_core.pipeline import SamplerSettings
from ..vace_core.vcu import fit_to, to_images
from . import memory
from .experts import two_experts
from .sampler import SOLVERS, VaceSampler, context_streams, guidance_settings, text_features
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


METHOD_TOOLTIP = ("Colour matching, per frame: reinhard matches LAB mean/std; mkl matches the full RGB colour "
                  "covariance (KJNodes' mkl) and removes tints that mix channels better.")
LONG_INPUTS = [
    io.Combo.Input("mode", options=list(MODES), default="autoregressive",
                   tooltip="autoregressive: each window continues from the last frames of the one before (best "
                           "continuity). hierarchical: sparse keyframes over the whole video first, then each gap "
                           "interpolated between two keyframes (no accumulated drift; motion between keyframes "
                           "must be inferable). fused: overlapping windows denoised together and blended every "
                           "step (no carried frames; for comparison, softer seams but less coherent)."),
    io.Int.Input("window", default=81, min=5, max=257, step=4,
                 tooltip="Frames per window (4n+1). 81 is what VACE was trained on; shorter windows need less "
                         "memory but carry the video forward more often (more seams, more drift)."),
    io.Int.Input("overlap", default=5, min=1, max=255,
                 tooltip="Frames each window takes over from the one before, kept as given (mask 0). 5 (two "
                         "latent frames) carries motion; more gives smoother seams but fewer new frames per "
                         "window. fused mode: the overlap of the blended windows (17 blends well)."),
    io.Int.Input("discard", default=0, min=0, max=64,
                 tooltip="Frames dropped from the end of each window but the last (a window's last frames are its "
                         "weakest); the next window starts earlier instead."),
    io.Float.Input("perturbation", default=0.02, min=0.0, max=1.0, step=0.005,
                   tooltip="Noise level mixed into the carried frames' context (LVDM conditional latent "
                           "perturbation): makes each window tolerant of small errors in the frames it continues "
                           "from, so errors compound less. 0.02 as Wan2GP; 0 = off; above 0.1 loosens continuity."),
    io.Boolean.Input("replace_latents", default=False,
                     tooltip="At every step the model sees the carried frames' latents re-noised to the current "
                             "level (latent replacement): a firmer grip on the carried frames, fewer seams."),
    io.Float.Input("carry_guidance", default=0.0, min=0.0, max=10.0, step=0.1,
                   tooltip="LVDM unconditional guidance: pushes each window away from what it would make without "
                           "the carried frames (v + w (v_carried - v_without)); fights slow degradation. One more "
                           "model pass per step; 0 = off, 0.5-2 to try."),
    io.Int.Input("keyframes", default=0, min=0, max=257, step=4,
                 tooltip="hierarchical: keyframes in the first pass (4n+1, at most the window). 0 = as few as keep "
                         "each gap within a window; more keyframes follow fast motion better."),
    io.Combo.Input("fused_weights", options=list(FUSED_WEIGHTS), default="linear",
                   tooltip="fused: how overlapping windows blend: linear ramps across the overlaps, or pyramids."),
    io.Combo.Input("colour_method", options=list(METHODS), default="reinhard", tooltip=METHOD_TOOLTIP),
    io.Float.Input("colour_strength", default=1.0, min=0.0, max=1.0, step=0.05,
                   tooltip="How fully each window's colours are matched to the anchor (0 = off). Removes colour and "
                           "exposure drift between windows; lower it when the scene's colours really change."),
    io.Image.Input("colour_anchor", optional=True,
                   tooltip="The fixed colour anchor (e.g. a reference image or the clip you extend). Default: the "
                           "first window. Never the previous window, which would let drift accumulate."),
    io.Boolean.Input("colour_masked", default=False,
                     tooltip="Take colour statistics and make changes only where the VCU generates (mask white)."),
    io.Boolean.Input("paste_kept", default=False,
                     tooltip="Paste the VCU's kept pixels (mask black) back over each window (editing tasks)."),
    io.Int.Input("feather", default=8, min=0, max=256,
                 tooltip="Soft edge in pixels where pasted pixels blend into generated ones."),
]


class VaceLongVideoSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VACELongVideoSampler", display_name="VACE Long Video Sampler", category=CATEGORY,
            description="Any VCU longer than one window (e.g. 241 frames) as windows that carry the video "
                        "forward, keyframes + interpolation, or fused windows; decodes each window (windows need "
                        "decoded frames) and outputs the whole video as IMAGE. Cancel returns the finished windows.",
            inputs=[*(i for i in VaceSampler.define_schema().inputs if i.id != "latent"), *LONG_INPUTS,
                    io.Image.Input("init_images", optional=True,
                                   tooltip="Video-to-video: the video to refine (the VCU's size and length), used "
                                           "when denoise is below 1; each window refines its own frames of it.")],
            outputs=[io.Image.Output(display_name="images")],
        )

    @classmethod
    def execute(cls, vace_model, vace_vae, positive, negative, steps, cfg, shift, sampler, seed, offload_after,
                mode, window, overlap, discard, perturbation, replace_latents, carry_guidance, keyframes,
                fused_weights, colour_method, colour_strength, colour_masked, paste_kept, feather,
                colour_anchor=None, regions=None, step_cache=None, low_noise_expert=None, guidance=None, denoise=1.0,
                init_images=None, **streams) -> io.NodeOutput:
        units, stream_settings = context_streams(streams)
        long = LongVideoSettings(window=window, overlap=overlap, discard=discard, mode=mode, perturbation=perturbation,
                                 replace_latents=replace_latents, carry_guidance=carry_guidance, keyframes=keyframes,
                                 fused_weights=fused_weights, colour_method=colour_method,
                                 colour_strength=colour_strength, colour_anchor=colour_anchor,
                                 colour_masked=colour_masked)
        windows = 1 if mode == "fused" else len(plan_windows(units[0].length, long))
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
        settings = SamplerSettings(steps=steps, guidance=cfg, shift=shift, solver=SOLVERS[sampler], seed=seed,
                                   step_cache=step_cache, **guidance_settings(guidance, denoise))
        if denoise <= 0.9999 and init_images is None:
            raise VaceError(f"denoise {denoise} refines a video: connect init_images (the video at the VCU's size "
                            "and length), or set denoise to 1")
        init = None if init_images is None or denoise > 0.9999 else fit_to(init_images, units[0])
        width = patcher.model.config.text_dim
        try:
            result = generate_long(
                model, memory.ManagedVAE(vace_vae), units, text_features(positive, "positive", width),
                text_features(negative, "negative", width), stream_settings, settings, long,
                progress(windows, steps, device, len(units[0].references)), "auto",
                feather if paste_kept else None, device=device, regions=regions, init_video=init)
        finally:
            if offload_after:
                for loaded in [vace_model] + ([low_noise_expert.model] if low_noise_expert is not None else []):
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
                io.Combo.Input("method", options=list(METHODS), default="reinhard", tooltip=METHOD_TOOLTIP),
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
