"""The guidance add-ons as one flat set of knobs (the VACE Guidance node's inputs, the command line's flags and a
job file's record), turned into the sampler's settings objects. Defaults: every add-on off (plain CFG); the values
each one takes when switched on are its published defaults (see vace_core/nag.py and sampling/guiders.py)."""

import re
from dataclasses import dataclass

from .errors import VaceError
from .nag import ALPHA, NAG, TAU
from .sampling.guiders import AdaptiveProjectedGuidance, CFGZeroStar, SkipLayerGuidance

COMBINATIONS = ("cfg", "cfg-zero*", "apg")
HELP = {  # one text per knob: the node's tooltips and the command line's help
    'nag_scale': (
        "NAG (Normalized Attention Guidance) strength; 0 = off. 10 is the usual Wan value (kijai's nag_scale "
        '11: theirs counts one more). Works at cfg 1 with no extra pass: use it with CausVid / lightx2v.'),
    'nag_tau': 'NAG: caps how far the guided attention may grow (L1 ratio); 2.5 default.',
    'nag_alpha': 'NAG: blend of the guided attention into the plain one; 0.25 default.',
    'nag_start': 'NAG: fraction of the steps where it starts.',
    'nag_end': 'NAG: fraction of the steps where it stops.',
    'slg_blocks': "Skip-layer guidance: main blocks to skip, e.g. '9' (Wan2GP's default for Wan2.1); empty = off.",
    'slg_mode': (
        'uncond: the negative pass skips the blocks (Wan2GP, kijai; needs cfg > 1). third: an extra pass with'
        " the blocks skipped (ComfyUI's SkipLayerGuidanceDiT; also at cfg 1)."),
    'slg_start': 'SLG: fraction of the steps where it starts (Wan2GP: 10%).',
    'slg_end': 'SLG: fraction of the steps where it stops (Wan2GP: 90%).',
    'slg_scale': 'SLG third-pass mode: its scale (ComfyUI: 3).',
    'slg_rescale': (
        "SLG third-pass mode: rescales towards the conditional output's spread (ComfyUI's rescaling_scale; 0 "
        '= off).'),
    'combination': (
        'How the two CFG passes combine: plain cfg, CFG-Zero* (optimised scale, zero first steps) or APG '
        '(adaptive projected guidance). Need cfg > 1.'),
    'zero_init_steps': 'CFG-Zero*: steps whose velocity is zeroed (its Wan2.1 setting: 2 of 50).',
    'apg_eta': (
        'APG: weight of the guidance part parallel to the prediction (paper: 0; 1 with no momentum and no '
        'threshold = CFG).'),
    'apg_norm_threshold': "APG: caps the guidance's norm (0 = off; grows with the video's size).",
    'apg_momentum': 'APG: running average of the guidance across steps (paper: -0.5).',
}


def parse_blocks(text: str) -> tuple[int, ...]:
    """'9, 10' -> (9, 10); '' -> () (SLG off)."""
    if not re.fullmatch(r"[\d,\s]*", text or ""):
        raise VaceError(f"SLG blocks {text!r}: give main block indices separated by commas, e.g. '9' or '9, 10'")
    return tuple(int(b) for b in re.findall(r"\d+", text or ""))


@dataclass(frozen=True)
class GuidanceOptions:
    """nag_scale 0: NAG off; slg_blocks '': SLG off; combination 'cfg': plain CFG (else CFG-Zero* or APG)."""

    nag_scale: float = 0.0
    nag_tau: float = TAU
    nag_alpha: float = ALPHA
    nag_start: float = 0.0
    nag_end: float = 1.0
    slg_blocks: str = ""
    slg_mode: str = "uncond"
    slg_start: float = 0.1
    slg_end: float = 0.9
    slg_scale: float = 3.0
    slg_rescale: float = 0.0
    combination: str = "cfg"
    zero_init_steps: int = 2
    apg_eta: float = 0.0
    apg_norm_threshold: float = 0.0
    apg_momentum: float = -0.5

    def settings(self) -> dict:
        """The SamplerSettings fields: nag, slg, cfg_zero_star, apg (None where off)."""
        if self.combination not in COMBINATIONS:
            raise VaceError(f"combination {self.combination!r}: choose one of {', '.join(COMBINATIONS)}")
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
