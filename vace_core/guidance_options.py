"""The guidance add-ons as one flat set of knobs (the VACE Guidance node's inputs and the command line's flags, both
built from the declarations), turned into the sampler's settings objects. Defaults: every add-on off (plain CFG); the
values each one takes when switched on are its published defaults (see vace_core/nag.py and sampling/guiders.py)."""

import re
from dataclasses import dataclass

from .errors import VaceError
from .nag import ALPHA, NAG, TAU
from .sampling.guiders import SLG_MODES, AdaptiveProjectedGuidance, CFGZeroStar, SkipLayerGuidance
from .settings import check, knob

COMBINATIONS = ("cfg", "cfg-zero*", "apg")


def parse_blocks(text: str) -> tuple[int, ...]:
    """'9, 10' -> (9, 10); '' -> () (SLG off)."""
    if not re.fullmatch(r"[\d,\s]*", text or ""):
        raise VaceError(f"SLG blocks {text!r}: give main block indices separated by commas, e.g. '9' or '9, 10'")
    return tuple(int(b) for b in re.findall(r"\d+", text or ""))


@dataclass(frozen=True)
class GuidanceOptions:
    """nag_scale 0: NAG off; slg_blocks '': SLG off; combination 'cfg': plain CFG (else CFG-Zero* or APG). Each knob
    is declared once here: the VACE Guidance node's inputs and the command line's flags are built from it."""

    nag_scale: float = knob(
        0.0, "NAG (Normalized Attention Guidance) strength; 0 = off. 10 is the usual Wan value (kijai's nag_scale 11: "
        "theirs counts one more). Works at cfg 1 with no extra pass: use it with CausVid / lightx2v.",
        min=0.0, max=50.0, step=0.5)
    nag_tau: float = knob(TAU, "NAG: caps how far the guided attention may grow (L1 ratio); 2.5 default.",
                          min=1.0, max=10.0, step=0.1)
    nag_alpha: float = knob(ALPHA, "NAG: blend of the guided attention into the plain one; 0.25 default.",
                            min=0.0, max=1.0, step=0.01)
    nag_start: float = knob(0.0, "NAG: fraction of the steps where it starts.", min=0.0, max=1.0, step=0.01)
    nag_end: float = knob(1.0, "NAG: fraction of the steps where it stops.", min=0.0, max=1.0, step=0.01)
    slg_blocks: str = knob("", "Skip-layer guidance: main blocks to skip, e.g. '9' (Wan2GP's default for Wan2.1); "
                           "empty = off.")
    slg_mode: str = knob(
        "uncond", "uncond: the negative pass skips the blocks (Wan2GP, kijai; needs cfg > 1). third: an extra pass "
        "with the blocks skipped (ComfyUI's SkipLayerGuidanceDiT; also at cfg 1).", choices=SLG_MODES)
    slg_start: float = knob(0.1, "SLG: fraction of the steps where it starts (Wan2GP: 10%).",
                            min=0.0, max=1.0, step=0.01)
    slg_end: float = knob(0.9, "SLG: fraction of the steps where it stops (Wan2GP: 90%).", min=0.0, max=1.0, step=0.01)
    slg_scale: float = knob(3.0, "SLG third-pass mode: its scale (ComfyUI: 3).", min=0.0, max=10.0, step=0.1)
    slg_rescale: float = knob(0.0, "SLG third-pass mode: rescales towards the conditional output's spread "
                              "(ComfyUI's rescaling_scale; 0 = off).", min=0.0, max=10.0, step=0.01)
    combination: str = knob(
        "cfg", "How the two CFG passes combine: plain cfg, CFG-Zero* (optimised scale, zero first steps) or APG "
        "(adaptive projected guidance). Need cfg > 1.", choices=COMBINATIONS)
    zero_init_steps: int = knob(2, "CFG-Zero*: steps whose velocity is zeroed (its Wan2.1 setting: 2 of 50).",
                                min=0, max=100)
    apg_eta: float = knob(0.0, "APG: weight of the guidance part parallel to the prediction (paper: 0; 1 with no "
                          "momentum and no threshold = CFG).", min=-10.0, max=10.0, step=0.01)
    apg_norm_threshold: float = knob(0.0, "APG: caps the guidance's norm (0 = off; grows with the video's size).",
                                     min=0.0, max=1000.0, step=0.1)
    apg_momentum: float = knob(-0.5, "APG: running average of the guidance across steps (paper: -0.5).",
                               min=-0.99, max=0.99, step=0.01)

    def __post_init__(self):
        check(self)

    def settings(self) -> dict:
        """The SamplerSettings fields: nag, slg, cfg_zero_star, apg (None where off)."""
        blocks = parse_blocks(self.slg_blocks)
        return {
            "nag": NAG(self.nag_scale, self.nag_tau, self.nag_alpha, self.nag_start, self.nag_end)
            if self.nag_scale else None,
            "slg": SkipLayerGuidance(blocks, self.slg_start, self.slg_end, self.slg_mode, self.slg_scale,
                                     self.slg_rescale) if blocks else None,
            "cfg_zero_star": CFGZeroStar(self.zero_init_steps) if self.combination == "cfg-zero*" else None,
            "apg": AdaptiveProjectedGuidance(self.apg_eta, self.apg_norm_threshold, self.apg_momentum)
            if self.combination == "apg" else None,
        }
