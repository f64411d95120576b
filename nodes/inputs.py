"""Node inputs built from vace_core's declared knobs (vace_core/settings.py): one default, range and tooltip for
the node, the command line and the dataclass."""

from comfy_api.latest import io

from ..vace_core.settings import Knob


def widget(spec: Knob, name: str | None = None, *, labels: dict | None = None, **extra):
    """The V3 input of `spec`, named `name` (default: the knob's name). labels: the node's option labels -> the
    knob's choices, where the node shows other words (saved workflows hold the labels). extra: what only the
    node has (optional, control_after_generate...)."""
    name = name or spec.name
    extra = {"tooltip": spec.help} | extra
    if spec.choices:
        labels = labels or {c: c for c in spec.choices}
        default = next(label for label, value in labels.items() if value == spec.default)
        return io.Combo.Input(name, options=list(labels), default=default, **extra)
    if spec.kind is str:
        return io.String.Input(name, **{"default": spec.default} | extra)
    if spec.kind is bool:
        return io.Boolean.Input(name, **{"default": spec.default} | extra)
    number = io.Int if spec.kind is int else io.Float
    declared = {"default": spec.default, "min": spec.min, "max": spec.max, "step": spec.step}
    return number.Input(name, **{k: v for k, v in declared.items() if v is not None} | extra)

