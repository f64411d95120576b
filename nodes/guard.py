"""One input guard for every node of the pack, read from each node's V3 schema (nothing per node).

ComfyUI 0.3.64 checks neither V3 combo values nor NaN floats (NaN passes its min/max tests), and no one
checks tensors, so a graph sent through the API can feed garbage that turns into a wrong video reported as
a success. `guard(node_class)` adds:
- at validation (/prompt refuses the graph, the node untouched): combo values must be among the options
  (model-file dropdowns: the file must be openable, see files.py), float widgets finite and within their
  min/max (ComfyUI skips its own min/max for inputs a validate_inputs takes, so they are checked here);
- at execution: inputs the request gave that the node does not have (ComfyUI drops them silently), the same
  widget checks (values may arrive through links), IMAGE and MASK tensors finite and
  in 0..1, binary masks where the input means one (`BinaryMaskInput`), LATENT samples finite.
Cost at execution: one sum and one min/max pass per IMAGE/MASK (a fraction of a second for 81 frames at
832x480 on a CPU).
"""

import inspect
import math
from functools import wraps

import torch
from comfy_api.internal import first_real_override
from comfy_api.latest import io

from ..vace_core.errors import VaceError
from .files import FileInput

RANGE_TOLERANCE = 1e-3  # float rounding in other nodes (1.0000001) is not an error
AMBIGUOUS = (0.1, 0.9)  # mask values clearly neither keep nor generate
MAX_AMBIGUOUS = 0.01  # antialiased or brush-softened edges stay well under this fraction of the pixels


class BinaryMaskInput(io.Mask.Input):
    """A MASK that the node binarises at 0.5 (VACE: > 0.5 generate, <= 0.5 keep): soft masks are refused."""


def _widget_problem(inp, value) -> str | None:
    kind = inp.get_io_type()
    if value is None:  # a linked widget: its value is known only at execution
        return None
    if isinstance(inp, FileInput):
        return inp.check(value)
    if kind == "COMBO" and value not in inp.options:
        return f"{inp.id}: {value!r} is not one of the valid values {list(inp.options)}"
    if kind == "FLOAT":
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"{inp.id}: {value!r} is not a finite number"
        if inp.min is not None and value < inp.min or inp.max is not None and value > inp.max:
            return f"{inp.id}: {value} is outside its range {inp.min}..{inp.max}"
    return None


def _nonfinite(name: str, x: torch.Tensor, what: str) -> str | None:
    if not x.is_floating_point() or torch.isfinite(x.sum(dtype=torch.float32)):  # NaN and inf survive a sum
        return None
    bad = x.numel() - int(torch.isfinite(x).sum())
    if bad:
        return (f"{name}: {bad} of {x.numel()} {what} values are NaN or infinite; an upstream node produced "
                "invalid values (check its inputs and settings)")
    return None


def _pixels_problem(inp, x: torch.Tensor) -> str | None:
    what = "mask" if inp.get_io_type() == "MASK" else "pixel"
    if problem := _nonfinite(inp.id, x, what):
        return problem
    if x.numel() == 0:
        return None
    low, high = (float(v) for v in torch.aminmax(x.float()))
    if low < -RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
        hint = " They look like 0..255 values: divide by 255." if high > 2 else ""
        kind = inp.get_io_type()
        return f"{inp.id}: {what} values run from {low:.4g} to {high:.4g}, but ComfyUI's {kind} is 0..1.{hint}"
    if isinstance(inp, BinaryMaskInput):
        ambiguous = float(((x > AMBIGUOUS[0]) & (x < AMBIGUOUS[1])).float().mean())
        if ambiguous > MAX_AMBIGUOUS:
            return (f"{inp.id}: the mask is not binary ({ambiguous:.1%} of its pixels lie between {AMBIGUOUS[0]} "
                    f"and {AMBIGUOUS[1]}: a soft, feathered or probability mask). VACE thresholds masks at 0.5: "
                    "values <= 0.5 keep the pixel, values > 0.5 generate it. Threshold it first (e.g. ComfyUI's "
                    "ThresholdMask at 0.5); feather the paste-back in VACE Decode instead.")
    return None


