// Click and drag editors that write the nodes' existing string widgets (so saved workflows and API prompts
// keep working unchanged): SAM2 points / box, and the Layout Annotator's start and end boxes.
import { api } from "../../scripts/api.js";
import { drawStripFrame, el, loadImage, viewUrl } from "./strip.js";

const FPS = 16; // VACE's frame rate: a video upstream is seeked to frame / FPS
const CLICK_RADIUS = 10; // px on screen: a drag shorter than this is a click
const MEDIA_NODES = { LoadImage: "image", LoadImageMask: "image", LoadVideo: "file" };

export function setWidget(node, name, value) {
  const widget = node.widgets?.find((w) => w.name === name);
  if (!widget || widget.value === value) return;
  widget.value = value;
  widget.callback?.(value);
  node.setDirtyCanvas?.(true, true);
}

export function widgetValue(node, name) {
  return node.widgets?.find((w) => w.name === name)?.value;
}

function parseGroups(text, per) {
  return String(text ?? "").split(/[;\n]/).map((g) => g.split(",").map(Number))
    .filter((g) => g.length === per && g.every(Number.isFinite));
}

const formatGroups = (groups) => groups.map((g) => g.map((v) => Math.round(v)).join(",")).join("; ");

// The file behind a node's input: follows links upstream (through Get Video Components, Get Image Range,
// ...) to a Load Image / Load Video node; {kind: "image" | "video", url} or null.
export function upstreamMedia(node, input = "frames", depth = 0) {
  const slot = node.inputs?.find((i) => i.name === input) ?? node.inputs?.find((i) => i.link != null);
  const link = slot?.link != null ? node.graph?.links?.[slot.link] ?? node.graph?.links?.get?.(slot.link) : null;
  const source = link ? node.graph.getNodeById(link.origin_id) : null;
  if (!source || depth > 6) return null;
  const widget = MEDIA_NODES[source.type];
  if (widget) {
    const filename = widgetValue(source, widget);
    if (!filename) return null;
    const params = new URLSearchParams({ filename, type: "input", subfolder: "" });
    return { kind: source.type === "LoadVideo" ? "video" : "image", url: api.apiURL(`/view?${params}`) };
  }
  const next = source.inputs?.find((i) => i.link != null && i.type === "IMAGE") ??
    source.inputs?.find((i) => i.link != null && !i.widget);
  return next ? upstreamMedia(source, next.name, depth + 1) : null;
}

// A canvas showing one frame (of a run's preview strip, an upstream image or video, or an empty canvas of
// a given size), mapping pointer positions to the frame's pixels.
class FrameCanvas {
  constructor(height) {
    this.canvas = el("canvas", { width: 480, height, class: "vace-editor-canvas",
                                 style: { width: "100%", aspectRatio: `480 / ${height}`, background: "#111",
                                          borderRadius: "4px", cursor: "crosshair", touchAction: "none" } });
    this.ctx = this.canvas.getContext("2d");
    this.rect = { x: 0, y: 0, w: this.canvas.width, h: this.canvas.height };
    this.size = null; // [width, height] of the full-size frame
  }

  toFrame(event) {
    const r = this.canvas.getBoundingClientRect();
    const cx = (event.clientX - r.left) * (this.canvas.width / r.width);
    const cy = (event.clientY - r.top) * (this.canvas.height / r.height);
    const [w, h] = this.size ?? [this.rect.w, this.rect.h];
    const x = ((cx - this.rect.x) / this.rect.w) * w, y = ((cy - this.rect.y) / this.rect.h) * h;
    return [Math.min(Math.max(x, 0), w - 1), Math.min(Math.max(y, 0), h - 1)];
  }

  toCanvas([x, y]) {
    const [w, h] = this.size ?? [this.rect.w, this.rect.h];
    return [this.rect.x + (x / w) * this.rect.w, this.rect.y + (y / h) * this.rect.h];
  }

  fit(w, h) {
    const scale = Math.min(this.canvas.width / w, this.canvas.height / h);
    this.rect = { w: w * scale, h: h * scale, x: (this.canvas.width - w * scale) / 2,
                  y: (this.canvas.height - h * scale) / 2 };
  }

  clear() {
    this.ctx.fillStyle = "#111";
    this.ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
  }

  drawImage(source, w, h) {
    this.size = [w, h];
    this.fit(w, h);
    this.ctx.drawImage(source, this.rect.x, this.rect.y, this.rect.w, this.rect.h);
  }

  drawStrip(strip, entry, i) {
    this.size = [entry.width, entry.height];
    this.rect = drawStripFrame(this.ctx, strip, entry, i);
  }

  drawBlank(w, h) {
    this.size = [w, h];
    this.fit(w, h);
    this.ctx.fillStyle = "#fff";
    this.ctx.fillRect(this.rect.x, this.rect.y, this.rect.w, this.rect.h);
  }

