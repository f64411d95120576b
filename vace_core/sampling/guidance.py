"""Classifier-free guidance and the per-stream context strength schedule."""

from typing import NamedTuple

import torch

from ..errors import VaceError
from ..settings import Knob

# one context stream's knobs (ContextStream is a tuple, so they are declared here rather than on fields)
STREAM_KNOBS = {
    "strength": Knob("strength", 1.0, "How strongly this VCU steers the video (context scale).", min=0.0, max=10.0,
                     step=0.01),
    "start": Knob("start", 0.0, "Fraction of the steps where this VCU starts to apply.", min=0.0, max=1.0, step=0.01),
    "end": Knob("end", 1.0, "Fraction of the steps where this VCU stops applying.", min=0.0, max=1.0, step=0.01),
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
    """

    strength: float = STREAM_KNOBS["strength"].default
    start: float = STREAM_KNOBS["start"].default
    end: float = STREAM_KNOBS["end"].default


def context_strengths(streams, step: int, steps: int) -> list[float]:
    """Each stream's strength at `step` (0 <= step < steps): its strength inside [start, end), else 0."""
    if not 0 <= step < steps:
        raise VaceError(f"step {step} is outside the run of {steps} steps (0 to {steps - 1})")
    strengths = []
    for k, (strength, start, end) in enumerate(streams):
        if not 0 <= start <= end <= 1:
            raise VaceError(
                f"context stream {k}: start {start} and end {end} must be fractions of the steps with "
                "0 <= start <= end <= 1 (for example 0 and 1 for the whole run)"
            )
        strengths.append(float(strength) if start <= step / steps < end else 0.0)
    return strengths
