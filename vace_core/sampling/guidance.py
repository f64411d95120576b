"""Classifier-free guidance and the per-stream context strength schedule."""

from typing import NamedTuple

import torch

from ..errors import VaceError
from ..settings import Knob
from .curves import Curve, parse_curve

# one context stream's knobs (ContextStream is a tuple, so they are declared here rather than on fields)
STREAM_KNOBS = {
    "strength": Knob("strength", 1.0, "How strongly this VCU steers the video (context scale).", min=0.0, max=10.0,
                     step=0.01),
    "start": Knob("start", 0.0, "Fraction of the steps where this VCU starts to apply.", min=0.0, max=1.0, step=0.01),
    "end": Knob("end", 1.0, "Fraction of the steps where this VCU stops applying.", min=0.0, max=1.0, step=0.01),
}
# its optional schedules (text: `curves.parse_curve`; empty = flat)
CURVE_KNOBS = {
    "curve": Knob("curve", "", "Optional strength schedule over the steps, multiplying strength: keyframes "
                  "'0:1.0, 0.3:0.6, 1:0.2' (step fraction:value, interpolated) or one value per step '1, 0.8, 0.6'. "
                  "Empty: flat."),
    "frame_weights": Knob("frame_weights", "", "Optional weights per latent frame (reference latents first): "
                          "keyframes over the frames ('0:1, 0.2:0' fades a reference after the first frames) or one "
                          "value per latent frame. Empty: every frame 1."),
}


def cfg(cond_v: torch.Tensor, uncond_v: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: uncond + scale * (cond - uncond). Scale 1 is the conditional output
    (callers skip the negative-prompt pass then); the official VACE scale is 5.0."""
    return uncond_v + scale * (cond_v - uncond_v)


class ContextStream(NamedTuple):
    """How strongly one context stream (one VCU) steers the DiT, and during which part of the run.

    start and end are fractions of the steps: the stream is active at step i of n (i from 0) when
    start <= i / n < end, so (0, 1) is every step, and (0, 0.5) with (0.5, 1) split the steps without
    overlap. A plain (strength, start, end) tuple works too.

    curve: the strength's schedule over the steps (`curves`: keyframes "0:1.0, 0.3:0.6, 1:0.2" or one value per
    step), multiplying `strength` inside the window; frames: weights per latent frame (reference latents first),
    e.g. "0:1, 0.2:0" for a reference that fades after the first frames. None: flat.
    """

    strength: float = STREAM_KNOBS["strength"].default
    start: float = STREAM_KNOBS["start"].default
    end: float = STREAM_KNOBS["end"].default
    curve: Curve | str | None = None
    frames: Curve | str | None = None


def as_stream(stream) -> ContextStream:
    """A ContextStream (from a tuple too) with its curves parsed."""
    stream = ContextStream(*stream)
    return stream._replace(curve=parse_curve(stream.curve), frames=parse_curve(stream.frames))


def context_strengths(streams, step: int, steps: int) -> list[float]:
    """Each stream's strength at `step` (0 <= step < steps): strength x its curve's value inside [start, end),
    else 0."""
    if not 0 <= step < steps:
        raise VaceError(f"step {step} is outside the run of {steps} steps (0 to {steps - 1})")
    strengths = []
    for k, stream in enumerate(map(as_stream, streams)):
        strength, start, end, curve, _ = stream
        if not 0 <= start <= end <= 1:
            raise VaceError(
                f"context stream {k}: start {start} and end {end} must be fractions of the steps with "
                "0 <= start <= end <= 1 (for example 0 and 1 for the whole run)"
            )
        if not start <= step / steps < end:
            strengths.append(0.0)
        else:
            strengths.append(float(strength) if curve is None else float(strength) * curve.at_step(step, steps))
    return strengths


def frame_weights(streams, frames: int) -> list[torch.Tensor | None]:
    """Each stream's per-latent-frame weights (frames,) float32, or None for a stream without them."""
    return [None if s.frames is None else s.frames.over_frames(frames) for s in map(as_stream, streams)]
