"""The pack in ComfyUI's real frontend (comfyui-frontend-package in the runtime), driven in headless Chromium by
Playwright: the example workflows load (no missing nodes, the Missing Models dialog lists exactly the absent
files), keep their widget values through load + save, do not overlap before or after a run, and run from the
UI's queue to an output; the SAM2 points editor and the layout box editor, driven by real pointer events,
write the widgets a queued run uses; the VCU preview appears after a run; the extension loads without errors.

The browser is Debian's chromium (`apt-get install chromium`; never a Playwright browser download). Queued
prompts pass through a route that swaps the umt5 text encoder (none exists here) for the test-only text node
and shrinks sizes and steps for the CPU, exactly as tests/integration/graphs.py does for the API runs;
clicked points and dragged boxes are kept as the UI wrote them. Screenshots go to out/browser/.

Every test runs on the frontend ComfyUI 0.3.64 pins; the template browser, the examples' layout, the editors, the
VCU strip and the hidden widgets (the tests taking `ui`) run again on the newest frontend package (tests/conftest.py
NEWEST_FRONTEND, a second server with --front-end-root), in the classic canvas and with Nodes 2.0 on.
"""

import json
from pathlib import Path

import pytest

from tests.integration.comfy_server import runtime_has
from tests.integration.examples import DWPOSE_FILES, EXAMPLES, example_path, file_name
from tests.integration.fixtures import write_base
from tests.integration.graphs import FRAMES, H, W, shrink, with_test_text
from tests.integration.workflow_api import ordered_inputs, to_api
from vace_core.example_media import FILES, MEDIA_DIR

OUT = Path(__file__).resolve().parents[1] / "out" / "browser"
CLIP_FRAMES = 5  # shorter than the API tests' clip: SAM2 propagates through every frame, slowly on a CPU
UI_WRITTEN = {"VACESAM2Masks": ("points", "negative_points", "box"), "VACELayoutAnnotator": ("start_box", "end_box")}
# files the example workflows name that the test server does not have (no real umt5, depth, DWPose or SAM2-large)
ABSENT = {"umt5_xxl_fp8_e4m3fn_scaled.safetensors", "depth_anything_v2_vitl.pth", "sam2.1_hiera_large.pt"}


@pytest.fixture(scope="module")
def server(comfy_server, tmp_path_factory):
    base = write_base(tmp_path_factory.mktemp("browser_base"), H, W + 32, CLIP_FRAMES, dwpose=False)  # see ABSENT
    comfy_server.post("/settings/Comfy.TutorialCompleted", True)  # no first-visit template dialog
    with comfy_server.serving(base) as comfy:
        yield comfy


def rewrite_prompt(route, posted: list):
    """The queued prompt, runnable here (see the module docstring); the UI-written widgets kept."""
    body = json.loads(route.request.post_data)
    original = body["prompt"]
    body["prompt"] = shrink(with_test_text(json.loads(json.dumps(original))))
    for node_id, node in body["prompt"].items():
        if node["class_type"].startswith("VACE") and node["inputs"].get("length") == FRAMES:
            node["inputs"]["length"] = CLIP_FRAMES
        for name in UI_WRITTEN.get(node["class_type"], ()):
            node["inputs"][name] = original[node_id]["inputs"][name]
    posted.append(body["prompt"])
    route.continue_(post_data=json.dumps(body))


# the browser passes: the frontend ComfyUI 0.3.64 pins (every test), and the newest frontend package
# (tests/conftest.py NEWEST_FRONTEND, served with --front-end-root) in the classic canvas and with "Modern Node
# Design (Nodes 2.0)" on: the tests taking `ui` (editors, VCU strip, hidden widgets, template browser)
PINNED, NEWEST, NODES_2 = "pinned", "newest", "newest_nodes2"  # the passes (test ids)


