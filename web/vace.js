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
// widgets that apply only when another input is connected: a VCU stream's settings, on every node that takes streams
const STREAM_KNOBS = ["strength", "start", "end", "curve", "frame_weights"];
const STREAM_WIDGETS = { vcu_2: STREAM_KNOBS.map((k) => k + "_2"), vcu_3: STREAM_KNOBS.map((k) => k + "_3") };
const STREAM_NODES = ["VACESampler", "VACELongVideoSampler", "VACESaveJob"];
// widgets that apply only for some values of others: node -> [[widgets, hidden(node)], ...]; the watched widgets'
// changes update them
const noBlocks = (node) => !/\d/.test(widgetValue(node, "slg_blocks") ?? "");
const SWITCHED = {
  VACEOutpaint: { watch: ["length_from_input"], rules: [[["length"], (n) => !!widgetValue(n, "length_from_input")]] },
  VACEGuidance: {
    watch: ["nag_scale", "slg_blocks", "slg_mode", "combination"],
    rules: [
      [["nag_tau", "nag_alpha", "nag_start", "nag_end"], (n) => !widgetValue(n, "nag_scale")],
      [["slg_mode", "slg_start", "slg_end"], noBlocks],
      [["slg_scale", "slg_rescale"], (n) => noBlocks(n) || widgetValue(n, "slg_mode") !== "third"],
      [["zero_init_steps"], (n) => widgetValue(n, "combination") !== "cfg-zero*"],
      [["apg_eta", "apg_norm_threshold", "apg_momentum"], (n) => widgetValue(n, "combination") !== "apg"],
    ],
  },
};
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

function updateSwitched(node, rules) {
  for (const [names, hidden] of rules) setHidden(node, names, hidden(node));
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
    if (STREAM_NODES.includes(name)) {
      chain(nodeType.prototype, "onNodeCreated", function () { updateStreams(this); });
      chain(nodeType.prototype, "onConfigure", function () { updateStreams(this); });
      chain(nodeType.prototype, "onConnectionsChange", function () { updateStreams(this); });
    }
    if (SWITCHED[name]) {
      const { watch, rules } = SWITCHED[name];
      chain(nodeType.prototype, "onNodeCreated", function () {
        for (const widget of this.widgets.filter((w) => watch.includes(w.name))) {
          chain(widget, "callback", () => updateSwitched(this, rules));
        }
        updateSwitched(this, rules);
      });
      chain(nodeType.prototype, "onConfigure", function () { updateSwitched(this, rules); });
    }
  },
});
