"""VACE Long Video Sampler (windows that carry the video forward, keyframes, fused windows; decodes inside) and
Color Match (any IMAGE batch matched to an anchor)."""

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
from .inputs import widget
from .sampler import VaceSampler, context_streams, sampler_settings, text_features
from .speed import use_speed
from .types import CATEGORY

log = logging.getLogger("vace")


class Managed:
    """A ModelPatcher's model, loaded through ComfyUI before each use: the DiT and the VAE take turns every
    window, so ComfyUI may offload one for the other (low VRAM)."""

    def __init__(self, patcher, reserve_bytes: int = 0):
        self.patcher, self.reserve = patcher, reserve_bytes
        self.compute_dtype = getattr(patcher.model, "compute_dtype", None)

    def load(self):
        return memory.load(self.patcher, self.reserve)

    def parameters(self):
        return self.patcher.model.parameters()

    def __call__(self, *args, **kwargs):
        return self.load()(*args, **kwargs)

    def encode(self, video, tiling=None):
        return self.load().encode(video.to(mm.vae_device()), tiling=tiling)

    def decode(self, latent, tiling=None):
        return self.load().decode(latent.to(mm.vae_device()), tiling=tiling).to(mm.intermediate_device())


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
                colour_anchor=None, **streams) -> io.NodeOutput:
        units, stream_settings = context_streams(streams)
        long = LongVideoSettings(mode=mode, window=window, overlap=overlap, discard=discard, perturbation=perturbation,
                                 replace_latents=replace_latents, carry_guidance=carry_guidance, keyframes=keyframes,
                                 fused_weights=fused_weights, colour_method=colour_method,
                                 colour_strength=colour_strength, colour_anchor=colour_anchor,
                                 colour_masked=colour_masked)
        windows = 1 if mode == "fused" else len(plan_windows(units[0].length, long))
        use_speed(vace_model)
        patcher = vace_model.patcher
        window_latent = (len(units[0].references) + (min(window, units[0].length) - 1) // 4 + 1,
                         *units[0].latent_shape[1:])
        reserve = memory.sampling_bytes(patcher.model, window_latent, cfg != 1, len(units) + (carry_guidance > 0))
        memory.require(reserve, mm.get_torch_device(), f"sampling {window}-frame windows at "
                       f"{units[0].size[0]}x{units[0].size[1]}", "Use a shorter window, a smaller size, or cfg 1.")
        model = Managed(patcher, reserve + memory.swap_reserve(patcher.model, vace_model.block_swap))
        device = mm.get_torch_device()
        try:
            result = generate_long(
                model, Managed(vace_vae), units, text_features(positive, "positive", patcher.model.config.text_dim),
                text_features(negative, "negative", patcher.model.config.text_dim), stream_settings,
                sampler_settings(steps, cfg, shift, sampler, seed), long,
                progress(windows, steps, device, len(units[0].references)), "auto",
                feather if paste_kept else None, device=device)
        finally:
            if offload_after:
                memory.offload(patcher)
        if result.interrupted:
            if not result.video.shape[1]:
                raise mm.InterruptProcessingException()
            mm.interrupt_current_processing(False)  # the user gets the finished windows: the graph goes on
            log.warning("VACE long video: cancelled; returning %d frames (%d of %d windows)",
                        result.video.shape[1], result.windows_done, result.windows)
        return io.NodeOutput(to_images(result.video))


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
