"""Preview strips sent to the browser through a node's UI output (web/vace.js draws them in a scrubbable
widget). Saved as JPEGs in ComfyUI's temp folder, which the server serves at /view?type=temp."""

import os
import uuid

import folder_paths

from ..vace_core import preview

KEY = "vace_preview"  # the UI output key the frontend extension reads


def save(strips: dict, stream: int = 0, size: tuple[int, int] | None = None) -> list[dict]:
    """{kind: (image, frame indices)} -> entries {filename, subfolder, type, kind, stream, indices, frame_width,
    width, height}. `size` is the (height, width) of the full-size frames (for editors mapping clicks)."""
    folder = folder_paths.get_temp_directory()
    os.makedirs(folder, exist_ok=True)
    entries = []
    for kind, (image, indices) in strips.items():
        name = f"vace_preview_{uuid.uuid4().hex[:12]}.jpg"
        image.save(os.path.join(folder, name), quality=85)
        entry = {"filename": name, "subfolder": "", "type": "temp", "kind": kind, "stream": stream,
                 "indices": indices, "frame_width": image.width // max(1, len(indices)),
                 "frame_height": image.height}
        if size is not None:
            entry["height"], entry["width"] = size
        entries.append(entry)
    return entries


def vcu_ui(*vcus) -> dict:
    """The UI output of nodes that make or take VCUs: each VCU's frames with the masks, and its references."""
    return {KEY: [e for i, v in enumerate(vcus) if v is not None
                  for e in save(preview.vcu_strips(v), i, tuple(v.size))]}


def masks_ui(frames, masks) -> dict:
    return {KEY: save(preview.mask_strips(frames, masks), size=tuple(frames.shape[1:3]))}


def video_ui(frames) -> dict:
    return {KEY: save(preview.video_strip(frames), size=tuple(frames.shape[1:3]))}
