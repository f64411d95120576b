"""Composition of two VCUs into one, with VACE's rules (its composition annotator).

Each VCU has a kind: "control" (a control video), "repaint" (inpaint/outpaint: kept pixels and a mask) or
"extension" (given frames at some indices). Frames blend linearly, so the rules hold in [-1, 1] as in 0..255.
References of both are kept, a's first. The result's kind is the shared kind, else "repaint" when
either is a repaint, else "extension", so compositions chain.
"""

from ..errors import VaceError
from .unit import VCU


def compose(a: VCU, b: VCU) -> VCU:
    if a.size != b.size:
        raise VaceError(f"cannot compose VCUs of sizes {a.size} and {b.size}: build them at one size")
    if a.length != b.length:
        raise VaceError(f"cannot compose VCUs of {a.length} and {b.length} frames: the longer one's extra frames "
                        "would be lost. Build both at one length (or extend the shorter one).")
    f1, f2, m1, m2 = a.frames, b.frames, a.masks, b.masks
    kinds = (a.kind, b.kind)
    if a.kind == "extension":  # b fills what a generates
        frames, masks = f2 * m1 + f1 * (1 - m1), m1 * m2
    elif kinds in (("repaint", "control"), ("control", "repaint")):  # the control drives the repainted area
        rep, ctl = (f1, f2) if a.kind == "repaint" else (f2, f1)
        mask = m1 if a.kind == "repaint" else m2
        frames, masks = rep * (1 - mask) + ctl * mask, mask
    else:  # b's generated area overrides a: (repaint|control, extension), (repaint, repaint), (control, control)
        frames, masks = f1 * (1 - m2) + f2 * m2, m1 * (1 - m2) + m2
    kind = a.kind if a.kind == b.kind else "repaint" if "repaint" in kinds else "extension"
    return VCU(frames, masks, [*a.references, *b.references], kind)
