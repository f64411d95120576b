"""Every node's V3 input schema, read in ComfyUI's Python without a server (seconds, not a server start).

`python tests/integration/node_schemas.py COMFYUI_PATH OUT.json` imports the pack as ComfyUI imports a custom
node (a package, relative imports working) and writes {node_id: [input dicts: id, type, default, min, max,
step, options, tooltip, optional...]} in the schema's order. `node_schemas(runtime)` runs it from the test venv.
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[2]


def node_schemas(runtime) -> dict[str, list[dict]]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "schemas.json"
        subprocess.run([str(runtime.python), __file__, str(runtime.path), str(out)], check=True, cwd=runtime.path,
                       capture_output=True, text=True)
        return json.loads(out.read_text())


def _dump(comfy_path: str, out: str) -> None:
    import asyncio
    import importlib
    import importlib.machinery
    import importlib.util

    sys.path.insert(0, comfy_path)
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # no GPU is needed (or wanted) to read schemas
    package = importlib.util.module_from_spec(importlib.machinery.ModuleSpec("vace_pack", None, is_package=True))
    package.__path__ = [str(PACK_ROOT)]
    sys.modules["vace_pack"] = package
    nodes = importlib.import_module("vace_pack.nodes")
    schemas = {}
    for node in asyncio.run(nodes.VaceExtension().get_node_list()):
        schema = node.define_schema()
        schemas[schema.node_id] = [inp.as_dict() | {"id": inp.id, "type": inp.get_io_type()} for inp in schema.inputs]
    Path(out).write_text(json.dumps(schemas, default=str))


if __name__ == "__main__":
    _dump(*sys.argv[1:3])
