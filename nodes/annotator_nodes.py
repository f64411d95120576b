"""Annotator nodes: control videos (pose, depth, flow, gray, scribble, layout) and masks (SAM2, person),
plus Composite Mask. Weights come from ComfyUI's models/annotators and models/sam2 folders."""

from functools import lru_cache

import comfy.model_management as mm
import comfy.utils
import torch
from comfy_api.latest import io

from ..annotators.base import AnnotatorError, Progress
from . import memory
from .files import FileInput, list_files, resolve, resolve_weight
from .guard import BinaryMaskInput
from .preview import masks_ui, video_ui
from .types import CATEGORY
from .vcu_nodes import length_input

# annotator modules import their optional packages (OpenCV, MediaPipe, ...) when a node runs, so the pack
# loads without them and the node says what to install

ANNOTATE = f"{CATEGORY}/annotators"


def _build(kind: str, *args):
    """Weights are resolved among the names ComfyUI lists in models/annotators and models/sam2 (nodes/files.py),
    and the annotators get full paths, so they never search the disk themselves."""
    if kind == "depth":
        from ..annotators.depth import Depth

        return Depth(args[0], resolve_weight(Depth.DEFAULT_WEIGHTS[args[0]]), device="cpu")
    if kind == "raft":
        from ..annotators.flow import RAFTFlow

        return RAFTFlow(resolve_weight(RAFTFlow.WEIGHT), device="cpu")
    if kind == "lines":
        from ..annotators.scribble import InformativeDrawings

        return InformativeDrawings(resolve_weight("netG_A_latest.pth"), device="cpu")
    from ..annotators.masks.sam2 import SAM2Video

    return SAM2Video(resolve("sam2", args[0]), device="cpu")


@lru_cache(maxsize=4)
def _cached(kind: str, *args):
    """Annotator objects stay between runs (ComfyUI caches outputs, not models), each with a ModelPatcher over
    its weights: the cache keeps the objects, model management decides where their weights are."""
    annotator = _build(kind, *args)
    return annotator, memory.annotator_patcher(annotator)


def _model(kind: str, *args):
    """The annotator, its weights loaded on ComfyUI's device for this run."""
    annotator, patcher = _cached(kind, *args)
    memory.load_annotator(annotator, patcher)
    return annotator


def _dwpose(body, face, hands, detector, estimator):
    """DWPose runs ONNX sessions, which model management cannot move: they are built on ComfyUI's device for the
    run and dropped with it, so they hold no GPU memory between runs."""
    from ..annotators.pose import DWPose

    return DWPose(resolve_weight(detector), resolve_weight(estimator), device=mm.get_torch_device(), body=body,
                  face=face, hands=hands)


def progress_bar() -> Progress:
    """An annotator's (done, total) reports -> ComfyUI's progress bar (whose update also stops on Cancel)."""
    bar = None

    def update(done: int, total: int):
        nonlocal bar
        bar = bar or comfy.utils.ProgressBar(total)
        bar.update_absolute(done, total)
    return update


def onnx_files(default: str) -> list[str]:
    """`default` and the .onnx files in models/annotators (a combo's options)."""
    return sorted({default, *(f for f in list_files("annotators") if f.endswith(".onnx"))})


def frames_input(tooltip="The video (or image) to annotate."):
    return io.Image.Input("frames", tooltip=tooltip)


def control_output():
    return [io.Image.Output(display_name="control_video")]


