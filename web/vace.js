// The VACE pack in ComfyUI's frontend: VCU previews, the SAM2 points editor, the layout box editor, widgets
// shown only when they apply, and the example workflows in a sensible order in the template browser.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { BoxEditor, PointsEditor, widgetValue } from "./editors.js";
import { PREVIEW_KEY, StripViewer } from "./strip.js";

// Heights (px) of the widgets below; tests/integration/workflow_builder.py reserves the same room.
export const HEIGHTS = { preview: 290, points: 330, boxes: 250 };
const PREVIEW_NODES = ["VACEBuildVCU", "VACEFramePlacement", "VACEOutpaint", "VACEAddReferences", "VACEComposeVCU",
                       "VACEConceptDecouple", "VACESampler"];
const EDITORS = { VACESAM2Masks: [PointsEditor, HEIGHTS.points], VACELayoutAnnotator: [BoxEditor, HEIGHTS.boxes] };
// widgets that apply only when another input is connected / a switch is off
const STREAM_WIDGETS = { vcu_2: ["strength_2", "start_2", "end_2"], vcu_3: ["strength_3", "start_3", "end_3"] };
// this pack's folder name under custom_nodes (the template browser's module name)
const MODULE = decodeURIComponent(new URL(import.meta.url).pathname.split("/").at(-2));

function addPanel(node, name, element, height) {
  const widget = node.addDOMWidget(name, "vace_" + name, element, {
    serialize: false, hideOnZoom: false, getMinHeight: () => height, getMaxHeight: () => height,
  });
  widget.serialize = false; // kept out of widgets_values (it is the last widget, so no gap either)
  return widget;
}

function fitHeight(node) {
  const size = node.computeSize();
  node.setSize([Math.max(node.size[0], size[0]), size[1]]);
  node.setDirtyCanvas?.(true, true);
}

function setHidden(node, names, hidden) {
  let changed = false;
  for (const widget of node.widgets ?? []) {
    if (names.includes(widget.name) && !!widget.hidden !== hidden) {
      widget.hidden = hidden;
      changed = true;
    }
  }
  if (changed) fitHeight(node);
}

function updateStreams(node) {
  for (const [input, names] of Object.entries(STREAM_WIDGETS)) {
    const slot = node.inputs?.find((i) => i.name === input);
    setHidden(node, names, slot?.link == null);
  }
}

function updateOutpaintLength(node) {
  setHidden(node, ["length"], !!widgetValue(node, "length_from_input"));
}

function chain(object, method, after) {
  const original = object[method];
  object[method] = function (...args) {
    const result = original?.apply(this, args);
    after.apply(this, args);
    return result;
  };
}

app.registerExtension({
  name: "vace.nodes",

  async setup() {
    // The template browser lists a pack's workflows in the server's file order; ours are numbered by task.
    const original = api.getWorkflowTemplates.bind(api);
    api.getWorkflowTemplates = async () => {
      const templates = await original();
      templates[MODULE]?.sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
      return templates;
    };
  },

  async beforeRegisterNodeDef(nodeType, nodeData) {
    const name = nodeData.name;
    if (PREVIEW_NODES.includes(name)) {
      chain(nodeType.prototype, "onNodeCreated", function () {
        this.vacePreview = new StripViewer();
        addPanel(this, "vcu_preview", this.vacePreview.element, HEIGHTS.preview);
      });
      chain(nodeType.prototype, "onExecuted", function (output) {
        if (output?.[PREVIEW_KEY]) this.vacePreview.show(output[PREVIEW_KEY]);
      });
    }
    if (EDITORS[name]) {
      const [Editor, height] = EDITORS[name];
      chain(nodeType.prototype, "onNodeCreated", function () {
        this.vaceEditor = new Editor(this);
        addPanel(this, "editor", this.vaceEditor.element, height);
        for (const widget of this.widgets) {
          if (widget.name !== "editor") chain(widget, "callback", () => this.vaceEditor.draw());
        }
        requestAnimationFrame(() => this.vaceEditor.refresh?.() ?? this.vaceEditor.draw());
      });
      chain(nodeType.prototype, "onConfigure", function () {
        requestAnimationFrame(() => this.vaceEditor.refresh?.() ?? this.vaceEditor.draw());
      });
      chain(nodeType.prototype, "onConnectionsChange", function () {
        this.vaceEditor.refresh?.();
      });
      chain(nodeType.prototype, "onExecuted", function (output) {
        if (output?.[PREVIEW_KEY]) this.vaceEditor.showRun?.(output[PREVIEW_KEY]);
      });
    }
    if (name === "VACESampler") {
      chain(nodeType.prototype, "onNodeCreated", function () { updateStreams(this); });
      chain(nodeType.prototype, "onConfigure", function () { updateStreams(this); });
      chain(nodeType.prototype, "onConnectionsChange", function () { updateStreams(this); });
    }
    if (name === "VACEOutpaint") {
      chain(nodeType.prototype, "onNodeCreated", function () {
        const toggle = this.widgets.find((w) => w.name === "length_from_input");
        chain(toggle, "callback", () => updateOutpaintLength(this));
        updateOutpaintLength(this);
      });
      chain(nodeType.prototype, "onConfigure", function () { updateOutpaintLength(this); });
    }
  },
});
