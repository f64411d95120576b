"""A command-line run checked before its work, as the nodes check theirs: the frame size against what VACE was
trained at, the RAM the run's frames take, the device memory one window's sampling takes, and a warning when
the run is hours of work."""

import logging

import torch

from .errors import VaceError
from .long_video import LongVideoSettings, plan_windows
from .memory import sampling_bytes
from .vae.tiling import free_memory
from .vcu.unit import check_trained_size

log = logging.getLogger("vace")

GIB = 2**30
# bytes per output pixel a run holds at its peak (1001 frames at 128x128, tests/test_cli_hardening.py): a temporal
# extension builds its VCU from three full-length ones (68-76 B/px with the output video, measured on different
# machines); text-to-video holds the VCU (16) and the output (12). 80 covers what was measured.
RUN_BYTES_PER_PIXEL = 80
# windows beyond which a run is hours of work: the official 1.3B takes about 5 min per 81-frame window at 832x480
# on an A100 (50 steps)
MANY_WINDOWS = 12
MINUTES_PER_WINDOW = 5


def check_frames(length: int, height: int, width: int) -> None:
    """Refuses, before anything is read or loaded, a size VACE was never trained near, or frames the RAM cannot
    hold."""
    check_trained_size(height, width, f"--width {width} --height {height}")
    needed, free = RUN_BYTES_PER_PIXEL * length * height * width, free_memory(torch.device("cpu"))
    if needed > free:
        raise VaceError(f"{length} frames at {width}x{height} need about {needed / GIB:.1f} GiB of RAM for the "
                        f"frames, masks and output video, but {free / GIB:.1f} GiB are free. Generate fewer frames "
                        "(--length / --extend-to) or a smaller size (--width/--height; VACE was trained at 832x480 "
                        "and 1280x720, 81 frames)")


def warn_when_long(length: int, long: LongVideoSettings, steps: int) -> None:
    """Says, before the work, when a run is many windows: hours, not minutes."""
    windows, window = len(plan_windows(length, long)), long.window
    if windows > MANY_WINDOWS:
        log.warning("VACE: %d frames is %d windows of %d frames, %d sampling steps in all: %dx the work of one "
                    "video (the official 1.3B takes about %d min per window at 832x480 on an A100): hours of work. "
                    "Press Ctrl-C to stop; the output file is only written when the run finishes.",
                    length, windows, window, windows * steps, windows, MINUTES_PER_WINDOW)


def check_device(model, latent_shape, guided: bool, streams: int, device) -> None:
    """Refuses a sampling run whose activations and latents cannot fit on `device` (free memory there), before
    the first step. latent_shape (T, h, w) of one window's latent, references included."""
    device = torch.device(device)
    needed = sampling_bytes(model, latent_shape, guided, streams)
    free = free_memory(device)
    if needed > free:
        raise VaceError(f"sampling a {latent_shape[0]}x{latent_shape[1]}x{latent_shape[2]} latent needs about "
                        f"{needed / GIB:.1f} GiB on {device}, but {free / GIB:.1f} GiB are free there. Use fewer "
                        "frames per window (--window), a smaller size, or --cfg 1 (halves the batch).")
