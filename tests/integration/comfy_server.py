"""A real ComfyUI server for tests: found on disk, started on a free loopback port with a temporary base
directory (this pack and the test-only node linked into its custom_nodes/), driven over HTTP (stdlib only).

The runtime comes from COMFYUI_PATH / COMFYUI_PYTHON, else ~/.cache/vace-comfyui/{ComfyUI,venv/bin/python}. In the
project's layout `make test` builds the latter when neither exists (`python -m tests.integration.comfy_server
--provision`, which runs ../shared/tools/comfyui-runtime.sh).
"""

import contextlib
import functools
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[2]
TEST_NODE = Path(__file__).resolve().parent / "test_text_node"
CACHE = Path.home() / ".cache" / "vace-comfyui"
# the runtime builder (ComfyUI 0.3.64 from a vendored tarball + a CPU venv), where the project's layout has it
RUNTIME_SCRIPTS = (PACK_ROOT.parent / "shared" / "tools" / "comfyui-runtime.sh",
                   PACK_ROOT / "shared" / "tools" / "comfyui-runtime.sh")


def runtime_script() -> Path | None:
    return next((p for p in RUNTIME_SCRIPTS if p.is_file()), None)


def runtime_hint() -> str:
    """What is missing and how to get it."""
    if "COMFYUI_PATH" in os.environ or "COMFYUI_PYTHON" in os.environ:
        where = (f"COMFYUI_PATH={os.environ.get('COMFYUI_PATH', '(unset)')} has no main.py or COMFYUI_PYTHON="
                 f"{os.environ.get('COMFYUI_PYTHON', '(unset)')} is not a file")
    else:
        where = f"COMFYUI_PATH / COMFYUI_PYTHON are unset and {CACHE} holds no ComfyUI/main.py + venv/bin/python"
    script = runtime_script()
    build = (f"build one with `{script}` (or `make test`, which runs it)" if script else
             f"the runtime builder ({RUNTIME_SCRIPTS[0]}) is not here either: clone ComfyUI 0.3.64, install its "
             "requirements.txt into a Python environment (torch 2.13 CPU), and set COMFYUI_PATH (the folder with "
             "main.py) and COMFYUI_PYTHON (that environment's python)")
    return f"no ComfyUI runtime: {where}; {build}"


@dataclass(frozen=True)
class Runtime:
    path: Path  # the ComfyUI source folder (main.py)
    python: Path  # the interpreter of its environment


def find_runtime() -> Runtime | None:
    path = Path(os.environ.get("COMFYUI_PATH", CACHE / "ComfyUI"))
    python = Path(os.environ.get("COMFYUI_PYTHON", CACHE / "venv" / "bin" / "python"))
    if (path / "main.py").is_file() and python.is_file():
        return Runtime(path, python)
    return None


@functools.cache
def runtime_has(runtime: Runtime, module: str) -> bool:
    """Whether the runtime's Python can import `module` (optional annotator dependencies). Ask after
    install_pack (the `comfy_runtime` fixture runs it): the answer is cached."""
    return subprocess.run([str(runtime.python), "-c", f"import {module}"], capture_output=True).returncode == 0


PACK_IMPORTS = ("cv2", "einops", "av", "gguf", "mediapipe", "sam2", "hydra")


@functools.cache
def install_pack(runtime: Runtime) -> None:
    """Installs the pack's requirements into the runtime as a user would (requirements.txt, the annotator
    extras and, opted in for the pose tests, the MediaPipe file; torch held by the constraint); nothing to do
    when they import. Tests needing an extra that could not be installed skip, saying so."""
    if runtime_has.__wrapped__(runtime, ", ".join(PACK_IMPORTS)):
        return
    pip = [str(runtime.python), "-m", "pip", "install", "-q", "-c", str(PACK_ROOT / "constraints.txt")]
    requirements = [arg for name in ("requirements.txt", "requirements-annotators.txt", "requirements-mediapipe.txt")
                    for arg in ("-r", str(PACK_ROOT / name))]
    subprocess.run([*pip, *requirements], check=False)
    subprocess.run([*pip, "--no-build-isolation", "--no-deps", "sam2==1.1.0"], check=False,
                   env={**os.environ, "SAM2_BUILD_CUDA": "0"})
    runtime_has.cache_clear()


def provision() -> int:
    """`make test`'s first step: when no runtime is configured (COMFYUI_PATH / COMFYUI_PYTHON unset) and the cache
    holds none, build it with the project's runtime script (the script reuses what a broken build left). Says
    what is missing otherwise; the tests needing the runtime then skip (fail under CI=true) with that message."""
    if find_runtime() is not None:
        return 0
    script = runtime_script()
    if "COMFYUI_PATH" in os.environ or "COMFYUI_PYTHON" in os.environ or script is None:
        print(f"warning: {runtime_hint()}", file=sys.stderr)
        return 0
    print(f"building the ComfyUI runtime in {CACHE} with {script} (1-3 minutes)", flush=True)
    code = subprocess.run(["bash", str(script)]).returncode  # its default destination is CACHE
    if code or find_runtime() is None:
        print(f"error: {script} failed (exit {code}); {runtime_hint()}", file=sys.stderr)
        return code or 1
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PromptRejected(Exception):
    """/prompt answered 400: the graph failed validation. `body` holds ComfyUI's error and node_errors."""

    def __init__(self, body: dict):
        super().__init__(json.dumps(body)[:2000])
        self.body = body