def open_page(browser, server, frontend: str):
    """A page on `server`'s UI, the pack's extension loaded, the graph empty; on the newest frontend the Nodes 2.0
    setting (Comfy.VueNodes.Enabled) on or off as `frontend` says. `page.errors`: console errors; `page.posted`:
    the prompts the UI queued, as rewritten; `page.server`: the server; `page.frontend`: which pass."""
    page = browser.new_page(viewport={"width": 1800, "height": 1100})
    page.errors, page.posted, page.server, page.frontend = [], [], server, frontend
    page.on("pageerror", lambda e: page.errors.append(f"page error: {e} {e.stack}"))
    page.on("console", lambda m: page.errors.append(f"console: {m.text} {m.location}") if m.type == "error"
            else None)
    page.route("**/api/prompt", lambda route: rewrite_prompt(route, page.posted)
               if route.request.method == "POST" else route.continue_())
    page.goto(server.url)
    page.wait_for_function("() => window.app?.graph && window.app.extensions?.some(e => e.name === 'vace.nodes')",
                           timeout=90_000)
    if frontend != PINNED:
        page.evaluate("async (on) => await window.app.extensionManager.setting.set('Comfy.VueNodes.Enabled', on)",
                      frontend == NODES_2)
        page.wait_for_timeout(500)
    page.evaluate("() => window.app.graph.clear()")
    return page


@pytest.fixture(scope="module")
def pages(browser):
    """Pages by frontend, opened once for the module."""
    OUT.mkdir(parents=True, exist_ok=True)
    opened = {}
    yield opened
    for page in opened.values():
        page.close()


@pytest.fixture(scope="module")
def page(pages, browser, server):
    if PINNED not in pages:
        pages[PINNED] = open_page(browser, server, PINNED)
    return pages[PINNED]


@pytest.fixture(scope="module")
def newest_server(comfy_server_newest, server):
    """The second server (the newest frontend) serving this module's base directory."""
    comfy_server_newest.post("/settings/Comfy.TutorialCompleted", True)
    with comfy_server_newest.serving(server.base_dir) as newest:
        yield newest


@pytest.fixture(scope="module", params=[PINNED, NEWEST, NODES_2])
def ui(request, pages, browser):
    if request.param not in pages:
        if request.param == PINNED:
            pages[PINNED] = request.getfixturevalue("page")
        else:
            pages[request.param] = open_page(browser, request.getfixturevalue("newest_server"), request.param)
    return pages[request.param]


def ours_in(errors: list[str]) -> list[str]:
    """Errors raised in or logged from this pack's extension (the frontend logs others of its own here: no
    network, no userdata files)."""
    return [e for e in errors if "/extensions/comfyui-vace/" in e]


def close_dialogs(page):
    for _ in range(3):
        if not page.locator(".p-dialog").count():
            return
        page.keyboard.press("Escape")
        page.wait_for_timeout(150)


def load(page, name: str) -> str:
    """Loads an example as the template browser does; returns the text of the dialogs it opened."""
    workflow = json.loads(example_path(name).read_text())
    page.evaluate("async ([w, n]) => { await window.app.loadGraphData(w, true, true, n) }", [workflow, name])
    page.wait_for_timeout(300)
    text = page.locator(".p-dialog").all_inner_texts()
    close_dialogs(page)
    return "\n".join(text)


def bounds(page) -> dict:
    """{node id: [x, y, w, h]} incl. titles, as the canvas draws them."""
    return page.evaluate("() => Object.fromEntries(window.app.graph.nodes.map(n => [n.id, "
                         "Array.from(n.getBounding())]))")


def overlaps(boxes: dict) -> list:
    items = list(boxes.items())
    return [(a, b) for i, (a, ra) in enumerate(items) for b, rb in items[i + 1:]
            if ra[0] < rb[0] + rb[2] and rb[0] < ra[0] + ra[2] and ra[1] < rb[1] + rb[3] and rb[1] < ra[1] + ra[3]]


