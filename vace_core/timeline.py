"""A timeline for long video: a prompt, references, an end frame and a seed per window, and seamless loops.

- Prompts: a list (one per window in order; the last repeats for the windows after it), or prompts from frames
  on ("frame: prompt" lines): window i takes the last prompt starting at or before its first new frame (the
  first frame it generates rather than carries). Window i's positive text is its prompt's features. With
  `blend`, a window whose prompt differs from the window before reads the two prompts' features interpolated
  by the share of the window that is carried over from the previous window:
      text_i = β · f_{i−1} + (1 − β) · f_i,      β = carried frames / window frames
  (both zero-padded to one length first; the DiT pads every prompt with zeros to 512, so padding changes
  nothing). β is 5/81 for the default window: a nudge that softens the cut, not a crossfade.
- References per window: from window w on (until the next window given), they replace the VCU's references
  (every context stream).
- End frames per window: the image is kept (mask 0) as the window's last frame, as first/last-frame
  interpolation does, and written into the video exactly.
- Seeds per window: default seed + i (as without a timeline).
- Loop (autoregressive): the last `overlap` frames of the video are the video's first frames, kept (mask 0) at
  the end of the last window, so it bridges from the previous window to the start; the output's last frames
  equal its first exactly (play video[:-overlap] in a loop). The seam's cost: those `overlap` frames are
  duplicates (not new content), and the last window has frames kept at both ends, so it generates fewer new
  frames and its motion is constrained to join both (it needs at least one frame between them).
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import VaceError
from .vcu import VCU, keep_frames, with_references
from .vcu.pixels import to_video

LINE = re.compile(r"^\s*(\d+)\s*:\s*(.*)$")


def parse_prompts(text: str) -> tuple[list[str], list[int] | None]:
    """One prompt per line, or "frame: prompt" lines (all of them, frames increasing from 0) -> (prompts, the
    frame each starts at, or None for one prompt per window)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise VaceError("the timeline has no prompts: write one prompt per line, or 'frame: prompt' lines")
    matches = [LINE.match(line) for line in lines]
    if not any(matches):
        return [line.strip() for line in lines], None
    if not all(matches):
        bad = next(line for line, m in zip(lines, matches, strict=True) if m is None)
        raise VaceError(f"timeline line {bad!r} has no frame: write every line as 'frame: prompt' (e.g. '0: a "
                        "cat walks'), or none of them")
    starts = [int(m.group(1)) for m in matches]
    if starts[0] != 0 or any(b <= a for a, b in zip(starts, starts[1:], strict=False)):
        raise VaceError(f"timeline frames {starts} must start at 0 and increase")
    return [m.group(2).strip() for m in matches], starts