class ComfyServer:
    """One ComfyUI process. Use as a context manager; `run(prompt)` queues a graph and waits for its result.
    `serving(base)` points the running server at another base directory (models/, input/, output/)."""

    def __init__(self, runtime: Runtime, base_dir: Path, extra_args: tuple[str, ...] = ()):
        self.runtime, self.base_dir, self.extra_args = runtime, Path(base_dir), extra_args
        self.start_base = self.base_dir  # custom_nodes/, user/ (settings) and the log stay here
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.base_dir / "server.log"
        self.process: subprocess.Popen | None = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *_):
        self.stop()

    def start(self, timeout: float = 180.0):
        install_pack(self.runtime)
        custom = self.base_dir / "custom_nodes"
        custom.mkdir(parents=True, exist_ok=True)
        for name, target in (("comfyui-vace", PACK_ROOT), ("vace-test-nodes", TEST_NODE)):
            if not (custom / name).exists():
                (custom / name).symlink_to(target, target_is_directory=True)
        args = [str(self.runtime.python), "main.py", "--cpu", "--base-directory", str(self.base_dir),
                "--listen", "127.0.0.1", "--port", str(self.port), "--disable-auto-launch",
                "--database-url", "sqlite:///:memory:", *self.extra_args]
        self._log = open(self.log_path, "w")  # noqa: SIM115 (kept open for the process's lifetime)
        self.process = subprocess.Popen(args, cwd=self.runtime.path, stdout=self._log, stderr=subprocess.STDOUT,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                self.get("/system_stats")
            except OSError:
                time.sleep(0.5)
                continue
            self.info = self.object_info()
            return
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None:
            self._log.close()

    @contextlib.contextmanager
    def serving(self, base: Path):
        """The server reads models from base/models and inputs from base/input, and writes base/output, with
        ComfyUI's caches emptied (outputs and loaded models: files of the same name differ between bases) and
        `info` (/object_info) read anew; back at the start base, caches emptied again, on exit. Through the test
        node's route /vace_test/base (tests/integration/test_text_node)."""
        self._use(Path(base))
        try:
            yield self
        finally:
            if self.alive():
                self._use(self.start_base)

    def empty_caches(self):
        """Empties ComfyUI's caches on the base in use: the next run of a graph that already ran here executes every
        node again (a cached node sends no `executed` message, so a fresh page would get no previews from it)."""
        self._use(self.base_dir)

    def _use(self, base: Path):
        self.post("/queue", {"clear": True})  # what a failed test left queued or running must not hold the switch
        self.interrupt()
        self.post("/vace_test/base", {"base": str(base)}, timeout=180)
        self.base_dir = base
        self.info = self.object_info()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, chars: int = 6000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    # --- HTTP ---------------------------------------------------------------------------------------------
    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def post(self, path: str, payload: dict, timeout: float = 60):
        request = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as r:
                body = r.read()
        except urllib.error.HTTPError as e:
            if e.code == 400 and path == "/prompt":
                raise PromptRejected(json.loads(e.read())) from None
            raise
        return json.loads(body) if body else None

    def object_info(self) -> dict:
        return self.get("/object_info")

    def queue(self, prompt: dict) -> str:
        """Queue an API-format graph; returns its prompt id (raises PromptRejected when invalid)."""
        return self.post("/prompt", {"prompt": prompt, "client_id": "vace-tests"})["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 120.0) -> dict:
        """The /history entry of a finished prompt (status 'success' or 'error', outputs, messages)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry:  # ComfyUI records a prompt in its history when it has finished (or failed)
                return entry
            if not self.alive():
                raise RuntimeError(f"ComfyUI died while running {prompt_id}:\n{self.log_tail()}")
            time.sleep(0.1)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout:.0f} s:\n{self.log_tail()}")

    def run(self, prompt: dict, timeout: float = 120.0) -> dict:
        return self.wait(self.queue(prompt), timeout)

    def interrupt(self):
        self.post("/interrupt", {})


def messages(entry: dict) -> dict[str, dict]:
    """A history entry's status messages by event name (execution_start, execution_error, ...)."""
    return {name: data for name, data in entry["status"]["messages"]}


def run_seconds(entry: dict) -> float:
    """Wall time of a prompt's execution, from ComfyUI's own timestamps (ms)."""
    events = messages(entry)
    end = events.get("execution_success") or events.get("execution_error") or events["execution_interrupted"]
    return (end["timestamp"] - events["execution_start"]["timestamp"]) / 1000


def output_files(base_dir: Path, entry: dict) -> list[Path]:
    """Files the prompt's output nodes wrote (images, animated images, videos, latents)."""
    files = []
    for node_output in entry["outputs"].values():
        for items in node_output.values():
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict) and "filename" in item and item.get("type") == "output":
                    files.append(Path(base_dir) / "output" / item.get("subfolder", "") / item["filename"])
    return files


if __name__ == "__main__":
    if sys.argv[1:] != ["--provision"]:
        sys.exit("usage: python -m tests.integration.comfy_server --provision")
    sys.exit(provision())