def _value_problem(inp, value) -> str | None:
    kind = inp.get_io_type()
    if kind in ("IMAGE", "MASK") and isinstance(value, torch.Tensor):
        return _pixels_problem(inp, value)
    if kind == "LATENT" and isinstance(value, dict) and isinstance(value.get("samples"), torch.Tensor):
        return _nonfinite(inp.id, value["samples"], "latent")
    if isinstance(inp, io.WidgetInput):
        return _widget_problem(inp, value)
    return None


def _inputs(node_cls) -> dict:
    """The node's inputs by name, from a fresh schema (file lists change while the server runs)."""
    return {inp.id: inp for inp in node_cls.define_schema().inputs}


def problems(node_cls, values: dict, widgets_only: bool = False) -> list[str]:
    inputs = _inputs(node_cls)
    found = []
    for name, value in values.items():
        inp = inputs.get(name)
        if inp is None or (widgets_only and not isinstance(inp, io.WidgetInput)):
            continue
        if problem := _value_problem(inp, value):
            found.append(problem)
    return found


def _checked_names(node_cls) -> list[str]:
    """Widgets ComfyUI does not check well enough itself: combos and floats."""
    return [inp.id for inp in node_cls.define_schema().inputs if inp.get_io_type() in ("COMBO", "FLOAT")]


def _add_validation(node_cls) -> None:
    own = first_real_override(node_cls, "validate_inputs")
    own_names = inspect.getfullargspec(own).args[1:] if own is not None else []
    names = list(dict.fromkeys([*_checked_names(node_cls), *own_names]))

    def validate_inputs(cls, **values):
        found = problems(cls, values, widgets_only=True)
        if own is not None and not found:
            result = own.__func__(cls, **{k: v for k, v in values.items() if k in own_names})
            if result is not True:
                found.append(str(result))
        return True if not found else "; ".join(found)

    # ComfyUI passes a validate_inputs only the inputs it names (and skips its own min/max for those)
    params = [inspect.Parameter("cls", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    params += [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None) for n in names]
    validate_inputs.__signature__ = inspect.Signature(params)
    node_cls.validate_inputs = classmethod(validate_inputs)


def _with_prompt(node_cls) -> None:
    """The node's schema asks ComfyUI for the prompt and its own id (hidden inputs), so `undeclared` can see what
    the request sent it."""
    define = node_cls.define_schema.__func__

    @wraps(define)
    def define_schema(cls):
        schema = define(cls)
        schema.hidden = list(dict.fromkeys([*(schema.hidden or []), io.Hidden.prompt, io.Hidden.unique_id]))
        return schema
    node_cls.define_schema = classmethod(define_schema)


def undeclared(node_cls) -> list[str]:
    """Inputs the request gave this node that it does not have (an API prompt's `prompt_5` on a four-region node):
    ComfyUI drops them without a word, so the user's intent would be lost."""
    hidden = getattr(node_cls, "hidden", None)
    prompt, node = (hidden.prompt, hidden.unique_id) if hidden is not None else (None, None)
    if not isinstance(prompt, dict) or node not in prompt:
        return []
    return sorted(set(prompt[node].get("inputs", {})) - set(_inputs(node_cls)))


def _guard_execute(node_cls) -> None:
    execute = node_cls.execute.__func__

    def check(cls, values):
        if extra := undeclared(cls):
            one = len(extra) == 1
            raise VaceError(f"{', '.join(extra)}: {'is not an input' if one else 'are not inputs'} of "
                            f"{cls.define_schema().display_name or cls.__name__}, so {'it' if one else 'they'} would "
                            f"be ignored. Its inputs: {', '.join(_inputs(cls))}")
        if found := problems(cls, values):
            raise VaceError("; ".join(found))

    # ComfyUI passes inputs by name; positional arguments (direct calls) pass through unchecked
    if inspect.iscoroutinefunction(execute):
        @wraps(execute)
        async def guarded(cls, *args, **values):
            check(cls, values)
            return await execute(cls, *args, **values)
    else:
        @wraps(execute)
        def guarded(cls, *args, **values):
            check(cls, values)
            return execute(cls, *args, **values)
    node_cls.execute = classmethod(guarded)


def guard(node_cls: type[io.ComfyNode]) -> type[io.ComfyNode]:
    """Adds the checks above to a node class (once) and returns it."""
    if not node_cls.__dict__.get("_vace_guarded", False):
        _with_prompt(node_cls)
        _add_validation(node_cls)
        _guard_execute(node_cls)
        node_cls._vace_guarded = True
    return node_cls
