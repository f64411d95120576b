"""Save VACE Job: the graph's VCUs, encoded prompts, strengths and sampler settings in one file, for a
multi-GPU run outside the server (`torchrun --nproc-per-node N -m vace_core run --job FILE --parallel usp`)."""

import os

import folder_paths
from comfy_api.latest import io, ui

from ..vace_core.config import VACE_14B
from ..vace_core.errors import VaceError
from ..vace_core.job import Job, save_job
from ..vace_core.vcu import fit_to
from .regional import REGIONAL
from .sampler import (
    VaceSampler,
    context_streams,
    guidance_settings,
    reference_settings,
    sampler_settings,
    text_features,
)
from .types import CATEGORY

# the sampler's own inputs (same names, defaults and tooltips), less the models and what only a live run needs
STREAM_INPUTS = ["vcu", "strength", "start", "end", "curve", "frame_weights"]
SAMPLER_INPUTS = ["positive", "negative",
                  *(f"{name}{suffix}" for suffix in ("", "_2", "_3") for name in STREAM_INPUTS),
                  "steps", "cfg", "shift", "sampler", "seed", "reference_weight", "reference_decay", "guidance",
                  "denoise", "regions"]


class SaveVaceJob(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        sampler = {i.id: i for i in VaceSampler.define_schema().inputs}
        return io.Schema(
            node_id="VACESaveJob", display_name="Save VACE Job", category=CATEGORY, is_output_node=True,
            description="Saves what the VACE Sampler would sample (VCUs, prompts, regional prompts, strengths and "
                        "their curves, settings, guidance add-ons) to output/vace_jobs/ for a multi-GPU run with "
                        "torchrun (see the README, Multi-GPU).",
            inputs=[*(sampler[name] for name in SAMPLER_INPUTS),
                    io.Image.Input("init_images", optional=True,
                                   tooltip="Video-to-video: the video to refine (the VCU's size and length), kept in "
                                           "the job when denoise is below 1."),
                    io.String.Input("filename_prefix", default="vace_jobs/job",
                                    tooltip="File name under ComfyUI's output folder (a counter is added).")],
            outputs=[io.String.Output(display_name="job_file")],
        )

    @classmethod
    def execute(cls, positive, negative, steps, cfg, shift, sampler, seed, filename_prefix, guidance=None,
                denoise=1.0, init_images=None, regions=None, **streams):
        if regions is None and positive and positive[0][1].get(REGIONAL):
            raise VaceError("the positive prompt comes from Regional Prompts, but their regions are not connected: "
                            "`run --job` would sample it without them. Connect Regional Prompts' regions output to "
                            "this node's regions input (as on the VACE Sampler).")
        options = reference_settings(streams)
        units, stream_settings = context_streams(streams)
        width = VACE_14B.text_dim  # umt5-xxl, the text encoder of every VACE model
        features = text_features(positive, "positive", width).cpu()
        if regions is not None:  # the sampler's checks, now rather than on the GPU machine
            regions.check_text(features)
            regions.check_length(units[0].length)
        job = Job(units, features, text_features(negative, "negative", width).cpu(), stream_settings,
                  sampler_settings(steps, cfg, shift, sampler, seed, **options, **guidance_settings(guidance, denoise)),
                  init_video=None if init_images is None or denoise > 0.9999 else fit_to(init_images, units[0]),
                  regions=regions)
        root = folder_paths.get_output_directory()
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, root)
        filename = f"{name}_{counter:05}.safetensors"
        path = save_job(os.path.join(folder, filename), job)
        return io.NodeOutput(str(path), ui={"vace_job": [ui.SavedResult(filename, subfolder, io.FolderType.output)]})


NODES = [SaveVaceJob]
