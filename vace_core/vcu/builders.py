"""Builders: one VCU per VACE task (DESIGN.md §5 table). Inputs are ComfyUI-style IMAGE (T, H, W, 3) and
MASK (T, H, W) tensors in 0..1; sizes default to the input's, rounded to multiples of 16, and lengths to
4n+1 (rounded down, with a warning saying to what)."""

from collections.abc import Mapping

import torch
from torch import Tensor

from ..errors import VaceError
from .pixels import letterbox, resize_cover, resize_masks, to_masks, to_video
from .unit import VCU, check_memory, check_trained_size, fit_length, fit_size

MAX_REFERENCES = 8  # VACE was trained with 1-3; more is almost always a video wired in by mistake


def _fit(video: Tensor, height: int | None, width: int | None, length: int | None) -> Tensor:
    """(3, T, H, W) video -> target size (centre crop + resize) and 4n+1 length (the first frames)."""
    size = fit_size(height or video.shape[2], width or video.shape[3])
    n = fit_length(length or video.shape[1])
    check_memory(n, *size)
    if video.shape[1] < n:
        raise VaceError(f"the video has {video.shape[1]} frames but {n} were asked for; give a longer video "
                        "or use extend() to generate the rest")
    return resize_cover(video[:, :n], size)


def text_to_video(length: int = 81, height: int = 480, width: int = 832) -> VCU:
    """T2V: gray frames, everything generated."""
    n, size = fit_length(length), fit_size(height, width)
    check_memory(n, *size)
    return VCU(torch.zeros(3, n, *size), torch.ones(n, *size))


def control(video: Tensor, height: int | None = None, width: int | None = None, length: int | None = None) -> VCU:
    """V2V: a control video (pose, depth, flow, gray, scribble, layout) steers every generated pixel."""
    frames = _fit(to_video(video, "control video"), height, width, length)
    return VCU(frames, torch.ones(frames.shape[1:]))


def inpaint(video: Tensor, masks: Tensor, height: int | None = None, width: int | None = None,
            length: int | None = None) -> VCU:
    """MV2V: regenerate where masks are 1, keep the rest. A single mask applies to every frame."""
    frames = to_video(video, "video")
    masks = to_masks(masks)
    if masks.shape[0] == 1:
        masks = masks.expand(frames.shape[1], -1, -1)
    if masks.shape != frames.shape[1:]:
        raise VaceError(f"masks {tuple(masks.shape)} disagree with the video's (T, H, W) {tuple(frames.shape[1:])}: "
                        "give one mask (or one per frame) at the video's size")
    if not masks.any():  # binarised at 0.5: nothing would be generated
        raise VaceError("the inpainting masks are empty (all black = keep every pixel), so nothing would be "
                        "generated: white (1) marks what to generate. A mask loaded from an image's alpha "
                        "channel is empty when the image has none (in ComfyUI: Load Image (as Mask), channel red).")
    frames = _fit(frames, height, width, length)
    masks = resize_masks(masks[: frames.shape[1]], frames.shape[2:])
    return VCU(frames * (1 - masks), masks, kind="repaint")


def outpaint_pads(height: int, width: int, left: float, right: float, top: float, bottom: float) -> list[int]:
    """[left, right, top, bottom] pixels added to a height x width video: pixels (>= 1) or fractions of the side
    (< 1). Refuses nothing to add, and canvases far beyond what VACE was trained at."""
    pad = [int(v if v >= 1 else v * dim) for v, dim in ((left, width), (right, width), (top, height), (bottom, height))]
    if min(pad) < 0 or not any(pad):
        raise VaceError(f"outpaint needs a positive amount on at least one side, got left={left} right={right} "
                        f"top={top} bottom={bottom}")
    check_trained_size(height + pad[2] + pad[3], width + pad[0] + pad[1], f"outpainting {width}x{height} by "
                       f"{pad[0]}, {pad[1]}, {pad[2]}, {pad[3]} px (left, right, top, bottom)")
    return pad


def outpaint(video: Tensor, left: float = 0, right: float = 0, top: float = 0, bottom: float = 0,
             height: int | None = None, width: int | None = None, length: int | None = None) -> VCU:
    """MV2V: extend the canvas. Each side is pixels (>= 1) or a fraction of the width/height (< 1)."""
    frames = to_video(video, "video")
    _, t, h, w = frames.shape
    pad = outpaint_pads(h, w, left, right, top, bottom)
    check_memory(t, h + pad[2] + pad[3], w + pad[0] + pad[1])
    canvas = torch.nn.functional.pad(frames, pad)  # gray (0) outside
    masks = torch.nn.functional.pad(torch.zeros(t, h, w), pad, value=1.0)
    canvas = _fit(canvas, height, width, length)
    masks = resize_masks(masks[: canvas.shape[1]], canvas.shape[2:])
    return VCU(canvas * (1 - masks), masks, kind="repaint")