class PoseAnnotator(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VACEPoseAnnotator", display_name="Pose Annotator", category=ANNOTATE,
            description="OpenPose-style skeletons as VACE was trained on (body + face, hands optional).",
            inputs=[
                frames_input(),
                io.Combo.Input("backend", options=["mediapipe", "dwpose"], default="mediapipe",
                               tooltip="mediapipe: offline, one person. dwpose: VACE's own (yolox_l.onnx + "
                                       "dw-ll_ucoco_384.onnx in models/annotators), several people."),
                io.Boolean.Input("body", default=True, tooltip="Draw the body skeleton."),
                io.Boolean.Input("face", default=True, tooltip="Draw face keypoints."),
                io.Boolean.Input("hands", default=False, tooltip="Draw hands (VACE's pose videos have none)."),
                # named by file, so the frontend's Missing Models dialog can list a workflow's DWPose weights
                io.Combo.Input("detector", options=onnx_files("yolox_l.onnx"), default="yolox_l.onnx",
                               tooltip="dwpose: the person detector in models/annotators (yzd-v/DWPose)."),
                io.Combo.Input("estimator", options=onnx_files("dw-ll_ucoco_384.onnx"),
                               default="dw-ll_ucoco_384.onnx",
                               tooltip="dwpose: the whole-body keypoint model in models/annotators (yzd-v/DWPose)."),
            ],
            outputs=control_output(),
        )

    @classmethod
    def execute(cls, frames, backend, body, face, hands, detector="yolox_l.onnx",
                estimator="dw-ll_ucoco_384.onnx") -> io.NodeOutput:
        if backend == "dwpose":
            annotator = _dwpose(body, face, hands, detector, estimator)
        else:
            from ..annotators.pose import MediaPipePose

            annotator = MediaPipePose(body=body, face=face, hands=hands)
        return io.NodeOutput(annotator(frames, progress_bar()))


DEPTH_MODELS = {"depth_anything_v2_vitl.pth": "depth_anything_v2", "dpt-hybrid-midas": "midas"}  # file -> kind


class DepthAnnotator(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VACEDepthAnnotator", display_name="Depth Annotator", category=ANNOTATE,
            description="Per-frame depth, normalised per frame as VACE did.",
            inputs=[
                frames_input(),
                # named by file, so the frontend's Missing Models dialog can list a workflow's depth weights
                io.Combo.Input("model", options=list(DEPTH_MODELS), default="depth_anything_v2_vitl.pth",
                               tooltip="depth_anything_v2_vitl.pth (Depth-Anything-V2-Large, VACE's) or the "
                                       "dpt-hybrid-midas folder (Intel/dpt-hybrid-midas), in models/annotators."),
            ],
            outputs=control_output(),
        )

    @classmethod
    def execute(cls, frames, model) -> io.NodeOutput:
        return io.NodeOutput(_model("depth", DEPTH_MODELS[model])(frames, progress_bar()))


class FlowAnnotator(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VACEFlowAnnotator", display_name="Flow Annotator", category=ANNOTATE,
            description="Optical flow drawn as colour (the standard wheel); the first frame repeats the first flow.",
            inputs=[
                frames_input(),
                io.Combo.Input("backend", options=["dis", "raft"], default="dis",
                               tooltip="dis: OpenCV, offline and fast. raft: needs torchvision and its RAFT "
                                       "weights in models/annotators."),
                io.Combo.Input("preset", options=["ultrafast", "fast", "medium"], default="medium",
                               tooltip="DIS quality/speed preset."),
            ],
            outputs=control_output(),
        )

    @classmethod
    def execute(cls, frames, backend, preset) -> io.NodeOutput:
        if backend == "raft":
            return io.NodeOutput(_model("raft")(frames, progress_bar()))
        from ..annotators.flow import DISFlow

        return io.NodeOutput(DISFlow(preset)(frames, progress_bar()))


class GrayAnnotator(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VACEGrayAnnotator", display_name="Gray Annotator", category=ANNOTATE,
            description="Grayscale frames: with a prompt, VACE colourises them.",
            inputs=[frames_input()], outputs=control_output(),
        )

    @classmethod
    def execute(cls, frames) -> io.NodeOutput:
        from ..annotators.gray import Gray

        return io.NodeOutput(Gray()(frames))


class ScribbleAnnotator(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VACEScribbleAnnotator", display_name="Scribble Annotator", category=ANNOTATE,
            description="Line drawings of the frames (dark lines on white).",
            inputs=[
                frames_input(),
                io.Combo.Input("backend", options=["xdog", "canny", "informative_drawings"], default="xdog",
                               tooltip="xdog/canny: offline. informative_drawings: VACE's line model "
                                       "(netG_A_latest.pth in models/annotators)."),
                io.Int.Input("low", default=100, min=0, max=255, tooltip="Canny low threshold."),
                io.Int.Input("high", default=200, min=0, max=255, tooltip="Canny high threshold."),
            ],
            outputs=control_output(),
        )

    @classmethod
    def execute(cls, frames, backend, low, high) -> io.NodeOutput:
        from ..annotators import scribble

        if backend == "informative_drawings":
            return io.NodeOutput(_model("lines")(frames, progress_bar()))
        annotator = scribble.Canny(low, high) if backend == "canny" else scribble.XDoG()
        return io.NodeOutput(annotator(frames, progress_bar()))


