"""Builds UI-format workflow JSON (the frontend's save format) from a short Python description.

The example workflows in example_workflows/ are written by this builder (see `examples.py`) from the node
definitions a running ComfyUI reports in /object_info, so widget order, sockets and slots always match the
nodes; the integration test checks the shipped files against a fresh build.
"""

import uuid
from dataclasses import dataclass, field

from .workflow_api import extra_widget_values, has_upload, is_widget, ordered_inputs

COLUMN_WIDTH, ROW_GAP = 420, 40
# The frontend's node height (LGraphNode.computeSize): slots (inputs without a widget, or outputs) 20 px a row,
# each widget 20 + 4 px, 14 px margins; the title (30 px) sits above `pos`.
TITLE, SLOT, WIDGET, MARGIN = 30, 20, 24, 14
TEXTAREA = 110  # a multiline STRING (the prompt box)
# "Modern Node Design (Nodes 2.0)" (the newest frontend's Vue nodes, measured in 1.58.1) draws each widget 28 px
# tall and a custom node's source badge (24 px) under the title, so its nodes are up to 4 px a widget + 24 px taller
# than the classic layout above; the examples reserve the larger of the two
VUE_WIDGET, VUE_BADGE = 28, 24
# room for what nodes show beside their widgets: loaded media and result previews (the frontend draws them
# under the widgets), and this pack's panels (web/vace.js HEIGHTS + 4)
EXTRA = {"LoadImage": 280, "LoadImageMask": 280, "LoadVideo": 280, "PreviewImage": 280, "SaveVideo": 300,
         "SaveImage": 280, "VACESAM2Masks": 334, "VACELayoutAnnotator": 254,
         **dict.fromkeys(["VACEBuildVCU", "VACEFramePlacement", "VACEOutpaint", "VACEAddReferences",
                          "VACEComposeVCU", "VACEConceptDecouple", "VACESampler"], 294)}
NOTE_COLOR = {"color": "#432", "bgcolor": "#653"}


@dataclass
class Node:
    id: int
    type: str
    widgets: dict
    inputs: dict  # input name -> (source Node, output index)
    title: str | None = None
    models: list = field(default_factory=list)
    text: str | None = None  # MarkdownNote only
    depth: int = 0


def default_value(spec: list):
    options = spec[1] if len(spec) > 1 else {}
    if "default" in options:
        return options["default"]
    if isinstance(spec[0], list) or spec[0] == "COMBO":
        choices = spec[0] if isinstance(spec[0], list) else options.get("options", [])
        return choices[0] if choices else ""
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}[spec[0]]


def extra_values(spec: list) -> list:
    """What the frontend stores right after a widget: the seed's control mode."""
    return ["fixed"] * extra_widget_values(spec)


