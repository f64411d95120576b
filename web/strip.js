// Preview strips from the backend (nodes/preview.py): one JPEG per strip, frames side by side, each
// `frame_width` px wide. A strip viewer draws one frame of it on a canvas; the slider scrubs.
import { api } from "../../scripts/api.js";

export const PREVIEW_KEY = "vace_preview";

export function viewUrl(entry) {
  const params = new URLSearchParams({ filename: entry.filename, subfolder: entry.subfolder ?? "", type: entry.type });
  return api.apiURL(`/view?${params}`);
}

export function loadImage(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error(`could not load ${url}`));
    img.src = url;
  });
}

// Draws frame `i` of a loaded strip scaled into the canvas (letterboxed); returns the drawn rectangle.
export function drawStripFrame(ctx, strip, entry, i) {
  const { canvas } = ctx;
  const fw = entry.frame_width, fh = entry.frame_height;
  const scale = Math.min(canvas.width / fw, canvas.height / fh);
  const w = fw * scale, h = fh * scale, x = (canvas.width - w) / 2, y = (canvas.height - h) / 2;
  ctx.drawImage(strip, i * fw, 0, fw, fh, x, y, w, h);
  return { x, y, w, h };
}

export function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "style") Object.assign(node.style, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

// The VCU preview: per stream, the frames with the masks overlaid (magenta = generate, green = keep) under
// a slider, and the references beside them.
export class StripViewer {
  constructor() {
    // a fixed 2:1 drawing area: frames of any aspect are letterboxed into it, so the widget keeps its height
    this.canvas = el("canvas", { width: 400, height: 200, class: "vace-strip-canvas",
                                 style: { width: "100%", aspectRatio: "2 / 1", background: "#222",
                                          borderRadius: "4px" } });
    this.slider = el("input", { type: "range", min: 0, max: 0, value: 0, class: "vace-strip-slider",
                                style: { width: "100%" } });
    this.label = el("div", { class: "vace-strip-label", style: { fontSize: "11px", color: "#bbb" } });
    this.refs = el("div", { class: "vace-strip-refs", style: { display: "flex", gap: "4px", marginTop: "2px" } });
    this.legend = el("div", { style: { fontSize: "11px", color: "#bbb" } }, [
      el("span", { style: { color: "#ff30a0" } }, ["■ generate "]), el("span", { style: { color: "#28c878" } },
        ["■ keep"])]);
    this.element = el("div", { class: "vace-preview", style: { display: "flex", flexDirection: "column",
                                                                  gap: "2px", overflow: "hidden" } },
                      [this.canvas, this.slider, this.label, this.legend, this.refs]);
    this.slider.addEventListener("input", () => this.draw());
    this.element.addEventListener("pointerdown", (e) => e.stopPropagation());
    this.strip = null;
  }

  async show(entries) {
    const frames = entries.find((e) => e.kind === "frames" && (e.stream ?? 0) === 0);
    if (!frames) return;
    this.entry = frames;
    this.strip = await loadImage(viewUrl(frames));
    this.slider.max = frames.indices.length - 1;
    this.slider.value = Math.min(this.slider.value, this.slider.max);
    this.refs.replaceChildren(...entries.filter((e) => e.kind === "references").map((e) =>
      el("img", { src: viewUrl(e), class: "vace-ref", style: { height: "48px", maxWidth: "100%",
                                                                 objectFit: "contain" } })));
    this.draw();
  }

  draw() {
    if (!this.strip) return;
    const i = Number(this.slider.value);
    const ctx = this.canvas.getContext("2d");
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    drawStripFrame(ctx, this.strip, this.entry, i);
    this.label.textContent = `frame ${this.entry.indices[i]} (${i + 1} of ${this.entry.indices.length} shown)`;
  }
}