  box([x1, y1, x2, y2], color, label) {
    const [a, b] = this.toCanvas([x1, y1]), [c, d] = this.toCanvas([x2, y2]);
    this.ctx.strokeStyle = color;
    this.ctx.lineWidth = 2;
    this.ctx.strokeRect(a, b, c - a, d - b);
    if (label) {
      this.ctx.fillStyle = color;
      this.ctx.font = "12px sans-serif";
      this.ctx.fillText(label, a + 3, b + 13);
    }
  }

  dot(point, color) {
    const [x, y] = this.toCanvas(point);
    this.ctx.beginPath();
    this.ctx.arc(x, y, 5, 0, 2 * Math.PI);
    this.ctx.fillStyle = color;
    this.ctx.fill();
    this.ctx.strokeStyle = "#fff";
    this.ctx.stroke();
  }
}

// Pointer handling shared by the editors: a drag gives a box, a short press a click.
function onGesture(canvas, { click, drag, preview }) {
  let start = null;
  canvas.addEventListener("contextmenu", (e) => e.preventDefault());
  canvas.addEventListener("pointerdown", (e) => {
    e.stopPropagation();
    canvas.setPointerCapture?.(e.pointerId);
    start = { x: e.clientX, y: e.clientY, event: e };
  });
  canvas.addEventListener("pointermove", (e) => {
    if (start && Math.hypot(e.clientX - start.x, e.clientY - start.y) >= CLICK_RADIUS) preview?.(start.event, e);
  });
  canvas.addEventListener("pointerup", (e) => {
    if (!start) return;
    const moved = Math.hypot(e.clientX - start.x, e.clientY - start.y);
    if (moved < CLICK_RADIUS) click(start.event);
    else drag(start.event, e);
    start = null;
  });
}

// SAM2 Video Masks: click = positive point, shift / right click = negative, right click on a point removes it,
// drag = box. The frame slider picks the prompt frame; after a run the masks are overlaid.
export class PointsEditor {
  constructor(node) {
    this.node = node;
    this.view = new FrameCanvas(270);
    this.slider = el("input", { type: "range", min: 0, max: 0, value: 0, class: "vace-frame-slider",
                                style: { width: "100%" } });
    this.showMask = el("input", { type: "checkbox", checked: "", class: "vace-show-mask" });
    this.info = el("div", { class: "vace-editor-info", style: { fontSize: "11px", color: "#bbb" } });
    const help = "click: object · shift/right click: not the object · right click a point: remove · drag: box";
    this.element = el("div", { class: "vace-points-editor", style: { display: "flex", flexDirection: "column",
                                                                       gap: "2px", overflow: "hidden" } }, [
      this.view.canvas, this.slider,
      el("label", { style: { fontSize: "11px", color: "#bbb" } }, [this.showMask, " show the last run's masks"]),
      this.info, el("div", { style: { fontSize: "10px", color: "#888" } }, [help])]);
    this.element.addEventListener("pointerdown", (e) => e.stopPropagation());
    this.slider.addEventListener("input", () => {
      setWidget(node, "frame", Number(this.slider.value));
      this.refresh();
    });
    this.showMask.addEventListener("change", () => this.draw());
    onGesture(this.view.canvas, {
      click: (e) => this.click(e), drag: (a, b) => this.setBox(a, b), preview: (a, b) => this.draw(a, b),
    });
    this.run = null; // {frames, overlay, entry} of the last run
    this.media = null;
  }

  prompts() {
    return { points: parseGroups(widgetValue(this.node, "points"), 2),
             negative: parseGroups(widgetValue(this.node, "negative_points"), 2),
             box: parseGroups(widgetValue(this.node, "box"), 4)[0] };
  }

  click(e) {
    const point = this.view.toFrame(e);
    const { points, negative } = this.prompts();
    if (e.button === 2) {
      const near = (p) => {
        const [a, b] = this.view.toCanvas(p), [c, d] = this.view.toCanvas(point);
        return Math.hypot(a - c, b - d) < CLICK_RADIUS;
      };
      const kept = points.filter((p) => !near(p)), keptNeg = negative.filter((p) => !near(p));
      if (kept.length !== points.length || keptNeg.length !== negative.length) {
        setWidget(this.node, "points", formatGroups(kept));
        setWidget(this.node, "negative_points", formatGroups(keptNeg));
        return this.draw();
      }
    }
    if (e.button === 2 || e.shiftKey) setWidget(this.node, "negative_points", formatGroups([...negative, point]));
    else setWidget(this.node, "points", formatGroups([...points, point]));
    this.draw();
  }

  setBox(a, b) {
    const [x1, y1] = this.view.toFrame(a), [x2, y2] = this.view.toFrame(b);
    setWidget(this.node, "box", formatGroups([[Math.min(x1, x2), Math.min(y1, y2), Math.max(x1, x2),
                                                Math.max(y1, y2)]]));
    this.draw();
  }

  async showRun(entries) {
    const frames = entries.find((e) => e.kind === "frames"), overlay = entries.find((e) => e.kind === "overlay");
    if (!frames) return;
    const [a, b] = await Promise.all([loadImage(viewUrl(frames)), overlay ? loadImage(viewUrl(overlay)) : null]);
    this.run = { frames: a, overlay: b, entry: frames };
    this.slider.max = frames.indices.length - 1;
    this.refresh();
  }