def run_queue(page, timeout_ms: int = 240_000) -> dict:
    """Queues the open graph as the Run button does; waits for the end; returns {status, node outputs}."""
    return page.evaluate("""async (timeout) => {
        const {app} = window, api = app.api;
        const done = new Promise((resolve) => {
            const finish = (status) => (e) => resolve({status, detail: e.detail});
            api.addEventListener("execution_success", finish("success"), {once: true});
            api.addEventListener("execution_error", finish("error"), {once: true});
            setTimeout(() => resolve({status: "timeout"}), timeout);
        });
        await app.queuePrompt(0, 1);
        const result = await done;
        await new Promise((r) => setTimeout(r, 500));  // let the executed messages reach the nodes
        return {...result, outputs: Object.fromEntries(Object.entries(app.nodeOutputs).map(([k, v]) => [k, v]))};
    }""", timeout_ms)


def nodes_of(page, type_: str) -> list[int]:
    return page.evaluate("(t) => window.app.graph.nodes.filter(n => n.type === t).map(n => n.id)", type_)


def show_node(page, node_id: int):
    page.evaluate("""(id) => { const c = window.app.canvas, n = window.app.graph.getNodeById(id);
        c.ds.scale = 1; c.centerOnNode(n); c.setDirty(true, true); }""", node_id)
    page.wait_for_timeout(400)


def screenshot(page, node_id: int, name: str):
    close_dialogs(page)  # e.g. a run's error report
    box = page.evaluate("""(id) => { const c = window.app.canvas, n = window.app.graph.getNodeById(id);
        const [x, y, w, h] = n.getBounding(); const r = c.canvas.getBoundingClientRect();
        const [sx, sy] = c.ds.convertOffsetToCanvas([x, y]);
        return {x: r.left + sx, y: r.top + sy, width: w * c.ds.scale, height: h * c.ds.scale}; }""", node_id)
    suffix = {PINNED: "", NEWEST: "_newest", NODES_2: "_newest_nodes2"}[page.frontend]
    page.screenshot(path=OUT / f"{name}{suffix}.png", clip=box)


def test_extension_loads_and_orders_templates(ui):
    page, server = ui, ui.server
    page.wait_for_timeout(500)
    assert not ours_in(page.errors), page.errors
    module = page.evaluate("() => Object.keys(window.app.extensions).length && "
                           "(async () => Object.entries(await window.app.api.getWorkflowTemplates()))()")
    ours = dict(module)["comfyui-vace"]
    assert ours == [file_name(n) for n in sorted(EXAMPLES, key=lambda n: file_name(n))]
    assert ours[0] == "VACE 01 Text to video"
    for name in ours:  # the template browser's thumbnail: <workflow name>.jpg beside the JSON
        response = page.request.get(f"{server.url}/api/workflow_templates/comfyui-vace/{name}.jpg")
        assert response.ok and response.headers["content-type"] == "image/jpeg", name


def test_example_media_copied_without_overwriting(server):
    """At start-up the pack copied the example media into the start base's input/ (tests/conftest.py start_base:
    its own clip, no second reference)."""
    copied = server.start_base / "input" / FILES["reference_2"]
    assert copied.read_bytes() == (MEDIA_DIR / FILES["reference_2"]).read_bytes()
    kept = server.start_base / "input" / FILES["clip"]
    assert kept.read_bytes() != (MEDIA_DIR / FILES["clip"]).read_bytes()  # the test's own clip stays


def panels_outside_their_nodes(page) -> list:
    """This pack's panels (previews, editors) drawn outside their node's box on screen."""
    return page.evaluate("""() => { const c = window.app.canvas, r = c.canvas.getBoundingClientRect();
        return window.app.graph.nodes.filter(n => n.vacePreview || n.vaceEditor).filter(n => {
            const e = (n.vacePreview ?? n.vaceEditor).element.getBoundingClientRect();
            const [x, y, w, h] = n.getBounding(), [sx, sy] = c.ds.convertOffsetToCanvas([x, y]);
            const k = c.ds.scale, l = r.left + sx, t = r.top + sy;
            const out = e.left < l - 1 || e.top < t - 1 || e.right > l + w * k + 1 || e.bottom > t + h * k + 1;
            return e.height > 0 && out;
        }).map(n => n.type); }""")


