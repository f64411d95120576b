"""UI-format workflow JSON (what the ComfyUI frontend saves and loads) -> API format (what /prompt runs).

The frontend does this conversion in the browser with the node definitions from /object_info; this module
does the same in Python so tests can queue the shipped example workflows unchanged:

- `widgets_values` are positional, in the node's input order (required, then optional); sockets take none.
  A seed with `control_after_generate` carries one extra value right after its own ("fixed", "randomize",
  ...). A node with an upload button (LoadImage's image, LoadImageMask's image, LoadVideo's file) stores the
  button's value ("image") last, after every other widget: the frontend adds the button as an extra input
  `upload` after the node's inputs (its Comfy.UploadImage extension), e.g. LoadImageMask saves
  ["mask.png", "red", "image"].
- A widget turned into an input keeps its slot in `widgets_values`; its link wins.
- Notes are dropped; muted nodes (mode 2) are dropped; bypassed nodes (mode 4) pass their input of the
  same type through.
"""

NOTE_TYPES = {"Note", "MarkdownNote"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload")
MUTED, BYPASSED = 2, 4


class WorkflowError(ValueError):
    """The workflow cannot be converted (unknown node type, dangling link, too few widget values)."""


def ordered_inputs(info: dict) -> list[tuple[str, list]]:
    """(name, spec) of a node's inputs in the order the frontend lays out its widgets."""
    order = info.get("input_order") or {k: list(v) for k, v in info["input"].items()}
    return [(name, info["input"][group][name]) for group in ("required", "optional") for name in order.get(group, [])]


def is_widget(spec: list) -> bool:
    return isinstance(spec[0], list) or spec[0] in WIDGET_TYPES


def extra_widget_values(spec: list) -> int:
    """Values the frontend stores right after this widget's own: the seed's control mode."""
    options = spec[1] if len(spec) > 1 else {}
    return int(bool(options.get("control_after_generate")))


def has_upload(info: dict) -> bool:
    """Whether the frontend gives the node an upload button (stored as the last widget value): a required
    combo input with an upload flag."""
    return any(isinstance(spec[0], list | str) and len(spec) > 1 and any(spec[1].get(f) for f in UPLOAD_FLAGS)
               for spec in info["input"].get("required", {}).values())


def widget_inputs(node: dict, info: dict) -> dict:
    values = list(node.get("widgets_values") or [])
    inputs, i = {}, 0
    for name, spec in ordered_inputs(info):
        if not is_widget(spec):
            continue
        if i >= len(values):
            raise WorkflowError(f"node {node['id']} ({node['type']}) has {len(values)} widget values; "
                                f"its definition needs one for {name!r} (at position {i})")
        inputs[name] = values[i]
        i += 1 + extra_widget_values(spec)
    return inputs


def to_api(workflow: dict, object_info: dict) -> dict:
    """The API-format prompt {node id: {"class_type", "inputs", "_meta"}} of a UI-format workflow."""
    nodes = {n["id"]: n for n in workflow["nodes"]}
    links = {link[0]: link for link in workflow["links"]}

    def source(link_id: int) -> list:
        """[node id, output slot] feeding a link, looking through bypassed nodes."""
        if link_id not in links:
            raise WorkflowError(f"link {link_id} is not in the workflow's links")
        _, node_id, slot, _, _, kind = links[link_id]
        node = nodes[node_id]
        if node.get("mode", 0) == BYPASSED:
            through = [i for i in node.get("inputs", []) if i.get("type") == kind and i.get("link") is not None]
            if not through:
                raise WorkflowError(f"bypassed node {node_id} ({node['type']}) has no {kind} input to pass on")
            return source(through[0]["link"])
        return [str(node_id), slot]

    api = {}
    for node in nodes.values():
        if node["type"] in NOTE_TYPES or node.get("mode", 0) in (MUTED, BYPASSED):
            continue
        if node["type"] not in object_info:
            raise WorkflowError(f"node {node['id']} has type {node['type']!r}, which this ComfyUI does not have "
                                "(a custom node pack missing?)")
        inputs = widget_inputs(node, object_info[node["type"]])
        for socket in node.get("inputs", []):
            if socket.get("link") is not None:
                inputs[socket["name"]] = source(socket["link"])
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs,
                                "_meta": {"title": node.get("title", node["type"])}}
    return api
