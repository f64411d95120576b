"""The only way a node opens a file: a name ComfyUI lists in one of its model folders, resolved by ComfyUI.

Names come from `folder_paths.get_filename_list` and paths from `folder_paths.get_full_path_or_raise`; a name
that is absolute, climbs with '..', is not listed, or is a link leading out of the folder's real location is
refused with one message that depends only on the name and the folder, so the error says nothing about
what exists elsewhere on the server. (A whole folder may be a link, e.g. models/ on another drive; a link
inside it pointing elsewhere is refused: register other places with extra_model_paths.yaml.)
"""

import os
from pathlib import PurePath

import folder_paths
from comfy_api.latest import io

from ..annotators.weights import relative_candidates, source_hint
from ..vace_core.errors import VaceError

# ComfyUI lists a folder's files by extension. GGUF transformers live in diffusion_models (and its legacy name
# unet) but are listed under their own kind, as ComfyUI-GGUF registers it, so ComfyUI's own loaders never offer
# them; the pack's transformer loaders read both.
GGUF_KIND = "unet_gguf"
ALSO_LISTED = {"diffusion_models": (GGUF_KIND,)}


def register_gguf_folder() -> None:
    """`unet_gguf`: the diffusion_models folders (the same list, so extra_model_paths.yaml entries count), .gguf
    files only. ComfyUI-GGUF registers the same, either of us first."""
    if GGUF_KIND not in folder_paths.folder_names_and_paths:
        folders = folder_paths.folder_names_and_paths["diffusion_models"][0]
        folder_paths.folder_names_and_paths[GGUF_KIND] = (folders, {".gguf"})


def _inside_folder(kind: str, path: str) -> bool:
    real = os.path.realpath(path)
    roots = folder_paths.get_folder_paths(kind)
    return any(real.startswith(os.path.join(os.path.realpath(root), "")) for root in roots)


def _listed_as(kind: str) -> dict[str, str]:
    """name -> the kind ComfyUI lists it under: folder `kind` and the kinds listing more of its files."""
    kinds = [k for k in (*ALSO_LISTED.get(kind, ()), kind) if k in folder_paths.folder_names_and_paths]
    return {name: k for k in kinds for name in folder_paths.get_filename_list(k)}


def _listed(kind: str) -> list[str]:
    return sorted(_listed_as(kind))


def list_files(kind: str) -> list[str]:
    """The names a node may offer and open: ComfyUI's listing of folder `kind`, less links leading outside."""
    return [name for name, k in sorted(_listed_as(kind).items())
            if _inside_folder(k, folder_paths.get_full_path(k, name) or "")]


def not_found(kind: str, name) -> VaceError:
    listed = list_files(kind)
    shown = ", ".join(listed[:10]) + (f" (and {len(listed) - 10} more)" if len(listed) > 10 else "")
    return VaceError(f"'{name}' is not a file in ComfyUI's models/{kind} folder. Choose one of the files listed "
                     f"there: {shown or 'none yet'} (put the file in the folder and press R to refresh)."
                     f"{source_hint(PurePath(str(name)).name)}")


def resolve(kind: str, name) -> str:
    """The full path of file `name` from model folder `kind`, or a VaceError (the same for every bad name)."""
    listed = _listed_as(kind)
    if (isinstance(name, str) and name and not os.path.isabs(name) and ".." not in PurePath(name).parts
            and name in listed):
        path = folder_paths.get_full_path_or_raise(listed[name], name)
        if _inside_folder(listed[name], path):
            return path
    raise not_found(kind, name)


def resolve_weight(filename: str, kind: str = "annotators") -> str:
    """An annotator weight file (or model folder) in one of the layouts users have (`<file>`, VACE's
    `<task>/<file>`, comfyui_controlnet_aux's `ckpts/<repo>/<file>`), found among folder `kind`'s listed names.
    A folder (a transformers model) is found by its config.json."""
    listed = {name.replace(os.sep, "/"): name for name in _listed(kind)}  # ComfyUI lists with os.sep
    for rel in relative_candidates(filename):
        if rel in listed:
            return resolve(kind, listed[rel])
        if f"{rel}/config.json" in listed:
            return os.path.dirname(resolve(kind, listed[f"{rel}/config.json"]))
    raise not_found(kind, filename)


class FileInput(io.Combo.Input):
    """A dropdown of the files in a ComfyUI model folder (plus `extra` choices such as 'none'). The pack's
    input guard checks the choice when the prompt is validated, so a missing file is refused before
    anything runs."""

    def __init__(self, id: str, kind: str, extra: tuple[str, ...] = (), fallback: tuple[str, ...] = (), **kw):
        files = list_files(kind)
        super().__init__(id, options=[*extra, *(files or fallback)], **kw)
        self.kind, self.extra = kind, tuple(extra)

    def check(self, value) -> str | None:
        """None when `value` is a choice the node can open, else the message."""
        if value in self.extra:
            return None
        try:
            resolve(self.kind, value)
        except VaceError as e:
            return str(e)
        return None