def place_frames(frames: Mapping[int, Tensor], length: int, height: int | None = None,
                 width: int | None = None) -> VCU:
    """Temporal extension / interpolation: the given frames (index -> image, negative indices count from
    the end) are kept, every other frame is generated."""
    n = fit_length(length)
    if not frames:
        raise VaceError("place_frames needs at least one frame")
    if bad := [i for i in frames if not -n <= i < n]:
        raise VaceError(f"frame indices {bad} are outside a {n}-frame video")
    positions = [i % n for i in frames]
    if len(set(positions)) < len(positions):
        clash = sorted(i for i in frames if positions.count(i % n) > 1)
        raise VaceError(f"frame indices {clash} land on the same position of a {n}-frame video, so one frame "
                        "would be lost: give each frame its own position (or a longer video).")
    images = {i % n: to_video(img, f"frame {i}") for i, img in frames.items()}
    first = next(iter(images.values()))
    size = fit_size(height or first.shape[2], width or first.shape[3])
    check_memory(n, *size)
    video, masks = torch.zeros(3, n, *size), torch.ones(n, *size)
    for i, img in images.items():
        video[:, i:i + 1] = resize_cover(img[:, :1], size)
        masks[i] = 0
    return VCU(video, masks, kind="extension")


def first_frame(image: Tensor, length: int = 81, **size) -> VCU:
    """Image-to-video: the first frame given."""
    return place_frames({0: image}, length, **size)


def last_frame(image: Tensor, length: int = 81, **size) -> VCU:
    return place_frames({-1: image}, length, **size)


def first_last(first: Tensor, last: Tensor, length: int = 81, **size) -> VCU:
    """Interpolation between a first and a last frame."""
    return place_frames({0: first, -1: last}, length, **size)


def extend(clip: Tensor, length: int = 81, at: str = "end", **size) -> VCU:
    """Temporal extension: `clip` (T, H, W, 3) fills the start (at="end": generate after it) or the end
    (at="start": generate before it) of a `length`-frame video."""
    clip = torch.as_tensor(clip)
    clip = clip if clip.ndim == 4 else clip[None]
    n = fit_length(length)
    if clip.shape[0] >= n:
        raise VaceError(f"the clip has {clip.shape[0]} frames; a {n}-frame extension must be longer than it")
    if at not in ("start", "end"):
        raise VaceError(f"extend at={at!r}: use 'end' (generate after the clip) or 'start' (before it)")
    offset = 0 if at == "end" else n - clip.shape[0]
    return place_frames({offset + i: frame for i, frame in enumerate(clip)}, n, **size)


def every_kth(video: Tensor, k: int, length: int | None = None, **size) -> VCU:
    """Frame interpolation: keep frames 0, k, 2k, ... of `video`, generate the rest."""
    video = torch.as_tensor(video)
    if k < 1:
        raise VaceError(f"k must be at least 1, got {k}")
    n = fit_length(length or video.shape[0])
    return place_frames({i: video[i] for i in range(0, min(n, video.shape[0]), k)}, n, **size)


def with_references(vcu: VCU, images, mode: str = "letterbox") -> VCU:
    """Adds reference images (R2V): each fitted to the frame size, letterboxed on white (the official way)
    or centre-cropped ("crop"); RGBA is composited on white. Kept in order, before any already there."""
    if mode not in ("letterbox", "crop"):
        raise VaceError(f"reference mode {mode!r}: use 'letterbox' or 'crop'")
    images = _image_list(images)
    if len(images) > MAX_REFERENCES:
        raise VaceError(f"{len(images)} reference images: is a video wired into references? VACE takes a few "
                        f"references (subject, object, background; at most {MAX_REFERENCES} here), each becoming a "
                        "latent frame. Pick images with ImageFromBatch, or wire the video into frames.")
    refs = [to_video(img, f"reference {i}") for i, img in enumerate(images)]
    if any(r.shape[1] != 1 for r in refs):
        raise VaceError("each reference must be one image (H, W, 3|4), not a video")
    fit = letterbox if mode == "letterbox" else resize_cover
    refs = [fit(r, vcu.size)[:, 0] for r in refs]
    return VCU(vcu.frames, vcu.masks, [*vcu.references, *refs], vcu.kind)


def _image_list(images) -> list[Tensor]:
    if isinstance(images, Tensor) and images.ndim == 4:  # an IMAGE batch: one reference per image
        return list(images)
    return list(images) if isinstance(images, (list, tuple)) else [images]


def fit_to(images: Tensor, vcu: VCU) -> Tensor:
    """Images (T, H, W, 3) 0..1 (an init video) -> (3, vcu.length, H, W) in [-1, 1] at the VCU's size and length
    (centre crop + resize, its first frames), as the VCU builders fit their videos."""
    return _fit(to_video(images, "the init video"), *vcu.size, vcu.length)