  // The frame to draw on: the last run's, else the upstream file's (loaded on demand).
  async refresh() {
    const frame = Number(widgetValue(this.node, "frame") ?? 0);
    if (this.run) {
      const i = this.run.entry.indices.findIndex((f) => f >= frame);
      this.current = i < 0 ? this.run.entry.indices.length - 1 : i;
      this.slider.value = this.current;
      return this.draw();
    }
    const media = upstreamMedia(this.node);
    if (!media) {
      this.info.textContent = "connect a video (Load Video / Load Image upstream) or run once to see its frames";
      return this.draw();
    }
    try {
      if (this.media?.url !== media.url) this.media = { ...media, element: await this.load(media) };
    } catch (error) { // e.g. the file is not in ComfyUI's input folder (yet)
      this.media = null;
      this.info.textContent = `${error.message}: run once to see the frames`;
      return this.draw();
    }
    if (media.kind === "video") {
      const video = this.media.element;
      this.slider.max = Math.max(0, Math.floor(video.duration * FPS) - 1);
      this.slider.value = frame;
      video.currentTime = Math.min(video.duration, (frame + 0.5) / FPS);
      await new Promise((resolve) => video.addEventListener("seeked", resolve, { once: true }));
    }
    this.draw();
  }

  load(media) {
    if (media.kind === "image") return loadImage(media.url);
    return new Promise((resolve, reject) => {
      const video = el("video", { muted: "", preload: "auto", src: media.url });
      video.addEventListener("loadeddata", () => resolve(video), { once: true });
      video.addEventListener("error", () => reject(new Error(`could not load ${media.url}`)), { once: true });
    });
  }

  draw(dragStart, dragNow) {
    this.view.clear();
    if (this.run) {
      const strip = this.showMask.checked && this.run.overlay ? this.run.overlay : this.run.frames;
      this.view.drawStrip(strip, this.run.entry, this.current ?? 0);
    } else if (this.media?.element) {
      const m = this.media.element;
      this.view.drawImage(m, m.videoWidth || m.naturalWidth, m.videoHeight || m.naturalHeight);
    }
    const { points, negative, box } = this.prompts();
    if (box) this.view.box(box, "#ffd400", "box");
    if (dragStart) {
      const [x1, y1] = this.view.toFrame(dragStart), [x2, y2] = this.view.toFrame(dragNow);
      this.view.box([x1, y1, x2, y2], "#ffd400");
    }
    points.forEach((p) => this.view.dot(p, "#22cc55"));
    negative.forEach((p) => this.view.dot(p, "#ee3333"));
    if (this.view.size) {
      this.info.textContent = `frame ${widgetValue(this.node, "frame")} · ${points.length} object / ` +
        `${negative.length} background points${box ? " · box" : ""} · ${this.view.size.join("x")} px`;
    }
  }
}

// Layout Annotator: drag the start box and the end box on an empty canvas of the node's width x height (or on
// the last run's first / last layout frame).
export class BoxEditor {
  constructor(node) {
    this.node = node;
    this.view = new FrameCanvas(240);
    this.which = el("select", { class: "vace-box-which" }, [
      el("option", { value: "start_box" }, ["drag: start box"]), el("option", { value: "end_box" }, ["drag: end box"])]);
    this.element = el("div", { class: "vace-box-editor", style: { display: "flex", flexDirection: "column",
                                                                    gap: "2px", overflow: "hidden" } },
                      [this.view.canvas, this.which]);
    this.element.addEventListener("pointerdown", (e) => e.stopPropagation());
    this.which.addEventListener("change", () => this.draw());
    onGesture(this.view.canvas, {
      click: () => {}, drag: (a, b) => this.setBox(a, b), preview: (a, b) => this.draw(a, b),
    });
  }

  setBox(a, b) {
    const [x1, y1] = this.view.toFrame(a), [x2, y2] = this.view.toFrame(b);
    setWidget(this.node, this.which.value, formatGroups([[Math.min(x1, x2), Math.min(y1, y2), Math.max(x1, x2),
                                                          Math.max(y1, y2)]]));
    this.draw();
  }

  draw(dragStart, dragNow) {
    this.view.clear();
    this.view.drawBlank(Number(widgetValue(this.node, "width")), Number(widgetValue(this.node, "height")));
    const colors = { start_box: "#2277ff", end_box: "#ff8800" };
    for (const name of ["start_box", "end_box"]) {
      const [box] = parseGroups(widgetValue(this.node, name), 4);
      if (box) this.view.box(box, colors[name], name === "start_box" ? "start" : "end");
    }
    if (dragStart) {
      const [x1, y1] = this.view.toFrame(dragStart), [x2, y2] = this.view.toFrame(dragNow);
      this.view.box([x1, y1, x2, y2], colors[this.which.value]);
    }
  }
}