@pytest.mark.parametrize("name", sorted(EXAMPLES, key=file_name))
def test_example_workflow_in_the_browser(page, server, name):
    """Loads with no missing-node dialog, lists exactly the absent model files, keeps its widget values through
    load + save, and the frontend's own prompt (what Run queues) equals the converter's
    (tests/integration/workflow_api.py, which the API tests run every workflow with)."""
    dialogs = load(page, name)
    workflow = json.loads(example_path(name).read_text())
    named = {m["name"] for n in workflow["nodes"] for m in n["properties"].get("models", [])}
    for file in named:  # the Missing Models dialog lists exactly the absent files
        assert (file in dialogs) == (file in ABSENT), (file, dialogs)
    assert "missing" not in dialogs.lower().replace("missing models", ""), dialogs  # no missing-node dialog
    saved = page.evaluate("() => window.app.graph.serialize()")
    values = {n["id"]: n.get("widgets_values") for n in saved["nodes"]}
    for node in workflow["nodes"]:
        assert values[node["id"]] == node["widgets_values"], (node["type"], values[node["id"]])
    frontend = page.evaluate("async () => (await window.app.graphToPrompt()).output")
    ours = to_api(workflow, server.info)
    assert set(frontend) == set(ours)
    for node_id, node in ours.items():
        known = {k: v for k, v in frontend[node_id]["inputs"].items() if k in node["inputs"] or k in
                 dict(ordered_inputs(server.info[node["class_type"]]))}  # drops DOM-only values (video-preview)
        assert (frontend[node_id]["class_type"], known) == (node["class_type"], node["inputs"]), node_id


def test_example_workflows_do_not_overlap_after_load(ui):
    """Every example's nodes are apart and the pack's panels inside their nodes once loaded, in every pass: Nodes 2.0
    draws nodes taller than the classic canvas, and the examples reserve the larger (workflow_builder._height)."""
    page, overlapping = ui, {}
    for name in sorted(EXAMPLES, key=file_name):
        load(page, name)
        if page.frontend == NODES_2:  # Nodes 2.0 measures its DOM nodes into the graph's sizes after the first draw
            page.wait_for_timeout(500)
        if found := overlaps(bounds(page)) + panels_outside_their_nodes(page):
            overlapping[name] = found
    assert not overlapping, f"overlapping nodes or panels outside their nodes after load: {overlapping}"


def run_to_a_video(page, name: str) -> dict:
    """Loads `name` and runs it as the Run button does, to a video; nothing overlaps after the run (previews shown)
    and the pack's panels stay inside their nodes; returns the run's result."""
    load(page, name)
    result = run_queue(page)
    assert result["status"] == "success", json.dumps(result)[:3000]
    [save] = nodes_of(page, "SaveVideo")
    assert result["outputs"][str(save)]["images"][0]["filename"].endswith(".mp4")
    page.wait_for_timeout(300)
    assert not overlaps(bounds(page)), f"overlapping nodes after a run: {overlaps(bounds(page))}"
    assert not panels_outside_their_nodes(page)
    return result


# the runs the UI adds to the API tests' (which run every example), in every pass (pinned, newest, Nodes 2.0): the
# fixed upload widget order (swap), the preview images under the annotator (depth), the length switch (outpaint);
# T2V runs in the preview test
@pytest.mark.parametrize("name", ["vace_swap_anything", "vace_outpaint", "vace_depth"])
def test_example_workflow_runs_from_the_ui_queue(ui, name):
    ui.server.empty_caches()  # the other passes ran the same graph on this server: a cached run shows no previews
    run_to_a_video(ui, name)


