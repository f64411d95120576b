"""Sampler presets: the official VACE settings and the fast paths users report for step-distilled LoRAs.

Nothing here is hidden: a preset only fills in steps / guidance / shift / solver (explicit values win) and
says which LoRA strength users pair with it. The numbers are the ones reported by users of the CausVid and
lightx2v LoRAs on Wan2.1 (DESIGN.md §10); guidance 1 runs no negative pass (the negative prompt is ignored).
"""

from typing import NamedTuple

from ..errors import VaceError


class Preset(NamedTuple):
    steps: int
    guidance: float
    shift: float
    solver: str
    lora_strength: dict[int, float]  # steps -> the LoRA strength users pair with that many steps
    note: str


PRESETS = {
    "official": Preset(50, 5.0, 16.0, "unipc", {}, "Wan2.1-VACE's own settings (no speed LoRA)"),
    "causvid": Preset(8, 1.0, 7.0, "euler", {4: 0.9, 6: 0.7, 8: 0.6, 10: 0.45, 12: 0.3},
                      "CausVid LoRA: 4-12 steps, strength 0.8-1.0 at 4 steps down to 0.3 at 12"),
    "lightx2v": Preset(4, 1.0, 5.0, "lcm", {4: 1.0, 6: 1.0, 8: 1.0},
                       "lightx2v (StepDistill / CFG-distill) LoRA: 4-8 steps, strength 1, LCM or Euler"),
}


def preset(name: str) -> Preset:
    if name not in PRESETS:
        raise VaceError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def lora_strength(name: str, steps: int) -> float | None:
    """The strength users pair with the preset's LoRA at `steps` (the nearest listed step count), or None."""
    table = preset(name).lora_strength
    return table[min(table, key=lambda s: (abs(s - steps), s))] if table else None
