"""Settings declared once: every knob's default, range (min/max/step, or choices) and help.

A settings dataclass (sampler, long video, regional prompts, step cache, Wan2.2 experts, speed switches, the
command line's task size) declares each knob with `knob(...)` as its field's default; `knobs(cls)` reads them
back as `Knob`s. The ComfyUI node inputs (nodes/inputs.py) and the command line's flags (`add_flag`) are built
from these declarations, and `check(obj)` holds a dataclass's values to them, so the three cannot drift
(tests/test_settings.py compares every node input and flag with its knob).
"""

import argparse
import math
from dataclasses import dataclass, field, fields

from .errors import VaceError

KEY = "vace_knob"


@dataclass(frozen=True)
class Knob:
    """One setting: its name, default, range and help. A range is min/max (step: the widget's increment, a
    hint), or choices; None bounds are open. The kind (bool, int, float, str) is the default's, or str for
    choices."""

    name: str
    default: object
    help: str
    min: float | None = None
    max: float | None = None
    step: float | None = None
    choices: tuple | None = None
    kind: type | None = None
    optional: bool = False  # None is a value too ("not set": the knob's docs say what that means)

    def __post_init__(self):
        if self.kind is None:
            kind = str if self.choices else type(self.default)
            object.__setattr__(self, "kind", kind)

    def range_text(self) -> str:
        if self.choices:
            return "one of " + ", ".join(map(str, self.choices))
        low = "" if self.min is None else _number(self.min)
        high = "" if self.max is None else _number(self.max)
        return f"from {low} to {high}" if low and high else f">= {low}" if low else f"<= {high}" if high else "any"

    def problem(self, value, ceiling: bool = True) -> str | None:
        """Why `value` is not a valid value of this knob, or None (ceiling False: any value above min too)."""
        if value is None and self.optional:
            return None
        if self.choices:
            return None if value in self.choices else f"{value!r} is not {self.range_text()}"
        if self.kind is str:  # free text (a list, a curve): its own parser checks it
            return None if isinstance(value, str) else f"{value!r} is not text"
        if self.kind is bool:
            return None if isinstance(value, bool) else f"{value!r} is not true or false"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (self.kind is int and not float(value).is_integer()):
            return f"{value!r} is not a {'whole ' if self.kind is int else ''}number"
        if not math.isfinite(value):
            return f"{value!r} is not a finite number"
        if (self.min is not None and value < self.min) or (ceiling and self.max is not None and value > self.max):
            return f"{_number(value)} is outside the range {self.range_text()}"
        return None

    def check(self, value, label: str | None = None, ceiling: bool = True):
        if (problem := self.problem(value, ceiling)) is not None:
            raise VaceError(f"{label or self.name}: {problem}")

    def parse(self, text: str):
        """A command-line value -> this knob's kind, checked (argparse `type`: its message names the flag)."""
        try:
            value = self.kind(text)
            problem = self.problem(value)
        except ValueError:
            problem = f"{text!r} is not a {'whole ' if self.kind is int else ''}number"
        if problem is not None:
            where = "" if "range" in problem else f"; the range is {self.range_text()}"
            raise argparse.ArgumentTypeError(f"{problem}{where} (as on the node)")
        return value


def _number(value) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def knob(default, help: str, *, min=None, max=None, step=None, choices=None, kind=None, optional=False):
    """A dataclass field declaring a knob (use as the field's default)."""
    spec = {"help": help, "min": min, "max": max, "step": step, "choices": tuple(choices) if choices else None,
            "kind": kind, "optional": optional}
    return field(default=default, metadata={KEY: spec})


def knobs(cls) -> dict[str, Knob]:
    """The declared knobs of a settings dataclass (or of an instance's class), by field name, in field order."""
    return {f.name: Knob(f.name, f.default, **f.metadata[KEY]) for f in fields(cls) if KEY in f.metadata}


def check(obj, labels: dict[str, str] | None = None, open_above: tuple[str, ...] = ()) -> None:
    """Every declared knob of dataclass `obj` holds a valid value, else a VaceError naming the knob (or its label
    in `labels`) and its range. open_above: knobs whose maximum is the users' (node, command line) but whose
    library callers may go higher."""
    for name, spec in knobs(obj).items():
        spec.check(getattr(obj, name), (labels or {}).get(name), ceiling=name not in open_above)


def add_flag(parser, spec: Knob, flag: str | None = None, default=..., help_suffix: str = "", **kwargs):
    """An argparse option for `spec`: checked against its range when parsed (before anything loads); a bool knob
    (default off) is a switch. `default` replaces the knob's default where the command line has its own
    (None: a preset's); flag defaults to --the-knob-name."""
    flag = flag or "--" + spec.name.replace("_", "-")
    text = f"{spec.help}{help_suffix}".replace("%", "%%")  # argparse formats help with %: "10%" is literal
    if spec.kind is bool:
        return parser.add_argument(flag, action="store_true", help=text, **kwargs)
    default = spec.default if default is ... else default
    if spec.choices:
        return parser.add_argument(flag, choices=spec.choices, default=default, help=text, **kwargs)
    if spec.kind is str:
        return parser.add_argument(flag, default=default, help=text, **kwargs)
    return parser.add_argument(flag, type=spec.parse, default=default, help=f"{text} ({spec.range_text()})",
                               **kwargs)