def test_vcu_preview_after_a_run(ui):
    """After a run, Build VCU's strip holds every frame of the VCU (one strip frame per VCU frame), is drawn on
    screen inside the node, scrubs with its slider and shows T2V's frames as all 'generate'. The server's caches are
    emptied first: the other passes ran the same graph on it, and a cached node sends no preview."""
    page = ui
    page.server.empty_caches()
    run_to_a_video(page, "vace_t2v")
    [build] = nodes_of(page, "VACEBuildVCU")
    show_node(page, build)
    frames = page.evaluate("""(id) => { const v = window.app.graph.getNodeById(id).vacePreview;
        const r = v.canvas.getBoundingClientRect();
        return {loaded: !!v.strip, width: v.strip?.naturalWidth, frame_width: v.entry?.frame_width,
                max: Number(v.slider.max), label: v.label.textContent, shown: [r.width, r.height]}; }""", build)
    assert frames["loaded"] and frames["width"] == CLIP_FRAMES * frames["frame_width"], frames
    assert frames["max"] == CLIP_FRAMES - 1 and frames["label"] == f"frame 0 (1 of {CLIP_FRAMES} shown)", frames
    assert min(frames["shown"]) > 50, f"the strip is not on screen: {frames}"
    slider = page.evaluate_handle("(id) => window.app.graph.getNodeById(id).vacePreview.slider", build).as_element()
    slider.fill(str(CLIP_FRAMES - 1))
    label = page.evaluate("(id) => window.app.graph.getNodeById(id).vacePreview.label.textContent", build)
    assert label == f"frame {CLIP_FRAMES - 1} ({CLIP_FRAMES} of {CLIP_FRAMES} shown)", label
    pixel = page.evaluate("""(id) => { const c = window.app.graph.getNodeById(id).vacePreview.canvas;
        const d = c.getContext('2d').getImageData(c.width / 2, c.height / 2, 1, 1).data; return Array.from(d); }""",
                          build)
    assert pixel[0] > pixel[1] + 40, f"T2V frames are all 'generate' (magenta): {pixel}"
    screenshot(page, build, "vcu_preview")


def canvas_point(page, selector: str, fx: float, fy: float) -> tuple[float, float, list]:
    """Page coordinates of the point at fractions (fx, fy) of the frame an editor draws, and its frame size."""
    return page.evaluate("""([sel, fx, fy]) => {
        const node = window.app.graph.nodes.find(n => n.vaceEditor?.element.matches(sel));
        const v = node.vaceEditor.view, r = v.canvas.getBoundingClientRect(), k = r.width / v.canvas.width;
        return [r.left + (v.rect.x + fx * v.rect.w) * k, r.top + (v.rect.y + fy * v.rect.h) * k, v.size]; }""",
                         [selector, fx, fy])


def widget(page, node_id: int, name: str):
    return page.evaluate("([id, n]) => window.app.graph.getNodeById(id).widgets.find(w => w.name === n).value",
                         [node_id, name])


