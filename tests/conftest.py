"""Fixtures for the tests that need a real ComfyUI server or a browser: one server and one browser for the whole
session, each test module serving its own files through them.

A module that adds real-server tests:

    from tests.integration.fixtures import write_inputs, write_models

    @pytest.fixture(scope="module")
    def comfy(comfy_server, tmp_path_factory):
        base = tmp_path_factory.mktemp("my_module")
        write_models(base)                      # tiny models under the real file names (tests/integration/fixtures.py)
        write_inputs(base, 32, 32, 9)           # small input media under the example media's names
        with comfy_server.serving(base) as server:
            yield server

    def test_something(comfy):
        entry = comfy.run(prompt, timeout=300)  # queue an API-format graph, wait for its /history entry
        assert_success(entry)                   # tests/integration/graphs.py; output_files(comfy.base_dir, entry)

`serving(base)` points the running server at base/models, base/input and base/output with ComfyUI's caches emptied
(outputs and loaded models: other modules write other files under the same names) and `server.info` (/object_info)
read anew; on exit it goes back to the start base, caches emptied again. A module writes whatever it needs into its
own base, so modules never see each other's files. Settings a test changes (POST /settings/...) it sets back.

- `comfy_runtime` (session): the ComfyUI runtime (tests/integration/comfy_server.py Runtime: ComfyUI's folder and
  its Python) with the pack's requirements installed into it, so checks of what got installed
  (`runtime_has(comfy_runtime, "sam2")`) are asked inside a test, after the install. Skips, saying what is missing
  and how to get it, when there is no runtime (`make test` builds one first where the project's layout has the
  builder).
- `comfy_server` (session): the one ComfyUI server (ComfyServer) on the runtime, started once.
- `chromium` (session): the path of Debian's chromium (never a Playwright download); skips when it is missing.
- `browser` (session): one headless Playwright Chromium; a module opens its own pages (`browser.new_page()`).
- `newest_frontend` (session): the newest ComfyUI frontend package (comfyui-frontend-package, pinned in
  NEWEST_FRONTEND) installed into a cache folder outside the runtime; its `static` folder is what
  `--front-end-root` serves. `comfy_server_newest` (session): a second server on that frontend.

Under CI=true a skip in a test using any of these fixtures, and a module skipped whole, are errors with the skip's
reason: CI cannot pass with the real-server or browser tests skipped.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

# One share of the cores per pytest-xdist worker for torch's thread pool, before anything imports torch; the ComfyUI
# servers and command-line processes a worker starts inherit it. Two workers of two threads each (plus a server's)
# on a 2-core machine spent 3x the CPU time of one thread each, spinning: 14 min 39 s of tests against 6 min 24 s.
# (`-n 0`: torch's default.)
if WORKERS := os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // int(WORKERS))))

import pytest  # noqa: E402

from tests.integration.comfy_server import CACHE, ComfyServer, find_runtime, install_pack, runtime_hint
from tests.integration.fixtures import write_inputs
from vace_core.example_media import FILES

CI = os.environ.get("CI", "").lower() == "true"
SERVER_FIXTURES = {"comfy_runtime", "comfy_server", "chromium", "browser", "newest_frontend", "comfy_server_newest"}
NEWEST_FRONTEND = "comfyui-frontend-package==1.58.1"
START_TIMEOUT = 600  # importing ComfyUI takes ~20 s on a quiet machine, minutes on one busy with other suites


@pytest.fixture(scope="session")
def comfy_runtime():
    runtime = find_runtime()
    if runtime is None:
        pytest.skip(runtime_hint())
    install_pack(runtime)
    return runtime


def start_base(base: Path) -> Path:
    """The start base: a clip of its own in input/ and the second reference absent, so the pack's start-up copy of
    the example media (which never overwrites) can be checked (tests/test_browser.py)."""
    write_inputs(base, 64, 96, 5)
    (base / "input" / FILES["reference_2"]).unlink()
    return base


@pytest.fixture(scope="session")
def comfy_server(comfy_runtime, tmp_path_factory):
    server = ComfyServer(comfy_runtime, start_base(tmp_path_factory.mktemp("comfy_session")))
    server.start(timeout=START_TIMEOUT)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("no chromium: install it with `apt-get install -y chromium` (.ci/run does)")
    return path


@pytest.fixture(scope="session")
def browser(chromium):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in requirements-dev.txt")
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run"]
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=args)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def newest_frontend(comfy_runtime) -> Path:
    """The frontend's static folder, installed with the runtime's pip into CACHE/frontends/<version> (--target:
    the runtime keeps the frontend ComfyUI pins)."""
    target = CACHE / "frontends" / NEWEST_FRONTEND.split("==")[1]
    static = target / "comfyui_frontend_package" / "static"
    if not (static / "index.html").is_file():
        pip = [str(comfy_runtime.python), "-m", "pip", "install", "-q", "--no-deps", "--target", str(target)]
        run = subprocess.run([*pip, NEWEST_FRONTEND], capture_output=True, text=True)
        if run.returncode or not (static / "index.html").is_file():
            pytest.skip(f"could not install {NEWEST_FRONTEND} into {target}: {run.stderr[-1500:]}")
    return static


@pytest.fixture(scope="session")
def comfy_server_newest(comfy_runtime, newest_frontend, tmp_path_factory):
    server = ComfyServer(comfy_runtime, start_base(tmp_path_factory.mktemp("comfy_newest")),
                         extra_args=("--front-end-root", str(newest_frontend)))
    server.start(timeout=START_TIMEOUT)
    try:
        yield server
    finally:
        server.stop()


def skip_reason(longrepr) -> str:
    return (longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)).removeprefix("Skipped: ")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if CI and report.skipped and SERVER_FIXTURES & set(item.fixturenames):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, where it must run: {skip_reason(report.longrepr)}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    if CI and report.skipped and isinstance(collector, pytest.Module):
        report.outcome = "failed"
        report.longrepr = f"module skipped under CI=true, where it must run: {skip_reason(report.longrepr)}"


def pytest_report_header(config):
    runtime = find_runtime()
    return (f"ComfyUI runtime: {runtime.path} ({runtime.python})" if runtime else f"warning: {runtime_hint()}",
            f"CI={os.environ.get('CI', '')!r}: skips of real-server / browser tests are "
            f"{'errors' if CI else 'allowed'}; python {sys.version.split()[0]}")
