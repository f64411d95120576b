"""Nodes that build Video Condition Units (pixels only: the sampler encodes them)."""

import torch
from comfy_api.latest import io

from ..vace_core import vcu as V
from ..vace_core.errors import VaceError
from ..vace_core.settings import knobs
from ..vace_core.tasks import TaskInputs
from .guard import BinaryMaskInput
from .inputs import widget
from .preview import vcu_ui
from .types import CATEGORY, VCU

SIZE = knobs(TaskInputs)  # width, height and length: the command line's too


def size_inputs(allow_auto=False):
    """width, height (allow_auto: 0 keeps the input's) and length."""
    def side(name):
        auto = {"default": 0, "min": 0, "tooltip": SIZE[name].help + " 0 keeps the input's."} if allow_auto else {}
        return widget(SIZE[name], **auto)
    return [side("width"), side("height"), length_input()]


def length_input(tooltip=None):
    """min 1, step 4: the frontend snaps to min + k*step, so the widget holds exactly the 4n+1 lengths."""
    return widget(SIZE["length"], **({"tooltip": tooltip} if tooltip else {}))


def _auto(v):
    return v or None


class BuildVCU(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VACEBuildVCU", display_name="Build VCU", category=CATEGORY,
            description="A Video Condition Unit. No frames: text-to-video. Frames only: a control video (pose, "
                        "depth, flow, gray, scribble, layout). Frames + masks: inpainting (mask 1 = generate).",
            inputs=[
                *size_inputs(),
                io.Image.Input("frames", optional=True,
                               tooltip="A control video or the video to edit; centre-cropped and resized to the size."),
                BinaryMaskInput("masks", optional=True,
                                tooltip="White (1) = generate, black (0) = keep (binary: values > 0.5 generate). "
                                        "One mask for all frames or one each."),
                io.Image.Input("references", optional=True,
                               tooltip="Reference images (a batch: one per reference) for subject / style / scene."),
                io.Combo.Input("reference_mode", options=["letterbox", "crop"], default="letterbox",
                               tooltip="letterbox: fit on a white canvas (as VACE was trained); crop: fill the frame."),
            ],
            outputs=[VCU.Output(display_name="vcu")],
        )

    @classmethod
    def execute(cls, width, height, length, frames=None, masks=None, references=None,
                reference_mode="letterbox") -> io.NodeOutput:
        if frames is None and masks is not None:
            raise VaceError("Build VCU got masks but no frames: connect the video the masks belong to.")
        if frames is None:
            unit = V.text_to_video(length, height, width)
        elif masks is None:
            unit = V.control(frames, height, width, length)
        else:
            unit = V.inpaint(frames, masks, height, width, length)
        if references is not None:
            unit = V.with_references(unit, references, reference_mode)
        return io.NodeOutput(unit, ui=vcu_ui(unit))


PLACEMENTS = ["first", "last", "first_last", "extend_after", "extend_before", "every_kth", "indices"]


class FramePlacement(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VACEFramePlacement", display_name="VCU Frames at Positions", category=CATEGORY,
            description="Keeps given frames at chosen positions and generates the rest: image-to-video, "
                        "first/last-frame interpolation, temporal extension before or after a clip.",
            inputs=[
                io.Image.Input("images", tooltip="The frames to keep (a clip for extend, two images for first_last)."),
                io.Combo.Input("placement", options=PLACEMENTS, default="first",
                               tooltip="first/last: one image at the start/end. first_last: images 0 and 1. "
                                       "extend_after: the clip starts the video. extend_before: it ends it. "
                                       "every_kth: frames 0, k, 2k of the images. indices: see below."),
                *size_inputs(),
                io.Int.Input("k", default=4, min=1, max=64, tooltip="Spacing for every_kth."),
                io.String.Input("indices", default="0, -1",
                                tooltip="For 'indices': one position per image, comma separated; -1 is the last."),
            ],
            outputs=[VCU.Output(display_name="vcu")],
        )

    @classmethod
    def execute(cls, images, placement, width, height, length, k, indices) -> io.NodeOutput:
        size = {"height": height, "width": width}
        wanted = {"first": 1, "last": 1, "first_last": 2}.get(placement)
        if wanted is not None and images.shape[0] != wanted:
            raise VaceError(f"{placement} takes {wanted} image{'s' if wanted > 1 else ''} (a batch of {wanted}), got "
                            f"{images.shape[0]}: the others would be dropped. For a clip use extend_after / "
                            "extend_before, or pick images with ImageFromBatch.")
        builders = {
            "first": lambda: V.first_frame(images[0], length, **size),
            "last": lambda: V.last_frame(images[-1], length, **size),
            "first_last": lambda: V.first_last(images[0], images[-1], length, **size),
            "extend_after": lambda: V.extend(images, length, "end", **size),
            "extend_before": lambda: V.extend(images, length, "start", **size),
            "every_kth": lambda: V.every_kth(images, k, length, **size),
            "indices": lambda: V.place_frames(dict(zip(_indices(indices, images.shape[0]), images, strict=True)),
                                              length, **size),
        }
        unit = builders[placement]()
        return io.NodeOutput(unit, ui=vcu_ui(unit))