def test_points_editor_writes_the_widgets_a_run_uses(ui):
    page, server = ui, ui.server
    if not runtime_has(server.runtime, "sam2"):  # asked after the pack's requirements went in (comfy_runtime)
        pytest.skip(f"the ComfyUI runtime has no sam2 ({server.runtime.python} -m pip install --no-build-isolation "
                    "--no-deps sam2==1.1.0)")
    load(page, "vace_inpaint_sam2")
    [sam] = nodes_of(page, "VACESAM2Masks")
    page.evaluate("(id) => { const n = window.app.graph.getNodeById(id); "
                  "for (const w of ['points', 'negative_points', 'box']) n.widgets.find(x => x.name === w).value = '';"
                  " n.vaceEditor.refresh(); }", sam)
    show_node(page, sam)
    page.wait_for_function("(id) => window.app.graph.getNodeById(id).vaceEditor.view.size", arg=sam, timeout=20_000)
    x, y, (w, h) = canvas_point(page, ".vace-points-editor", 0.5, 0.5)
    assert (w, h) == (W + 32, H), "the editor shows the upstream video at its own size"
    page.mouse.click(x, y)
    nx, ny, _ = canvas_point(page, ".vace-points-editor", 0.25, 0.25)
    page.keyboard.down("Shift")
    page.mouse.click(nx, ny)
    page.keyboard.up("Shift")
    bx, by, _ = canvas_point(page, ".vace-points-editor", 0.75, 0.75)
    page.mouse.click(bx, by, button="right")  # a negative point...
    page.mouse.click(bx, by, button="right")  # ...removed again by right-clicking it
    x1, y1, _ = canvas_point(page, ".vace-points-editor", 0.3, 0.3)
    x2, y2, _ = canvas_point(page, ".vace-points-editor", 0.7, 0.8)
    page.mouse.move(x1, y1)
    page.mouse.down()
    page.mouse.move(x2, y2, steps=5)
    page.mouse.up()
    expect = {"points": [[w / 2, h / 2]], "negative_points": [[w / 4, h / 4]],
              "box": [[0.3 * w, 0.3 * h, 0.7 * w, 0.8 * h]]}
    for name, groups in expect.items():
        written = [[float(v) for v in g.split(",")] for g in widget(page, sam, name).split(";") if g.strip()]
        assert len(written) == len(groups) and all(abs(a - b) <= 1.5 for g, e in zip(written, groups, strict=True)
                                                   for a, b in zip(g, e, strict=True)), (name, written, groups)
    # SAM2 propagates through every frame (slow on a CPU): run it on one image, as a user segmenting a still
    # connects a Load Image; one mask then serves every frame of Build VCU
    page.evaluate("""([id, file]) => { const g = window.app.graph, sam = g.getNodeById(id);
        const image = LiteGraph.createNode("LoadImage"); image.pos = [sam.pos[0] - 800, sam.pos[1]]; g.add(image);
        image.widgets.find(w => w.name === "image").value = file; image.connect(0, sam, "frames"); }""",
                  [sam, FILES["first"]])
    page.wait_for_function("(id) => window.app.graph.getNodeById(id).vaceEditor.media?.kind === 'image'", arg=sam,
                           timeout=20_000)
    server.empty_caches()  # the other passes ran the same graph on this server: a cached node sends no preview
    result = run_queue(page)
    # the SAM2 node ran with the clicked prompts (its UI output is its masks) and the graph ran to its video (the
    # test checkpoint always finds the prompted object: tests/integration/fixtures.py write_sam2_checkpoint)
    assert result["outputs"].get(str(sam), {}).get("vace_preview"), json.dumps(result)[:3000]
    assert result["status"] == "success", json.dumps(result)[:3000]
    queued = next(n for n in page.posted[-1].values() if n["class_type"] == "VACESAM2Masks")["inputs"]
    assert queued["points"] == widget(page, sam, "points") and queued["box"] == widget(page, sam, "box")
    page.wait_for_function("(id) => window.app.graph.getNodeById(id).vaceEditor.run", arg=sam, timeout=20_000)
    show_node(page, sam)
    screenshot(page, sam, "sam2_points_editor")


def test_box_editor_writes_the_widgets_a_run_uses(ui):
    page = ui
    load(page, "vace_move_anything")
    [layout] = nodes_of(page, "VACELayoutAnnotator")
    page.evaluate("(id) => { const n = window.app.graph.getNodeById(id); for (const [k, v] of "
                  "[['width', 64], ['height', 64], ['length', 9]]) n.widgets.find(w => w.name === k).value = v;"
                  " n.vaceEditor.draw(); }", layout)
    show_node(page, layout)
    for which, (f1, f2) in {"start_box": ((0.1, 0.2), (0.4, 0.6)), "end_box": ((0.5, 0.2), (0.9, 0.7))}.items():
        page.locator(".vace-box-which").select_option(which)
        x1, y1, size = canvas_point(page, ".vace-box-editor", *f1)
        x2, y2, _ = canvas_point(page, ".vace-box-editor", *f2)
        page.mouse.move(x1, y1)
        page.mouse.down()
        page.mouse.move(x2, y2, steps=5)
        page.mouse.up()
        written = [float(v) for v in widget(page, layout, which).split(",")]
        expect = [f1[0] * size[0], f1[1] * size[1], f2[0] * size[0], f2[1] * size[1]]
        assert all(abs(a - b) <= 1.5 for a, b in zip(written, expect, strict=True)), (which, written, expect)
    screenshot(page, layout, "layout_box_editor")
    result = run_queue(page)
    assert result["status"] == "success", json.dumps(result)[:3000]
    queued = next(n for n in page.posted[-1].values() if n["class_type"] == "VACELayoutAnnotator")["inputs"]
    assert (queued["start_box"], queued["end_box"]) == (widget(page, layout, "start_box"), widget(page, layout,
                                                                                                   "end_box"))


