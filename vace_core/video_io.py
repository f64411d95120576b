"""Video and image files in and out. Frames are (T, H, W, 3) float32 tensors in 0..1 (ComfyUI's IMAGE).

In: videos through PyAV (mp4, webm, mov, mkv, ...), gif and webp (animated or still) through PIL, still
images, and folders of images (natural order: frame_2 before frame_10).
Out: mp4 (h264, yuv420p), animated webp, gif. The frame rate travels with the frames: read from the file,
written back unchanged.
"""

import os
import re
from fractions import Fraction
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .errors import VaceError
from .outputs import atomic_output

DEFAULT_FPS = 16.0  # Wan's sampling rate; used for image folders and still images
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
ANIMATED_IMAGE_EXTS = (".gif", ".webp")  # read with PIL: frame durations and alpha handled there
WRITE_EXTS = (".mp4", ".webp", ".gif")
MP4_CRF = "19"  # visually near-lossless h264 (VideoHelperSuite's default)


def to_tensor(frames: list[np.ndarray]) -> Tensor:
    """uint8 (H, W, C) frames -> (T, H, W, C) float32 0..1."""
    return torch.from_numpy(np.stack(frames)).float().div_(255)  # in place: a 720p x 81 clip is 0.9 GB


def to_uint8(frames: Tensor) -> np.ndarray:
    return (frames.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def check_exists(path: Path):
    if not path.exists():
        raise VaceError(f"File not found: {path}")


def open_image(path: Path):
    from PIL import Image

    try:
        image = Image.open(path)
        image.load()
    except Exception as e:  # PIL raises UnidentifiedImageError, OSError, SyntaxError... for bad files
        raise VaceError(f"Could not read image {path} ({type(e).__name__}: {e}): not an image, or corrupt") \
            from e
    return image


def read_image(path: str | Path) -> Tensor:
    """One image -> (H, W, 4) when it has transparency (RGBA references), else (H, W, 3); float32 0..1.
    EXIF orientation is applied (phone photos)."""
    from PIL import ImageOps

    path = Path(path)
    check_exists(path)
    image = ImageOps.exif_transpose(open_image(path))
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    return to_tensor([np.asarray(image.convert("RGBA" if has_alpha else "RGB"))])[0]


def read_animated_image(path: Path, max_frames: int | None, fps: float | None) -> tuple[Tensor, float]:
    """gif / webp, animated or still; fps from the mean frame duration (stills: `fps` or the default)."""
    from PIL import ImageSequence

    image = open_image(path)
    frames, durations_ms = [], []
    for frame in ImageSequence.Iterator(image):
        if max_frames is not None and len(frames) == max_frames:
            break
        frames.append(np.asarray(frame.convert("RGB")))
        durations_ms.append(frame.info.get("duration", 0))
    total_ms = sum(durations_ms)
    if len(frames) > 1 and total_ms > 0:
        return to_tensor(frames), 1000 * len(frames) / total_ms
    return to_tensor(frames), fps or DEFAULT_FPS


def read_av_video(path: Path, max_frames: int | None) -> tuple[Tensor, float]:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VaceError(f"{path} holds no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            frames = []
            for frame in container.decode(stream):
                if max_frames is not None and len(frames) == max_frames:
                    break
                # phone videos keep their orientation as metadata: turn the pixels (counter-clockwise degrees)
                frames.append(np.rot90(frame.to_ndarray(format="rgb24"), k=frame.rotation // 90))
    except av.error.FFmpegError as e:
        raise VaceError(f"Could not read video {path} ({e}): not a video file, or corrupt") from e
    if not frames:
        raise VaceError(f"Video {path} has no frames that could be decoded")
    return to_tensor([np.ascontiguousarray(f) for f in frames]), float(rate) if rate else DEFAULT_FPS


def read_folder(path: Path, max_frames: int | None, fps: float | None) -> tuple[Tensor, float]:
    files = [p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS + (".webp",)]
    files.sort(key=natural_key)
    if not files:
        raise VaceError(f"Folder {path} holds no images ({', '.join(IMAGE_EXTS)}, .webp): nothing to read")
    frames = [read_image(p)[..., :3] for p in files[:max_frames]]
    sizes = {tuple(f.shape) for f in frames}
    if len(sizes) > 1:
        raise VaceError(f"Images in {path} differ in size {sorted(sizes)[:3]}: frames must share one size")
    return torch.stack(frames), fps or DEFAULT_FPS


def read_video(
    path: str | Path, max_frames: int | None = None, fps: float | None = None
) -> tuple[Tensor, float]:
    """A video, animated image, still image or image folder -> (frames (T, H, W, 3) float32 0..1, fps).
    `fps` is the rate of image folders and still images (default 16); video files report their own.
    Alpha is dropped here; use `read_image` to keep it."""
    path = Path(path)
    check_exists(path)
    if path.is_dir():
        return read_folder(path, max_frames, fps)
    suffix = path.suffix.lower()
    if suffix in ANIMATED_IMAGE_EXTS:
        return read_animated_image(path, max_frames, fps)
    if suffix in IMAGE_EXTS:
        return read_image(path)[None, ..., :3], fps or DEFAULT_FPS
    return read_av_video(path, max_frames)


def frame_durations_ms(count: int, fps: float, step_ms: int) -> list[int]:
    """Per-frame durations in whole `step_ms` units whose running sum stays on the exact timeline, so the
    mean rate is `fps` although one frame lasts e.g. 62.5 ms at 16 fps (webp stores ms, gif 10 ms units)."""
    ends = [round((i + 1) * 1000 / fps / step_ms) * step_ms for i in range(count)]
    return [max(end - start, step_ms) for start, end in pairwise([0] + ends)]


class Mp4Writer:
    """h264 yuv420p (plays everywhere), frames appended as they come (long videos stream window by window).
    yuv420p needs even sizes: odd ones repeat their last row/column."""

    def __init__(self, path: Path, fps: float):
        import av

        self.container = av.open(str(path), mode="w")
        self.fps, self.stream = fps, None

    def write(self, frames: np.ndarray):
        """uint8 (T, H, W, 3) frames."""
        import av

        _, h, w, _ = frames.shape
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        if self.stream is None:
            self.stream = self.container.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1001))
            self.stream.width, self.stream.height = w + w % 2, h + h % 2
            self.stream.pix_fmt = "yuv420p"
            self.stream.options = {"crf": MP4_CRF}
        for frame in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            self.container.mux(self.stream.encode(frame))

    def close(self):
        if self.stream is not None:
            self.container.mux(self.stream.encode())  # flush the encoder's delayed frames
        self.container.close()


def write_mp4(path: Path, frames: np.ndarray, fps: float):
    writer = Mp4Writer(path, fps)
    try:
        writer.write(frames)
    finally:
        writer.close()


def write_animated_image(path: Path, frames: np.ndarray, fps: float):
    """webp (lossy, quality 90, alpha kept) or gif (256-colour palette), looping forever."""
    from PIL import Image

    mode = "RGBA" if frames.shape[-1] == 4 else "RGB"
    images = [Image.fromarray(f, mode) for f in frames]
    is_gif = path.suffix.lower() == ".gif"
    options = {} if is_gif else {"quality": 90, "method": 4}
    durations = frame_durations_ms(len(images), fps, step_ms=10 if is_gif else 1)
    images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0, **options)


def check_output(path: Path, fps: float) -> str:
    suffix = path.suffix.lower()
    if suffix not in WRITE_EXTS:
        raise VaceError(f"Cannot write {path.name!r}: choose an extension among {', '.join(WRITE_EXTS)}")
    if not fps > 0:
        raise VaceError(f"fps must be positive, got {fps}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return suffix


def check_frames(frames: Tensor):
    if frames.ndim != 4 or frames.shape[-1] not in (3, 4) or len(frames) == 0:
        raise VaceError(f"Expected frames (T, H, W, 3 or 4) with T >= 1, got shape {tuple(frames.shape)}")


def write_video(path: str | Path, frames: Tensor, fps: float):
    """(T, H, W, 3 or 4) float 0..1 -> .mp4 (h264), .webp (animated) or .gif at `fps`; mp4, gif drop alpha."""
    path = Path(path)
    check_frames(frames)
    suffix = check_output(path, fps)
    pixels = to_uint8(frames)
    with atomic_output(path) as temp:  # no partial file when the disk fills
        if suffix == ".mp4":
            write_mp4(temp, pixels[..., :3], fps)
        elif suffix == ".gif":
            write_animated_image(temp, pixels[..., :3], fps)
        else:
            write_animated_image(temp, pixels, fps)


class VideoStream:
    """Writes a video whose frames arrive in runs (`write(frames (T, H, W, 3))`, then `close()`): mp4 frames go
    to the encoder as they come (under a temporary name, renamed at close, so a failed write leaves no partial
    file); webp and gif (written whole by PIL) are gathered and written at close."""

    def __init__(self, path: str | Path, fps: float):
        self.path, self.fps = Path(path), fps
        self.suffix = check_output(self.path, fps)
        self.streaming = self.path.with_name(f".{self.path.stem}.streaming{self.suffix}")
        self.mp4 = Mp4Writer(self.streaming, fps) if self.suffix == ".mp4" else None
        self.pending: list[Tensor] = []

    def write(self, frames: Tensor):
        check_frames(frames)
        if self.mp4 is None:
            self.pending.append(frames)
            return
        try:
            self.mp4.write(to_uint8(frames)[..., :3])
        except OSError as e:
            raise VaceError(f"could not write {self.path}: {e.strerror or e}. Nothing was written.") from None

    def abort(self):
        """Drops what was written: the destination is left as it was (absent, or an earlier file untouched)."""
        self.pending.clear()
        if self.mp4 is not None:
            try:
                self.mp4.container.close()  # no flush: the frames are dropped
            except OSError:
                pass  # the encoder's own failure may be why the run stopped; its file goes either way
            self.streaming.unlink(missing_ok=True)

    def close(self):
        """Finishes the file with the frames written so far (all, or the windows done before an interrupt)."""
        if self.mp4 is None:
            if self.pending:
                write_video(self.path, torch.cat(self.pending), self.fps)
            return
        if self.mp4.stream is None:  # no frame came (the run failed first): no file, and the run's error stands
            self.mp4.container.close()
            self.streaming.unlink(missing_ok=True)
            return
        try:
            with atomic_output(self.path) as temp:
                self.mp4.close()
                os.replace(self.streaming, temp)
        finally:
            self.streaming.unlink(missing_ok=True)
