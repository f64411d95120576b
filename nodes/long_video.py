"""VACE Long Video Sampler (windows that carry the video forward, keyframes, fused windows; decodes inside) and
Color Match (any IMAGE batch matched to an anchor)."""

import dataclasses
import logging
import os

import comfy.latent_formats
import comfy.model_management as mm
import comfy.utils
import folder_paths
import latent_preview
from comfy_api.latest import io
from comfy_execution.utils import get_executing_context

from ..vace_core.colour import METHOD_HELP, METHODS, ColourAnchor, match_colours
from ..vace_core.errors import VaceError
from ..vace_core.job import Job, load_job, save_job
from ..vace_core.long_video import LATER, LongVideoSettings, generate_long, plan_windows
from ..vace_core.pipeline import FEATHER
from ..vace_core.settings import knobs
from ..vace_core.vcu import fit_to, to_images
from . import memory
from .experts import loaded_models, two_experts
from .inputs import widget
from .sampler import (
    VaceSampler,
    context_streams,
    guidance_settings,
    reference_settings,
    sampler_settings,
    text_features,
)
from .speed import use_speed
from .types import CATEGORY, TimelineType

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
ANCHOR = ("anchor_guidance", "anchor_end", "anchor_source")  # optional, after feather (workflows saved before them)
LONG_INPUTS = [
    *(widget(spec) for name, spec in LONG.items() if name != "colour_masked" and name not in ANCHOR),
    io.Image.Input("colour_anchor", optional=True,
                   tooltip="The fixed colour anchor (e.g. a reference image or the clip you extend). Default: the "
                           "first window. Never the previous window, which would let drift accumulate."),
    widget(LONG["colour_masked"]),
    io.Boolean.Input("paste_kept", default=False,
                     tooltip="Paste the VCU's kept pixels (mask black) back over each window (editing tasks)."),
    widget(FEATHER),
    *(widget(LONG[name], optional=True) for name in ANCHOR),
    TimelineType.Input("timeline", optional=True,
                       tooltip="From VACE Timeline: a prompt, reference, end frame and seed per window, or a loop "
                               "(autoregressive / hierarchical)."),
    io.Boolean.Input("save_state", default=False, optional=True,
                     tooltip="Save the run's state (VCU, prompts, settings, each window's seed and frames) to "
                             "output/vace_jobs/, to re-render one window later (here, or python -m vace_core run "
                             "--job FILE --rerender N)."),
    io.String.Input("rerender_from", default="", optional=True,
                    tooltip="A saved state under the output folder (e.g. vace_jobs/long_state_00001_.safetensors): "
                            "re-render only rerender_window with this graph's settings (change the seed or the "
                            "timeline's prompt), reusing every other window's frames. Empty: a full run."),
    io.Int.Input("rerender_window", default=0, min=0, max=255, optional=True,
                 tooltip="With rerender_from: the window to sample again (0 = the first)."),
    io.Combo.Input("later_windows", options=list(LATER), default="keep", optional=True,
                   tooltip="With rerender_from: keep the windows after it (the seam re-blended over the carried "
                           "frames) or regenerate them."),
]


def saved_state(name: str):
    """A state file under ComfyUI's output folder -> its Job (only files inside the output folder)."""
    root = os.path.realpath(folder_paths.get_output_directory())
    path = os.path.realpath(os.path.join(root, name.strip()))
    if os.path.commonpath([root, path]) != root or not os.path.isfile(path):
        raise VaceError(f"rerender_from {name!r} is not a file in the output folder: give the saved state's path "
                        "relative to it (e.g. vace_jobs/long_state_00001_.safetensors)")
    return load_job(path)


def write_state(job: Job) -> str:
    """Saves a run's state to output/vace_jobs/long_state_NNNNN_.safetensors -> its path under the output folder."""
    root = folder_paths.get_output_directory()
    folder, name, counter, subfolder, _ = folder_paths.get_save_image_path("vace_jobs/long_state", root)
    filename = f"{name}_{counter:05}_.safetensors"
    save_job(os.path.join(folder, filename), job)
    return os.path.join(subfolder, filename)


class VaceLongVideoSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VACELongVideoSampler", display_name="VACE Long Video Sampler", category=CATEGORY,
            description="Any VCU longer than one window (e.g. 241 frames) as windows that carry the video "
                        "forward, keyframes + interpolation, or fused windows; decodes each window (windows need "
                        "decoded frames) and outputs the whole video as IMAGE. Regions, a step cache and the Wan2.2 "
                        "low-noise expert work as in the VACE Sampler, in every window. Cancel returns the finished "
                        "windows.",
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
                colour_anchor=None, regions=None, step_cache=None, low_noise_expert=None, timeline=None,
                save_state=False, rerender_from="", rerender_window=0, later_windows="keep", anchor_guidance=0.0,
                anchor_end=0.3, anchor_source="first", guidance=None, denoise=1.0, init_images=None,
                **streams) -> io.NodeOutput:
        options = reference_settings(streams)
        units, stream_settings = context_streams(streams)
        long = LongVideoSettings(mode=mode, window=window, overlap=overlap, discard=discard, perturbation=perturbation,
                                 replace_latents=replace_latents, carry_guidance=carry_guidance, keyframes=keyframes,
                                 fused_weights=fused_weights, colour_method=colour_method,
                                 colour_strength=colour_strength, colour_anchor=colour_anchor,
                                 colour_masked=colour_masked, anchor_guidance=anchor_guidance,
                                 anchor_end=anchor_end, anchor_source=anchor_source)
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
        settings = sampler_settings(steps, cfg, shift, sampler, seed, step_cache, **options,
                                    **guidance_settings(guidance, denoise))
        if denoise <= 0.9999 and init_images is None:
            raise VaceError(f"denoise {denoise} refines a video: connect init_images (the video at the VCU's size "
                            "and length), or set denoise to 1")
        init = None if init_images is None or denoise > 0.9999 else fit_to(init_images, units[0])
        width = patcher.model.config.text_dim
        job = Job(units, text_features(positive, "positive", width).cpu(),
                  text_features(negative, "negative", width).cpu(), stream_settings, settings, long, timeline)
        resume = saved_state(rerender_from).resume(rerender_window, later_windows) if rerender_from.strip() else None
        try:
            result = generate_long(
                model, memory.ManagedVAE(vace_vae), units, job.positive, job.negative, stream_settings, settings, long,
                progress(windows, steps, device, len(units[0].references)), "auto",
                feather if paste_kept else None, device=device, regions=regions, timeline=timeline, resume=resume,
                init_video=init)
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
        texts = [] if result.cache_stats is None else [str(result.cache_stats)]
        if save_state and not result.interrupted:
            path = write_state(job.with_run(result))
            log.info("VACE long video: state saved to %s", path)
            texts.append(f"state: {path}")
        return io.NodeOutput(to_images(result.video), ui={"text": texts} if texts else {})


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
