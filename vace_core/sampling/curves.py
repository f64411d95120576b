"""Strength curves: a VCU stream's strength per step, or per latent frame, as kijai's per-step VACE strength lists
and keyframed schedules do.

A curve is written either as keyframes "0:1.0, 0.3:0.6, 1:0.2" (position:value, interpolated linearly between
neighbours and held flat before the first and after the last), or as one value per item "1.0, 0.8, 0.6" (exactly
one per step, or per latent frame). A position may repeat to make a jump: "0:0, 0.3:0, 0.3:1" is 0 before 0.3 and
1 from 0.3 on (the later keyframe holds at the position itself, as a stream's start/end window includes its start
and excludes its end).

Positions: step i of n sits at i / n (as the start/end windows, so keyframes "0:0, s:0, s:1, e:1, e:0" are exactly
the window [s, e)); latent frame j of T sits at j / (T - 1) (0 the first frame, reference latents first, 1 the
last).
"""

import math
from bisect import bisect_right
from dataclasses import dataclass

import torch

from ..errors import VaceError


@dataclass(frozen=True)
class Curve:
    """Keyframes ((position, value), ...) sorted by position, or values (one per item); `spec` is the text it was
    parsed from (what job files and node inputs store)."""

    keyframes: tuple[tuple[float, float], ...] = ()
    values: tuple[float, ...] = ()
    spec: str = ""

    def at(self, position: float) -> float:
        """The keyframed value at `position` (module docstring)."""
        positions = [p for p, _ in self.keyframes]
        k = bisect_right(positions, position) - 1
        if k < 0:
            return self.keyframes[0][1]
        if k == len(positions) - 1:
            return self.keyframes[-1][1]
        (p0, v0), (p1, v1) = self.keyframes[k], self.keyframes[k + 1]
        return v0 + (position - p0) / (p1 - p0) * (v1 - v0)

    def item(self, i: int, n: int, what: str, position: float) -> float:
        """Item i of n: its listed value, or the keyframed value at `position`."""
        if not self.values:
            return self.at(position)
        if len(self.values) != n:
            raise VaceError(f"the {what} curve {self.spec!r} lists {len(self.values)} values for {n} {what}s: give one "
                            f"per {what}, or keyframes such as '0:1.0, 1:0.5'")
        return self.values[i]

    def at_step(self, step: int, steps: int) -> float:
        return self.item(step, steps, "step", step / steps)

    def over_frames(self, frames: int) -> torch.Tensor:
        """(frames,) float32 weights, one per latent frame."""
        return torch.tensor([self.item(j, frames, "latent frame", j / max(frames - 1, 1)) for j in range(frames)])


def _number(text: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise VaceError(f"strength curve {spec!r}: {text.strip()!r} is not a number. Write keyframes "
                        "'0:1.0, 0.3:0.6, 1:0.2' (position:value) or one value per step '1.0, 0.8, 0.6'")
    return value


def parse_curve(spec) -> Curve | None:
    """A curve from its text (module docstring), a list of values, a list of (position, value) pairs, or a Curve;
    None or "" for no curve."""
    if spec is None or isinstance(spec, Curve):
        return spec
    if not isinstance(spec, str):  # values, or (position, value) pairs: written out exactly (repr)
        spec = ", ".join(f"{float(x[0])!r}:{float(x[1])!r}" if isinstance(x, (tuple, list)) else repr(float(x))
                         for x in spec)
    spec = spec.strip()
    if not spec:
        return None
    parts = [p.strip() for p in spec.replace(";", ",").split(",") if p.strip()]
    if all(":" in p for p in parts):
        keyframes = tuple(sorted(((_number(p.split(":")[0], spec), _number(p.split(":")[1], spec)) for p in parts),
                                 key=lambda kv: kv[0]))  # stable: repeated positions keep their order (jumps)
        if any(not 0 <= p <= 1 for p, _ in keyframes):
            raise VaceError(f"strength curve {spec!r}: keyframe positions are fractions from 0 to 1")
        return Curve(keyframes=keyframes, spec=spec)
    if any(":" in p for p in parts):
        raise VaceError(f"strength curve {spec!r} mixes keyframes (position:value) and plain values: use one form")
    return Curve(values=tuple(_number(p, spec) for p in parts), spec=spec)
