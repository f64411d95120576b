"""Template-browser thumbnails (example_workflows/<workflow name>.jpg, ComfyUI's convention for custom nodes):
what each task gives the model, drawn from the shipped example media with the real VCU builders and the
offline annotators: the input (or the references) and three frames of the VCU with its masks overlaid
(magenta = generate, green = keep; vace_core.preview). Written by `python -m tests.integration.examples`.
"""

import numpy as np
import torch
from PIL import Image, ImageDraw

from annotators.flow import DISFlow
from annotators.gray import Gray
from annotators.scribble import XDoG
from vace_core import preview
from vace_core import vcu as V
from vace_core.example_media import FILES, MEDIA_DIR
from vace_core.video_io import read_image, read_video

CELL, TITLE_BAR = (256, 148), 40
SIZE = {"height": 240, "width": 416}  # the shipped clip's size
LENGTH = 81


def media() -> dict:
    clip, _ = read_video(MEDIA_DIR / FILES["clip"])
    images = {k: read_image(MEDIA_DIR / FILES[k]) for k in ("first", "last", "reference", "reference_2")}
    mask = read_image(MEDIA_DIR / FILES["mask"])[..., 0]
    return {"clip": clip, "mask": mask, **{k: v[..., :3] for k, v in images.items()}}


def pose(clip):
    from annotators.pose import MediaPipePose

    return MediaPipePose()(clip)


def layout(m):
    from annotators import layout as L

    boxes = ((48, 70, 168, 190), (248, 70, 368, 190))
    return V.compose(V.first_frame(m["reference_2"], LENGTH, **SIZE),
                     V.control(L.moving_box(*boxes, LENGTH, SIZE["height"], SIZE["width"]), **SIZE, length=LENGTH))


def vcus(m) -> dict:
    """The VCU each example builds (the annotators that need weights or sam2 are stood in by their input:
    depth shows the clip; SAM2's mask is the shipped mask of the cat)."""
    clip, refs = m["clip"], torch.stack([m["reference"], m["reference_2"]])
    control = lambda frames: V.control(frames, **SIZE, length=LENGTH)  # noqa: E731
    control_long = lambda frames: V.control(frames, **SIZE, length=161)  # noqa: E731
    return {
        "vace_t2v": V.text_to_video(LENGTH, **SIZE),
        "vace_r2v_two_references": V.with_references(V.text_to_video(LENGTH, **SIZE), refs),
        "vace_first_last_frame": V.first_last(m["first"], m["last"], LENGTH, **SIZE),
        "vace_temporal_extension": V.extend(clip[:17], LENGTH, "end", **SIZE),
        "vace_outpaint": V.outpaint(clip, 0.25, 0.25),
        "vace_inpaint_sam2": V.inpaint(clip, m["mask"], **SIZE, length=LENGTH),
        "vace_swap_anything": V.with_references(V.inpaint(clip, m["mask"], **SIZE, length=LENGTH), refs[:1]),
        "vace_depth": control(clip),
        "vace_pose": control(pose(clip)),
        "vace_flow": control(DISFlow()(clip)),
        "vace_gray_colourise": control(Gray()(clip)),
        "vace_scribble": control(XDoG()(clip)),
        "vace_animate_anything": V.with_references(control(pose(clip)), refs[:1]),
        "vace_move_anything": layout(m),
        "vace_long_extension": V.extend(clip[:17], 241, "end", **SIZE),
        "vace_long_pose": control_long(pose(torch.cat([clip, clip]))),
        "vace_long_hierarchical": V.text_to_video(241, **SIZE),
        "vace_regional_boxing_cats": control(clip),
        "vace_regional_pose": control(pose(clip)),
        "vace_wan22_two_experts": V.with_references(V.text_to_video(LENGTH, **SIZE), refs[:1]),
        "vace_long_timeline": V.with_references(V.place_frames({-1: m["last"]}, 233, **SIZE), refs[:1]),
        "vace_long_loop": V.text_to_video(157, **SIZE),
        "vace_region_loras": V.text_to_video(LENGTH, **SIZE),
    }


def cell(image: np.ndarray) -> Image.Image:
    """uint8 (h, w, 3) -> a CELL-sized tile, letterboxed on dark gray."""
    tile = Image.new("RGB", CELL, (34, 34, 34))
    picture = Image.fromarray(image)
    picture.thumbnail(CELL, Image.LANCZOS)
    tile.paste(picture, ((CELL[0] - picture.width) // 2, (CELL[1] - picture.height) // 2))
    return tile


def thumbnail(title: str, unit: V.VCU, first: torch.Tensor | None) -> Image.Image:
    """The title, then the input (references or `first`, else the VCU's first frame) and three VCU frames."""
    strips = preview.vcu_strips(unit, height=CELL[1])
    image, index = strips["frames"]
    frames = np.split(np.asarray(image), len(index), axis=1)
    if "references" in strips:
        lead = cell(np.asarray(strips["references"][0]))
    elif first is not None:
        lead = cell(preview.to_uint8(first.numpy())[0])
    else:  # text to video: the prompt is the only input
        lead = Image.new("RGB", CELL, (34, 34, 34))
        ImageDraw.Draw(lead).text((CELL[0] // 2, CELL[1] // 2), "prompt only", fill=(200, 200, 200), font_size=22,
                                  anchor="mm")
    tiles = [lead, *(cell(frames[i]) for i in (0, len(frames) // 2, len(frames) - 1))]
    sheet = Image.new("RGB", (2 * CELL[0], TITLE_BAR + 2 * CELL[1]), (24, 24, 24))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % 2) * CELL[0], TITLE_BAR + (i // 2) * CELL[1]))
    ImageDraw.Draw(sheet).text((12, 10), title, fill=(240, 240, 240), font_size=20)
    return sheet


def write_thumbnails(titles: dict, paths: dict) -> None:
    """titles: {example id: title}; paths: {example id: where the .jpg goes}."""
    m = media()
    firsts = {"vace_depth": m["clip"][:1], "vace_pose": m["clip"][:1], "vace_flow": m["clip"][:1],
              "vace_gray_colourise": m["clip"][:1], "vace_scribble": m["clip"][:1],
              "vace_first_last_frame": m["first"][None], "vace_temporal_extension": m["clip"][:1],
              "vace_outpaint": m["clip"][:1], "vace_inpaint_sam2": m["clip"][:1],
              "vace_move_anything": m["reference_2"][None], "vace_long_extension": m["clip"][:1],
              "vace_long_pose": m["clip"][:1], "vace_regional_boxing_cats": m["clip"][:1],
              "vace_regional_pose": m["clip"][:1]}
    for name, unit in vcus(m).items():
        if name in paths:
            thumbnail(titles[name], unit, firsts.get(name)).save(paths[name], quality=85)