STREAM_KNOBS = ["strength", "start", "end", "curve", "frame_weights"]
STREAM_2, STREAM_3 = [k + "_2" for k in STREAM_KNOBS], [k + "_3" for k in STREAM_KNOBS]
GUIDANCE_TUNING = ["nag_tau", "nag_alpha", "nag_start", "nag_end", "slg_mode", "slg_start", "slg_end", "slg_scale",
                   "slg_rescale", "zero_init_steps", "apg_eta", "apg_norm_threshold", "apg_momentum"]


def hidden_of(page, node: int, names: list[str]) -> dict[str, bool]:
    """{widget: hidden} of node's widgets `names` (a missing widget fails)."""
    return page.evaluate("""([id, names]) => { const n = window.app.graph.getNodeById(id);
        return Object.fromEntries(names.map(m => [m, !!n.widgets.find(w => w.name === m).hidden])); }""",
                         [node, names])


def set_widget(page, node: int, name: str, value):
    """Sets a widget as its editor does (value, then its callback)."""
    page.evaluate("""([id, name, v]) => { const w = window.app.graph.getNodeById(id).widgets.find(w => w.name === name);
        w.value = v; w.callback?.(v); }""", [node, name, value])


def test_sampler_streams_and_outpaint_length_show_when_they_apply(ui):
    page = ui
    load(page, "vace_outpaint")
    [sampler] = nodes_of(page, "VACESampler")
    [outpaint] = nodes_of(page, "VACEOutpaint")
    assert hidden_of(page, sampler, STREAM_2 + STREAM_3) == dict.fromkeys(STREAM_2 + STREAM_3, True)
    assert hidden_of(page, sampler, ["strength", "curve", "frame_weights"]) == dict.fromkeys(
        ["strength", "curve", "frame_weights"], False)
    page.evaluate("([a, s]) => window.app.graph.getNodeById(a).connect(0, window.app.graph.getNodeById(s), "
                  "'vcu_2')", [outpaint, sampler])
    assert hidden_of(page, sampler, STREAM_2 + STREAM_3) == dict.fromkeys(STREAM_2, False) | dict.fromkeys(STREAM_3,
                                                                                                          True)
    assert hidden_of(page, outpaint, ["length"]) == {"length": True}  # length_from_input is on
    page.evaluate("(id) => { const w = window.app.graph.getNodeById(id).widgets.find(w => w.name === "
                  "'length_from_input'); w.value = false; w.callback(false); }", outpaint)
    assert hidden_of(page, outpaint, ["length"]) == {"length": False}
    show_node(page, sampler)
    screenshot(page, sampler, "sampler_streams")
    assert not ours_in(page.errors), page.errors


