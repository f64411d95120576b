"""POST /vace_test/base {"base": dir}: the running server reads models from dir/models and inputs from dir/input,
writes dir/output and dir/temp, with its caches emptied. The test session starts one ComfyUI and each test module
serves its own files through it (tests/integration/comfy_server.py ComfyServer.serving)."""

import asyncio
import os

import folder_paths
from aiohttp import web
from server import PromptServer


def moved(path: str, old: str, new: str) -> str:
    """`path` with the folder `old` replaced by `new` when it lies inside it (model folders the pack or ComfyUI
    registered under the models folder); other paths (custom_nodes, extra model paths) as they are."""
    inside = path == old or path.startswith(old + os.sep)
    return new + path[len(old):] if inside else path


def use_base(base: str) -> None:
    old, new = folder_paths.models_dir, os.path.join(base, "models")
    for name, (paths, extensions) in list(folder_paths.folder_names_and_paths.items()):
        folder_paths.folder_names_and_paths[name] = ([moved(p, old, new) for p in paths], extensions)
    folder_paths.models_dir = new
    for kind, setter in (("input", folder_paths.set_input_directory), ("output", folder_paths.set_output_directory),
                         ("temp", folder_paths.set_temp_directory)):
        os.makedirs(os.path.join(base, kind), exist_ok=True)
        setter(os.path.join(base, kind))
    folder_paths.filename_list_cache.clear()


async def caches_emptied(queue, timeout: float = 150.0) -> None:
    """What POST /free {"unload_models", "free_memory"} asks of the prompt worker (loaded models unloaded, the
    output cache reset), waited for: the worker takes the flags when it is idle."""
    queue.set_flag("unload_models", True)
    queue.set_flag("free_memory", True)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while queue.flags and loop.time() < deadline:
        await asyncio.sleep(0.05)
    # the worker resets right after taking the flags, in its own thread: a prompt queued now runs after the reset


@PromptServer.instance.routes.post("/vace_test/base")
async def set_base(request):
    base = (await request.json())["base"]
    await caches_emptied(PromptServer.instance.prompt_queue)
    use_base(base)
    return web.json_response({"base": base, "models": folder_paths.models_dir})