def _indices(text: str, count: int) -> list[int]:
    try:
        values = [int(v) for v in text.replace(";", ",").split(",") if v.strip()]
    except ValueError:
        raise VaceError(f"indices {text!r} must be whole numbers separated by commas, e.g. '0, 40, -1'") from None
    if len(values) != count:
        raise VaceError(f"{len(values)} indices for {count} images: give one position per image")
    if len(set(values)) < len(values):
        raise VaceError(f"indices {text!r} repeat a position, so an image would be lost: give each its own")
    return values


class Outpaint(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        side = "Pixels to add (>= 1) or a fraction of the size (< 1) on the "
        return io.Schema(
            node_id="VACEOutpaint", display_name="VCU Outpaint", category=CATEGORY,
            description="Extends the canvas of an image or video; the new border is generated.",
            inputs=[
                io.Image.Input("frames", tooltip="The image or video to extend."),
                *[io.Float.Input(s, default=0.0, min=0.0, max=4096.0, step=0.05, tooltip=side + s + ".")
                  for s in ("left", "right", "top", "bottom")],
                *size_inputs(allow_auto=True)[:2],
                # a length widget cannot hold 0 and 4n+1 both: "the input's length" is a switch of its own
                io.Boolean.Input("length_from_input", default=True,
                                 tooltip="On: the input's length (rounded down to 4n+1); off: `length` frames."),
                length_input(tooltip="Frames, 4n+1, when length_from_input is off (others are rounded down)."),
            ],
            outputs=[VCU.Output(display_name="vcu")],
        )

    @classmethod
    def execute(cls, frames, left, right, top, bottom, width, height, length_from_input=True,
                length=81) -> io.NodeOutput:
        unit = V.outpaint(frames, left, right, top, bottom, _auto(height), _auto(width),
                          None if length_from_input else length)
        return io.NodeOutput(unit, ui=vcu_ui(unit))


class AddReferences(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VACEAddReferences", display_name="VCU Add References", category=CATEGORY,
            description="Adds reference images (subject, face, object, style, background) to a VCU.",
            inputs=[
                VCU.Input("vcu", tooltip="The VCU to add references to."),
                io.Image.Input("images", tooltip="A batch of reference images; RGBA is composited on white."),
                io.Combo.Input("mode", options=["letterbox", "crop"], default="letterbox",
                               tooltip="letterbox: fit on a white canvas (as VACE was trained); crop: fill the frame."),
            ],
            outputs=[VCU.Output(display_name="vcu")],
        )

    @classmethod
    def execute(cls, vcu, images, mode) -> io.NodeOutput:
        unit = V.with_references(vcu, images, mode)
        return io.NodeOutput(unit, ui=vcu_ui(unit))


class ComposeVCU(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VACEComposeVCU", display_name="Compose VCUs", category=CATEGORY,
            description="Merges two VCUs into one with VACE's composition rules (e.g. inpaint + pose drives the "
                        "masked area with the pose; frames + layout moves an object). For separate strengths, "
                        "give both to the sampler instead.",
            inputs=[VCU.Input("vcu_a", tooltip="The first VCU (its kind decides the rule)."),
                    VCU.Input("vcu_b", tooltip="The second VCU.")],
            outputs=[VCU.Output(display_name="vcu")],
        )

    @classmethod
    def execute(cls, vcu_a, vcu_b) -> io.NodeOutput:
        unit = V.compose(vcu_a, vcu_b)
        return io.NodeOutput(unit, ui=vcu_ui(unit))


class ConceptDecouple(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VACEConceptDecouple", display_name="Concept Decouple", category=CATEGORY,
            description="Shows what the model gets: inactive frames (kept), reactive frames (to change), the masks "
                        "and the fitted references.",
            inputs=[VCU.Input("vcu", tooltip="The VCU to look at.")],
            outputs=[io.Image.Output(display_name="inactive"), io.Image.Output(display_name="reactive"),
                     io.Mask.Output(display_name="masks"), io.Image.Output(display_name="references")],
        )

    @classmethod
    def execute(cls, vcu) -> io.NodeOutput:
        inactive, reactive = V.decouple(vcu)
        refs = torch.stack(vcu.references, dim=1) if vcu.references else torch.ones(3, 1, *vcu.size)
        return io.NodeOutput(V.to_images(inactive), V.to_images(reactive), vcu.masks.clone(), V.to_images(refs),
                             ui=vcu_ui(vcu))


NODES = [BuildVCU, FramePlacement, Outpaint, AddReferences, ComposeVCU, ConceptDecouple]