class Workflow:
    def __init__(self, object_info: dict, name: str):
        self.info, self.name = object_info, name
        self.nodes: list[Node] = []

    def add(self, type_: str, title: str | None = None, models: list | None = None, **kwargs) -> Node:
        """A node; keyword arguments are widget values or links (a Node, or (Node, output index))."""
        info = self.info[type_]
        specs = dict(ordered_inputs(info))
        unknown = set(kwargs) - set(specs)
        if unknown:
            raise KeyError(f"{type_} has no inputs {sorted(unknown)}; it has {list(specs)}")
        links = {k: (v, 0) if isinstance(v, Node) else v for k, v in kwargs.items() if isinstance(v, Node | tuple)}
        widgets = {k: v for k, v in kwargs.items() if k not in links}
        depth = 1 + max((src.depth for src, _ in links.values()), default=-1)
        node = Node(len(self.nodes) + 1, type_, widgets, links, title, models or [], depth=depth)
        self.nodes.append(node)
        return node

    def note(self, title: str, text: str) -> Node:
        node = Node(len(self.nodes) + 1, "MarkdownNote", {}, {}, title, text=text, depth=-1)
        self.nodes.append(node)
        return node

    def _sockets(self, node: Node) -> tuple[list[dict], list]:
        """(the node's `inputs` entries, its widgets_values)."""
        entries, values = [], []
        info = self.info[node.type]
        optional = set(info.get("input_order", {}).get("optional", info["input"].get("optional", {})))
        for name, spec in ordered_inputs(info):
            kind = "COMBO" if isinstance(spec[0], list) else spec[0]
            if is_widget(spec):
                value = node.widgets[name] if name in node.widgets else default_value(spec)
                values += [value, *extra_values(spec)]
                if name in node.inputs:
                    entries.append({"name": name, "type": kind, "widget": {"name": name}, "link": None})
            else:
                entry = {"name": name, "type": kind, "link": None}
                entries.append({**entry, "shape": 7} if name in optional else entry)
        return entries, values + ["image"] * has_upload(info)  # the upload button comes last (workflow_api)

    def to_json(self) -> dict:
        sockets = {n.id: self._sockets(n) for n in self.nodes if n.type != "MarkdownNote"}
        outputs = {n.id: [[] for _ in self.info[n.type]["output"]] for n in self.nodes if n.type != "MarkdownNote"}
        links = []
        for node in self.nodes:
            for name, (src, slot) in node.inputs.items():
                link_id = len(links) + 1
                entries = sockets[node.id][0]
                to_slot = next(i for i, e in enumerate(entries) if e["name"] == name)
                entries[to_slot]["link"] = link_id
                outputs[src.id][slot].append(link_id)
                links.append([link_id, src.id, slot, node.id, to_slot, self.info[src.type]["output"][slot]])
        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"comfyui-vace/{self.name}")), "revision": 0,
            "last_node_id": len(self.nodes), "last_link_id": len(links),
            "nodes": self._layout([self._node_json(n, sockets, outputs) for n in self.nodes]),
            "links": links, "groups": [], "config": {},
            "extra": {"ds": {"scale": 0.75, "offset": [40, 40]}}, "version": 0.4,
        }

    def _node_json(self, node: Node, sockets: dict, outputs: dict) -> dict:
        if node.type == "MarkdownNote":
            lines = sum(1 + len(line) // 50 for line in node.text.splitlines())
            return {"id": node.id, "type": "MarkdownNote", "pos": [0, 0], "size": [COLUMN_WIDTH - 60, 60 + 20 * lines],
                    "flags": {}, "order": 0, "mode": 0, "inputs": [], "outputs": [], "title": node.title,
                    "properties": {}, "widgets_values": [node.text], **NOTE_COLOR}
        info = self.info[node.type]
        entries, values = sockets[node.id]
        out = [{"name": name, "type": kind, "slot_index": i, "links": outputs[node.id][i]}
               for i, (name, kind) in enumerate(zip(info["output_name"], info["output"], strict=True))]
        properties = {"Node name for S&R": node.type, **({"models": node.models} if node.models else {})}
        size = [COLUMN_WIDTH - 60, self._height(node, entries, values, out)]
        result = {"id": node.id, "type": node.type, "pos": [0, 0], "size": size, "flags": {}, "order": 0, "mode": 0,
                  "inputs": entries, "outputs": out, "properties": properties, "widgets_values": values}
        return {**result, "title": node.title} if node.title else result

    def _height(self, node: Node, entries: list[dict], values: list, outputs: list) -> int:
        """The body height the frontend computes for the node, the larger of the classic canvas's and Nodes 2.0's,
        plus room for what it shows (EXTRA)."""
        info = self.info[node.type]
        specs = dict(ordered_inputs(info))
        multiline = sum(bool(is_widget(spec) and len(spec) > 1 and spec[1].get("multiline")) for spec in specs.values())
        rows = SLOT * max(sum("widget" not in e for e in entries), len(outputs), 1) + MARGIN + EXTRA.get(node.type, 0)
        classic = WIDGET * len(values) + (TEXTAREA - WIDGET) * multiline
        badge = VUE_BADGE * info.get("python_module", "nodes").startswith("custom_nodes")
        vue = VUE_WIDGET * len(values) + (TEXTAREA - VUE_WIDGET) * multiline + badge
        return rows + max(classic, vue)

    def _layout(self, nodes: list[dict]) -> list[dict]:
        """Columns by graph depth (notes first), stacked top to bottom with the title above each node; `order`
        is the execution order."""
        depth = {n.id: n.depth for n in self.nodes}
        tops: dict[int, float] = {}
        for order, node in enumerate(sorted(nodes, key=lambda n: (depth[n["id"]], n["id"]))):
            column = depth[node["id"]] + 1
            node["pos"] = [column * COLUMN_WIDTH, tops.get(column, 0) + TITLE]
            node["order"] = order
            tops[column] = node["pos"][1] + node["size"][1] + ROW_GAP
        return nodes
