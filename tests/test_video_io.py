"""Video I/O round trips on small synthetic clips: frame count, size, fps and a pixel error bound per codec;
reading every input kind (mp4, webm, gif, webp, image folders, still images, RGBA images); clear errors."""

import math
import struct

import av
import numpy as np
import pytest
import torch
from PIL import Image

from vace_core.errors import VaceError
from vace_core.video_io import DEFAULT_FPS, read_image, read_video, write_video

T, H, W = 9, 48, 64


def clip(t: int = T, h: int = H, w: int = W) -> torch.Tensor:
    """A smooth colour pattern panning right by 2 px per frame (video-like content, not noise)."""
    y, x = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    frames = [torch.stack([0.5 + 0.4 * torch.sin((x - 2 * i) / 9), 0.5 + 0.4 * torch.cos(y / 7),
                           0.5 + 0.3 * torch.sin((x - 2 * i + y) / 13)], -1) for i in range(t)]
    return torch.stack(frames)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return -10 * math.log10(((a - b) ** 2).mean().item())


# (extension, minimum PSNR in dB) for the lossy codecs, about 3 dB under what this clip measures (mp4: 34.9 to
# 35.4 with h264 crf 19 and 4:2:0 chroma on saturated colours; webp quality 90: 40.1; gif palette: 28.7)
LOSSY = [("mp4", 32.0), ("webp", 37.0), ("gif", 26.0)]


@pytest.mark.parametrize("ext,min_psnr", LOSSY)
@pytest.mark.parametrize("fps", [16.0, 30000 / 1001])
def test_round_trip_keeps_frames_size_and_fps(tmp_path, ext, min_psnr, fps):
    frames = clip()
    write_video(tmp_path / f"clip.{ext}", frames, fps)
    back, back_fps = read_video(tmp_path / f"clip.{ext}")
    assert back.shape == frames.shape and back.dtype == torch.float32
    assert 0 <= back.min() and back.max() <= 1
    assert psnr(back, frames) > min_psnr
    # mp4 keeps the exact rate; webp stores whole ms and gif 10 ms units per frame (mean rate within 1%)
    assert back_fps == pytest.approx(fps, rel=1e-9 if ext == "mp4" else 1e-2)


def test_mp4_is_h264_yuv420p_and_odd_sizes_are_padded(tmp_path):
    frames = clip(h=H - 1, w=W - 3)  # 47 x 61
    write_video(tmp_path / "odd.mp4", frames, 16)
    with av.open(str(tmp_path / "odd.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
    back, _ = read_video(tmp_path / "odd.mp4")
    assert back.shape == (T, H, W - 2, 3)  # the last row / column repeated up to even sizes
    assert psnr(back[:, : H - 1, : W - 3], frames) > 32
    assert psnr(back[:, -1], back[:, -2]) > 30  # the added row repeats its neighbour


def test_webp_keeps_alpha(tmp_path):
    frames = torch.cat([clip(), torch.linspace(0, 1, W).expand(T, H, W)[..., None]], -1)
    write_video(tmp_path / "alpha.webp", frames, 16)
    with Image.open(tmp_path / "alpha.webp") as image:
        assert image.mode == "RGBA" and image.n_frames == T
        alpha = np.asarray(image.convert("RGBA"))[..., 3] / 255
    assert np.abs(alpha - frames[0, ..., 3].numpy()).max() < 0.02
    assert read_video(tmp_path / "alpha.webp")[0].shape == (T, H, W, 3)  # read_video drops alpha


def test_reads_webm_and_max_frames(tmp_path):
    frames = (clip() * 255).round().to(torch.uint8).numpy()
    with av.open(str(tmp_path / "clip.webm"), "w") as container:
        stream = container.add_stream("libvpx-vp9", rate=24)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    back, fps = read_video(tmp_path / "clip.webm")
    assert back.shape == (T, H, W, 3) and fps == 24 and psnr(back, clip()) > 30
    short, _ = read_video(tmp_path / "clip.webm", max_frames=4)
    assert torch.equal(short, back[:4])


def test_mp4_rotation_metadata_is_applied(tmp_path):
    """Phone videos store pixels landscape plus a display matrix; readers must turn them (as ffmpeg does)."""
    frames = torch.zeros(3, 16, 32, 3)
    frames[:, :8, :8] = 1  # white square top-left
    write_video(tmp_path / "plain.mp4", frames, 16)
    data = (tmp_path / "plain.mp4").read_bytes()
    # the track header's display matrix (16.16 fixed point): identity -> 90 degrees clockwise (rotate=90)
    identity = struct.pack(">9i", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    rotate_90 = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
    at = data.index(identity, data.index(b"tkhd"))
    (tmp_path / "rotated.mp4").write_bytes(data[:at] + rotate_90 + data[at + 36:])
    back, _ = read_video(tmp_path / "rotated.mp4")
    assert back.shape == (3, 32, 16, 3)
    assert back[0, :8, 8:].mean() > 0.9 and back[0, 8:].mean() < 0.1  # the square is now top-right


def test_image_folder_in_natural_order(tmp_path):
    frames = (clip(t=11) * 255).round().to(torch.uint8).numpy()
    for i, frame in enumerate(frames):  # frame_2 must come before frame_10
        Image.fromarray(frame).save(tmp_path / f"frame_{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    back, fps = read_video(tmp_path)
    assert fps == DEFAULT_FPS and torch.equal(back, torch.from_numpy(frames).float() / 255)
    assert read_video(tmp_path, max_frames=3, fps=24)[0].shape[0] == 3
    assert read_video(tmp_path, fps=24)[1] == 24


def test_still_image_is_one_frame_and_read_image_keeps_alpha(tmp_path):
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, np.linspace(0, 255, W).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "ref.png")
    image = read_image(tmp_path / "ref.png")
    assert image.shape == (H, W, 4) and torch.equal(image, torch.from_numpy(rgba).float() / 255)
    Image.fromarray(rgba[..., :3]).save(tmp_path / "ref.jpg", quality=95)
    assert read_image(tmp_path / "ref.jpg").shape == (H, W, 3)
    frames, fps = read_video(tmp_path / "ref.png", fps=8)
    assert frames.shape == (1, H, W, 3) and fps == 8
    assert torch.equal(frames[0], image[..., :3])


def test_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(VaceError, match="not found.*nothing.mp4"):
        read_video(tmp_path / "nothing.mp4")
    with pytest.raises(VaceError, match="not found.*nothing.png"):
        read_image(tmp_path / "nothing.png")
    (tmp_path / "fake.mp4").write_bytes(b"this is not a video" * 100)
    with pytest.raises(VaceError, match="Could not read video.*fake.mp4"):
        read_video(tmp_path / "fake.mp4")
    (tmp_path / "fake.gif").write_bytes(b"GIF89a broken")
    with pytest.raises(VaceError, match="Could not read image.*fake.gif"):
        read_video(tmp_path / "fake.gif")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VaceError, match="holds no images"):
        read_video(tmp_path / "empty")
    with pytest.raises(VaceError, match="choose an extension among .mp4, .webp, .gif"):
        write_video(tmp_path / "out.avi", clip(), 16)
    with pytest.raises(VaceError, match=r"Expected frames \(T, H, W, 3 or 4\)"):
        write_video(tmp_path / "out.mp4", clip()[0], 16)
    sizes = tmp_path / "sizes"
    sizes.mkdir()
    Image.new("RGB", (8, 8)).save(sizes / "0.png")
    Image.new("RGB", (8, 10)).save(sizes / "1.png")
    with pytest.raises(VaceError, match="differ in size"):
        read_video(sizes)