@dataclass
class Timeline:
    """Per-window direction (see the module doc). prompts: features (1, L, D) each; starts: the frame each
    prompt starts at (None: one per window); references: window -> IMAGEs (H, W, 3) 0..1, from that window on;
    end_frames:
    window -> IMAGE (H, W, 3) 0..1; seeds: window -> seed. Window numbers from 0; negative ones count from the
    end (-1: the last window)."""

    prompts: list[Tensor] = field(default_factory=list)
    starts: list[int] | None = None
    blend: bool = False
    references: dict[int, list[Tensor]] = field(default_factory=dict)
    end_frames: dict[int, Tensor] = field(default_factory=dict)
    seeds: dict[int, int] = field(default_factory=dict)
    loop: bool = False

    def resolved(self, windows: int) -> "Timeline":
        """Negative window numbers counted from the end (-1: the last window)."""
        def fix(table):
            return {w + windows if w < 0 else w: v for w, v in table.items()}
        return Timeline(self.prompts, self.starts, self.blend, fix(self.references), fix(self.end_frames),
                        fix(self.seeds), self.loop)

    def check(self, windows: int, mode: str):
        if mode == "fused":
            raise VaceError("a timeline directs windows one after another, but fused windows are denoised together "
                            "with one prompt: use autoregressive or hierarchical mode")
        if self.loop and mode != "autoregressive":
            raise VaceError("a loop keeps the first frames at the end of the last window: use autoregressive mode")
        if self.loop and windows < 2:
            raise VaceError("a loop needs at least two windows (the first frames must exist before the last "
                            "window): make the video longer than one window")
        if self.starts is not None and len(self.starts) != len(self.prompts):
            raise VaceError(f"{len(self.prompts)} timeline prompts but {len(self.starts)} start frames")
        for what, table in (("references", self.references), ("end frame", self.end_frames), ("seed", self.seeds)):
            if bad := [w for w in table if not 0 <= w < windows]:
                raise VaceError(f"timeline {what} for window {bad[0]}, but the video has {windows} windows "
                                f"(0 to {windows - 1})")

    def prompt_index(self, i: int, first_new: int) -> int | None:
        """Which prompt window i reads (first_new: the video frame it starts generating at); None: no prompts."""
        if not self.prompts:
            return None
        if self.starts is None:
            return min(i, len(self.prompts) - 1)
        return max(p for p, start in enumerate(self.starts) if start <= first_new)

    def positive(self, index: int | None, previous: int | None, beta: float, default: Tensor) -> Tensor:
        """Window text: its prompt's features, blended with the previous window's prompt (see the doc)."""
        if index is None:
            return default
        text = self.prompts[index]
        if not self.blend or previous is None or torch.equal(self.prompts[previous], text):
            return text
        before = self.prompts[previous]
        length = max(text.shape[1], before.shape[1])
        pad = [F.pad(t, (0, 0, 0, length - t.shape[1])).to(text) for t in (before, text)]
        return beta * pad[0] + (1 - beta) * pad[1]

    def seed(self, i: int, default: int) -> int:
        return self.seeds.get(i, default)

    def with_window_prompt(self, window: int, text: Tensor, used: Sequence[int | None], default: Tensor):
        """This timeline with window `window` reading `text` instead: prompts become one per window (window j
        reads prompt j; `used`: the prompt index each window read, None for `default`)."""
        prompts = [default if p is None else self.prompts[p] for p in used]
        prompts[window] = text
        return Timeline(prompts, None, self.blend, self.references, self.end_frames, self.seeds, self.loop)

    def edit_units(self, i: int, units: list[VCU], free: list[VCU], pinned: dict[int, Tensor]):
        """The window's VCUs with its references and its pinned frames (window index -> pixels (3, H, W) in
        [-1, 1], kept with mask 0) -> (units, free)."""
        if since := [w for w in self.references if w <= i]:
            refs = self.references[max(since)]
            units, free = ([with_references(VCU(u.frames, u.masks, [], u.kind), refs) for u in us]
                           for us in (units, free))
        if pinned:
            index, pixels = list(pinned), torch.stack(list(pinned.values()), 1)
            units = [keep_frames(u, index, pixels) for u in units]
        return units, free


def pinned_frames(timeline: Timeline | None, i: int, last: bool, positions: Sequence[int], kept: int,
                  video: Tensor, overlap: int, size: tuple[int, int]) -> dict[int, Tensor]:
    """Window-relative index -> pixels (3, H, W) kept at the window's end: its end frame, and in the last window
    of a loop the video's first `overlap` frames."""
    if timeline is None:
        return {}
    pinned = {}
    if i in timeline.end_frames:
        pinned[len(positions) - 1] = _image(timeline.end_frames[i], size)
    if timeline.loop and last:
        pinned.update({len(positions) - overlap + j: video[:, j] for j in range(overlap)})
    if pinned and min(pinned) <= kept:
        raise VaceError(f"window {i} keeps {kept} frames at its start and {len(positions) - min(pinned)} at its end "
                        f"of {len(positions)}: nothing is left to generate. Lengthen the video or shorten the overlap")
    return pinned


def _image(image: Tensor, size: tuple[int, int]) -> Tensor:
    """An IMAGE (H, W, 3) 0..1 at the video's size -> (3, H, W) in [-1, 1]."""
    pixels = to_video(image, "end frame")
    if pixels.shape[1] != 1 or tuple(pixels.shape[2:]) != tuple(size):
        raise VaceError(f"an end frame must be one image at the video's size {size[0]}x{size[1]}, got "
                        f"{tuple(image.shape)}")
    return pixels[:, 0]
