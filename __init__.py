"""ComfyUI entry point of the VACE node pack.

Outside ComfyUI (tests, the command line) this file imports nothing, so `vace_core` and `annotators`
stay usable on their own.
"""

import importlib.util

WEB_DIRECTORY = "./web"

if importlib.util.find_spec("comfy_api") is not None:
    from .nodes import comfy_entrypoint  # noqa: F401