def _numbers(text: str, per: int, what: str) -> list[tuple[float, ...]]:
    """'x,y; x,y' -> [(x, y), ...]."""
    groups = [g for g in text.replace("\n", ";").split(";") if g.strip()]
    try:
        values = [tuple(float(v) for v in g.split(",")) for g in groups]
    except ValueError:
        values = []
    if len(values) != len(groups) or any(len(v) != per for v in values):
        example = "; ".join([",".join(["10"] * per)] * 2)
        raise AnnotatorError(f"{what} {text!r} must be groups of {per} numbers separated by ';', e.g. '{example}'")
    return values


class LayoutAnnotator(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VACELayoutAnnotator", display_name="Layout Annotator", category=ANNOTATE,
            description="VACE's layout control: a box moving from a start box to an end box, or the outlines "
                        "of tracked masks, drawn on white (move anything).",
            inputs=[
                io.String.Input("start_box", default="64,160,256,352",
                                tooltip="x1,y1,x2,y2 in pixels on the first frame."),
                io.String.Input("end_box", default="512,160,704,352",
                                tooltip="x1,y1,x2,y2 in pixels on the last frame."),
                io.Int.Input("width", default=832, min=16, max=4096, step=16, tooltip="Video width."),
                io.Int.Input("height", default=480, min=16, max=4096, step=16, tooltip="Video height."),
                length_input(tooltip="Frames, 4n+1."),
                BinaryMaskInput("masks", optional=True,
                                tooltip="When given: draw these masks' outlines instead of the moving box."),
            ],
            outputs=control_output(),
        )

    @classmethod
    def execute(cls, start_box, end_box, width, height, length, masks=None) -> io.NodeOutput:
        from ..annotators import layout

        if masks is not None:
            control = layout.mask_tracks(masks)
        else:
            start, end = (_numbers(b, 4, name)[0] for b, name in ((start_box, "start_box"), (end_box, "end_box")))
            control = layout.moving_box(start, end, length, height, width)
        return io.NodeOutput(control, ui=video_ui(control))


class SAM2Masks(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VACESAM2Masks", display_name="SAM2 Video Masks", category=ANNOTATE,
            description="Segments an object from clicks or a box on one frame and follows it through the video "
                        "(white = the object: inpaint it, or invert to keep it).",
            inputs=[
                frames_input("The video to segment."),
                FileInput("checkpoint", "sam2", fallback=("sam2.1_hiera_large.pt",),
                          tooltip="A SAM2.1 checkpoint in models/sam2 (facebook/sam2.1-hiera-*)."),
                io.Int.Input("frame", default=0, min=0, max=4096, tooltip="The frame the prompts are on."),
                io.String.Input("points", default="",
                                tooltip="Clicks on the object, 'x,y; x,y' in pixels."),
                io.String.Input("negative_points", default="",
                                tooltip="Clicks on what is not the object, 'x,y; x,y'."),
                io.String.Input("box", default="", tooltip="Optional box around the object: x1,y1,x2,y2."),
            ],
            outputs=[io.Mask.Output(display_name="masks")],
        )

    @classmethod
    def execute(cls, frames, checkpoint, frame, points, negative_points, box) -> io.NodeOutput:
        from ..annotators.masks.sam2 import Prompt

        pos, neg = _numbers(points, 2, "points"), _numbers(negative_points, 2, "negative_points")
        boxes = _numbers(box, 4, "box")
        if not (pos or boxes):
            raise AnnotatorError("SAM2 Video Masks needs points on the object or a box around it")
        _, height, width, _ = frames.shape
        outside = [p for p in [*pos, *neg] if not (0 <= p[0] < width and 0 <= p[1] < height)]
        outside += [b for b in boxes if not (0 <= b[0] < b[2] <= width and 0 <= b[1] < b[3] <= height)]
        if outside:
            raise AnnotatorError(f"SAM2 points / box {outside} lie outside the {width}x{height} frame (x, y in pixels "
                                 "from the top-left corner; boxes x1 < x2, y1 < y2)")
        prompt = Prompt(frame=frame, points=[*pos, *neg], labels=[1] * len(pos) + [0] * len(neg),
                        box=boxes[0] if boxes else None)
        masks = _model("sam2", checkpoint).segment(frames, [prompt], progress_bar())
        return io.NodeOutput(masks, ui=masks_ui(frames, masks))