def test_long_video_streams_and_guidance_options_show_when_they_apply(ui):
    """Stream 2's and 3's settings (curves included) on the Long Video Sampler follow their VCU input as on the VACE
    Sampler; the VACE Guidance node shows an add-on's settings only when the add-on is on (NAG scale above 0, SLG
    blocks given, SLG's third-pass scale in that mode, CFG-Zero*'s and APG's own with that combination)."""
    page = ui
    load(page, "vace_long_extension")
    [sampler] = nodes_of(page, "VACELongVideoSampler")
    assert hidden_of(page, sampler, STREAM_2 + STREAM_3) == dict.fromkeys(STREAM_2 + STREAM_3, True)
    assert not any(hidden_of(page, sampler, STREAM_KNOBS).values())
    page.evaluate("""(s) => { const g = window.app.graph, sampler = g.getNodeById(s);
        const link = sampler.getInputLink(sampler.findInputSlot("vcu"));  // the first stream's VCU, again as stream 3
        g.getNodeById(link.origin_id).connect(link.origin_slot, sampler, "vcu_3"); }""", sampler)
    assert hidden_of(page, sampler, STREAM_2 + STREAM_3) == dict.fromkeys(STREAM_2, True) | dict.fromkeys(STREAM_3,
                                                                                                         False)
    guidance = page.evaluate("""() => { const n = LiteGraph.createNode("VACEGuidance"); n.pos = [0, 0];
        window.app.graph.add(n); return n.id; }""")
    assert hidden_of(page, guidance, GUIDANCE_TUNING) == dict.fromkeys(GUIDANCE_TUNING, True)  # all off
    assert not any(hidden_of(page, guidance, ["nag_scale", "slg_blocks", "combination"]).values())
    set_widget(page, guidance, "nag_scale", 10.0)
    set_widget(page, guidance, "slg_blocks", "9")
    set_widget(page, guidance, "combination", "apg")
    shown = ["nag_tau", "nag_alpha", "nag_start", "nag_end", "slg_mode", "slg_start", "slg_end", "apg_eta",
             "apg_norm_threshold", "apg_momentum"]
    assert hidden_of(page, guidance, GUIDANCE_TUNING) == dict.fromkeys(GUIDANCE_TUNING, True) | dict.fromkeys(shown,
                                                                                                             False)
    set_widget(page, guidance, "slg_mode", "third")
    set_widget(page, guidance, "combination", "cfg-zero*")
    assert hidden_of(page, guidance, ["slg_scale", "slg_rescale", "zero_init_steps", "apg_eta"]) == {
        "slg_scale": False, "slg_rescale": False, "zero_init_steps": False, "apg_eta": True}
    set_widget(page, guidance, "slg_blocks", "")
    set_widget(page, guidance, "nag_scale", 0.0)
    assert hidden_of(page, guidance, ["nag_tau", "slg_mode", "slg_scale", "zero_init_steps"]) == {
        "nag_tau": True, "slg_mode": True, "slg_scale": True, "zero_init_steps": False}
    show_node(page, guidance)
    screenshot(page, guidance, "guidance_options")
    assert not ours_in(page.errors), page.errors


DWPOSE_EXAMPLES = sorted(n for n in EXAMPLES if '"dwpose"' in example_path(n).read_text())  # 09, 13, 16, 19


def test_dwpose_workflows_raise_no_false_alarm_with_the_files_absent_or_present(page, server):
    """ComfyUI's model listing never shows .onnx files, so a Missing Models entry for DWPose's would be there on
    every load, files or not: the workflows name none, and their note carries the download links instead."""
    from tests.test_annotators_pose import write_dwpose_pair

    assert len(DWPOSE_EXAMPLES) == 4, DWPOSE_EXAMPLES
    folder = server.base_dir / "models" / "annotators"
    try:
        for present in (False, True):
            if present:
                write_dwpose_pair(folder)
            assert all((folder / f).is_file() == present for f in DWPOSE_FILES)
            for name in DWPOSE_EXAMPLES:
                dialogs = load(page, name)
                assert not [f for f in DWPOSE_FILES if f in dialogs], (name, present, dialogs)
                notes = page.evaluate("() => window.app.graph.nodes.filter(n => n.type === 'MarkdownNote')"
                                      ".map(n => n.widgets?.[0]?.value ?? '').join('\\n')")
                for file in DWPOSE_FILES:
                    assert f"https://huggingface.co/yzd-v/DWPose/resolve/main/{file}" in notes, (name, notes)
    finally:
        for file in DWPOSE_FILES:
            (folder / file).unlink(missing_ok=True)