class PersonMasks(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VACEPersonMasks", display_name="Person Masks", category=ANNOTATE,
            description="People segmented in every frame (offline, MediaPipe).",
            inputs=[frames_input(),
                    io.Combo.Input("model", options=["pose", "selfie"], default="pose",
                                   tooltip="pose: better outlines; selfie: faster, for close-ups.")],
            outputs=[io.Mask.Output(display_name="masks")],
        )

    @classmethod
    def execute(cls, frames, model) -> io.NodeOutput:
        from ..annotators.masks.person import PersonMask

        return io.NodeOutput(PersonMask(model)(frames, progress_bar()))


MASK_OPS = ["union", "intersect", "subtract", "invert", "grow", "shrink", "feather", "bbox", "hull", "frame_range"]


def _combine(op: str, a: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    if b is None:
        raise AnnotatorError(f"'{op}' needs a second mask (mask_b)")
    if b.shape[1:] != a.shape[1:]:
        raise AnnotatorError(f"mask_b {tuple(b.shape)} and mask_a {tuple(a.shape)} differ in size")
    b = b.expand_as(a) if b.shape[0] == 1 else b
    if b.shape != a.shape:
        raise AnnotatorError(f"mask_b has {b.shape[0]} frames, mask_a {a.shape[0]}: give one or as many")
    return {"union": torch.maximum, "intersect": torch.minimum, "subtract": lambda x, y: (x - y).clamp(0, 1)}[op](a, b)


def composite_mask(op: str, a, b=None, amount: int = 8, start: int = 0, end: int = -1) -> torch.Tensor:
    from ..annotators.masks import ops

    if op in ("union", "intersect", "subtract"):
        return _combine(op, a, b)
    if op == "frame_range":  # the mask only on frames [start, end], zero elsewhere
        last = a.shape[0] - 1 if end == -1 else end
        if not 0 <= start <= last < a.shape[0]:
            raise AnnotatorError(f"frame_range {start}..{end} selects no frames of the {a.shape[0]}-frame mask: give "
                                 f"0 <= start <= end < {a.shape[0]} (end -1 = the last frame)")
        keep = torch.zeros(a.shape[0], 1, 1)
        keep[start: last + 1] = 1
        return a * keep
    return {"invert": lambda: ops.invert(a), "grow": lambda: ops.expand(a, amount),
            "shrink": lambda: ops.expand(a, -amount), "feather": lambda: ops.feather(a, amount),
            "bbox": lambda: ops.bbox(a, amount), "hull": lambda: ops.hull(a)}[op]()


class CompositeMask(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VACECompositeMask", display_name="Composite Mask", category=CATEGORY,
            description="Mask operations VACE uses: combine two masks, invert, grow/shrink, feather, box, hull, "
                        "or keep a frame range.",
            inputs=[
                io.Mask.Input("mask_a", tooltip="The mask (T, H, W) to operate on."),
                io.Combo.Input("operation", options=MASK_OPS, default="grow",
                               tooltip="union/intersect/subtract use mask_b; grow/shrink/feather/bbox use amount "
                                       "(pixels); frame_range keeps frames start..end."),
                io.Int.Input("amount", default=8, min=0, max=512,
                             tooltip="Pixels for grow/shrink/feather, padding for bbox."),
                io.Int.Input("start", default=0, min=0, max=4096, tooltip="First frame kept by frame_range."),
                io.Int.Input("end", default=-1, min=-1, max=4096, tooltip="Last frame kept (-1: the last)."),
                io.Mask.Input("mask_b", optional=True, tooltip="Second mask for union/intersect/subtract."),
            ],
            outputs=[io.Mask.Output(display_name="mask")],
        )

    @classmethod
    def execute(cls, mask_a, operation, amount, start, end, mask_b=None) -> io.NodeOutput:
        a = mask_a if mask_a.ndim == 3 else mask_a[None]
        return io.NodeOutput(composite_mask(operation, a, mask_b, amount, start, end))


NODES = [PoseAnnotator, DepthAnnotator, FlowAnnotator, GrayAnnotator, ScribbleAnnotator, LayoutAnnotator, SAM2Masks,
         PersonMasks, CompositeMask]
