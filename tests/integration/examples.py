"""The example workflows (one per VACE task), described for `workflow_builder`, and the command that writes
them to example_workflows/:

    .venv/bin/python -m tests.integration.examples   # starts a temporary ComfyUI for /object_info

They use the model file names ComfyUI users have, native loaders/savers for media and text, and this pack's
nodes for everything VACE; each carries notes for a new user.
"""

import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from vace_core.example_media import FILES

from .fixtures import DIT_NAME, EXPERT_NAMES, TEXT_ENCODER_NAME, VAE_NAME
from .workflow_builder import Node, Workflow

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "example_workflows"
HF = "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files"
MODELS = {
    "dit": {"name": DIT_NAME, "url": f"{HF}/diffusion_models/{DIT_NAME}", "directory": "diffusion_models"},
    "vae": {"name": VAE_NAME, "url": f"{HF}/vae/{VAE_NAME}", "directory": "vae"},
    "text": {"name": TEXT_ENCODER_NAME, "url": f"{HF}/text_encoders/{TEXT_ENCODER_NAME}", "directory": "text_encoders"},
}
HF22 = "https://huggingface.co/Comfy-Org/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files/diffusion_models"
EXPERTS = [{"name": n, "url": f"{HF22}/{n}", "directory": "diffusion_models"} for n in EXPERT_NAMES]
# Wan2.1's official default negative prompt
NEGATIVE = ("色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，"
            "低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，"
            "毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走")
SIZE = {"width": 832, "height": 480, "length": 81}  # the 1.3B model's native size: 5 s at 16 fps
# the shipped example media (example_media/, copied into ComfyUI's input folder when the pack loads)
CLIP, REFERENCE, REFERENCE_2 = FILES["clip"], FILES["reference"], FILES["reference_2"]
FIRST, LAST, MASK = FILES["first"], FILES["last"], FILES["mask"]

MODELS_NOTE = f"""## Models (put them in ComfyUI/models/...)
- diffusion_models: [{DIT_NAME}]({MODELS['dit']['url']}) (or the 14B: wan2.1_vace_14B_fp16.safetensors, 1280x720)
- vae: [{VAE_NAME}]({MODELS['vae']['url']})
- text_encoders: [{TEXT_ENCODER_NAME}]({MODELS['text']['url']})

Sizes are multiples of 16 and lengths 4n+1 (81 frames = 5 s at 16 fps). Masks: **white = generate**,
black = keep (the opposite of Wan image-to-video). Settings are the official ones: 50 steps, cfg 5, shift 16,
UniPC; 20-30 steps are a quicker preview."""


def common(wf: Workflow, prompt: str | None, model: Node | None = None) -> dict[str, Node]:
    """Model (the Wan2.1-VACE one unless given), VAE and text nodes every example shares (no positive prompt node
    when `prompt` is None)."""
    clip = wf.add("CLIPLoader", models=[MODELS["text"]], clip_name=TEXT_ENCODER_NAME, type="wan")
    base = {"clip": clip, "model": model or wf.add("VACEModelLoader", models=[MODELS["dit"]], model_name=DIT_NAME),
            "vae": wf.add("VACEVAELoader", models=[MODELS["vae"]], vae_name=VAE_NAME)}
    if prompt is not None:
        base["positive"] = wf.add("CLIPTextEncode", title="Positive Prompt", text=prompt, clip=clip)
    base["negative"] = wf.add("CLIPTextEncode", title="Negative Prompt", text=NEGATIVE, clip=clip)
    return base


def finish(wf: Workflow, base: dict, vcu: Node, name: str, fps: Node | tuple | None = None,
           composite: bool = False, **streams) -> None:
    """Sampler -> decode -> mp4. `composite` pastes the kept pixels back (editing tasks)."""
    latent = wf.add("VACESampler", vace_model=base["model"], vace_vae=base["vae"], positive=base["positive"],
                    negative=base["negative"], vcu=vcu, **streams)
    images = wf.add("VACEDecode", vace_vae=base["vae"], samples=latent, **({"vcu": vcu} if composite else {}))
    video = wf.add("CreateVideo", images=images, fps=fps or 16.0)
    wf.add("SaveVideo", video=video, filename_prefix=f"video/vace_{name}")


def load_clip(wf: Workflow) -> tuple[Node, tuple]:
    """A video file -> (frames IMAGE, fps) with native nodes."""
    parts = wf.add("GetVideoComponents", video=wf.add("LoadVideo", file=CLIP))
    return (parts, 0), (parts, 2)


def t2v(wf: Workflow):
    wf.note("Text to video", "**T2V**: the VCU has no frames (all gray) and masks of 1 everywhere, so the "
            "whole video is generated from the prompt alone. Set the size and length on **Build VCU**.")
    base = common(wf, "a red fox trotting through fresh snow in a pine forest, morning light, tracking shot")
    finish(wf, base, wf.add("VACEBuildVCU", **SIZE), "t2v")


def r2v(wf: Workflow):
    wf.note("Reference to video", "**R2V**: reference images (a subject, an object, a background) are encoded "
            "before the video and steer what appears in it. Batch several with **Batch Images**. Plain "
            "backgrounds work best; `letterbox` fits each on a white canvas as VACE was trained.")
    base = common(wf, "a young woman holding a green snake, smiling, in a sunny garden")
    refs = wf.add("ImageBatch", image1=wf.add("LoadImage", image=REFERENCE),
                  image2=wf.add("LoadImage", image=REFERENCE_2))
    finish(wf, base, wf.add("VACEBuildVCU", references=refs, **SIZE), "r2v")


def outpaint(wf: Workflow):
    wf.note("Outpainting", "**Outpaint**: the video is placed on a larger canvas; the new border (mask 1) is "
            "generated, the original area is kept. Sides are pixels (>= 1) or a fraction of the size (< 1). "
            "width/height 0 keep the input's size plus the border; `length_from_input` keeps its length.")
    base = common(wf, "two cats boxing in a cosy living room, wide shot")
    frames, fps = load_clip(wf)
    vcu = wf.add("VACEOutpaint", frames=frames, left=0.25, right=0.25, width=0, height=0, length_from_input=True)
    finish(wf, base, vcu, "outpaint", fps, composite=True)


def extension(wf: Workflow):
    wf.note("Temporal extension", "**Extension**: the clip's frames are kept at the start (extend_after) or the "
            "end (extend_before) of a longer video and the rest is generated, continuing the motion. "
            "**Get Image or Mask Range From Batch** picks the frames to continue from.")
    base = common(wf, "two cats keep boxing, the camera slowly pans right")
    frames, fps = load_clip(wf)
    clip = wf.add("ImageFromBatch", image=frames, batch_index=0, length=17)
    vcu = wf.add("VACEFramePlacement", images=clip, placement="extend_after", **SIZE)
    finish(wf, base, vcu, "extension", fps, composite=True)


def first_last(wf: Workflow):
    wf.note("First-last frame", "**Interpolation**: a first and a last frame are kept and everything between "
            "them is generated. Batch the two images in order (first, last).")
    base = common(wf, "two cats boxing, smooth natural motion")
    images = wf.add("ImageBatch", image1=wf.add("LoadImage", image=FIRST), image2=wf.add("LoadImage", image=LAST))
    finish(wf, base, wf.add("VACEFramePlacement", images=images, placement="first_last", **SIZE), "first_last")


def swap_anything(wf: Workflow):
    wf.note("Swap anything", "**Reference + inpaint**: the masked area (white) of the video is regenerated to "
            "show the reference subject; the rest is kept and pasted back exactly (Decode's vcu input). Draw "
            "the mask in the mask editor, or use a mask video.")
    base = common(wf, "a young woman in a boxing stance, throwing punches, in the same room")
    frames, fps = load_clip(wf)
    mask = wf.add("LoadImageMask", image=MASK, channel="red")  # widgets_values: file, channel, upload
    vcu = wf.add("VACEBuildVCU", frames=frames, masks=mask, references=wf.add("LoadImage", image=REFERENCE), **SIZE)
    finish(wf, base, vcu, "swap_anything", fps, composite=True)


ANNOTATOR_MODELS = {
    "depth": {"name": "depth_anything_v2_vitl.pth", "directory": "annotators",
              "url": "https://huggingface.co/depth-anything/Depth-Anything-V2-Large/resolve/main/"
                     "depth_anything_v2_vitl.pth"},
    "sam2": {"name": "sam2.1_hiera_large.pt", "directory": "sam2",
             "url": "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_large.pt"},
}
# ComfyUI's model listing (/experiment/models/<folder>), which the frontend's Missing Models dialog checks, shows
# only files with its supported_pt_extensions: a file named in properties.models must have one of them, or the
# dialog reports it missing on every load even when it is there
LISTABLE = (".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft")
# DWPose (VACE's own pose annotator; onnxruntime is in the annotator extras, unlike MediaPipe) ships .onnx files:
# their links go in a note (and the node's error names a missing one with them), not in properties.models
DWPOSE_FILES = ("yolox_l.onnx", "dw-ll_ucoco_384.onnx")
DWPOSE_NOTE = ("**DWPose weights**: the pose annotator (backend dwpose) needs " + " and ".join(
    f"[{name}](https://huggingface.co/yzd-v/DWPose/resolve/main/{name})" for name in DWPOSE_FILES) +
    " in models/annotators. ComfyUI's Missing Models dialog cannot see .onnx files, so it does not list them; the "
    "Pose Annotator names a missing one when it runs. No files? Set backend to mediapipe (offline, one person).")


def dwpose(wf: Workflow, frames: Node) -> Node:
    """The DWPose annotator and the note with its weights' links."""
    wf.note("DWPose weights", DWPOSE_NOTE)
    return wf.add("VACEPoseAnnotator", frames=frames, backend="dwpose")


CONTROL_NOTE = ("**Control video (V2V)**: the annotator turns the input video into a control video ({what}); "
                "the VCU holds it with masks of 1 everywhere, so every pixel is generated following it. The prompt "
                "says what the video shows. The preview shows the control video.")


def controlled(wf: Workflow, name: str, what: str, prompt: str, annotator: str, models=None, **options):
    """V2V: video -> annotator -> control VCU (previewed) -> video."""
    wf.note(f"{what.capitalize()} control", CONTROL_NOTE.format(what=what))
    base = common(wf, prompt)
    frames, fps = load_clip(wf)
    control = wf.add(annotator, models=models, frames=frames, **options)
    wf.add("PreviewImage", images=control)
    finish(wf, base, wf.add("VACEBuildVCU", frames=control, **SIZE), name, fps)


def depth(wf: Workflow):
    controlled(wf, "depth", "depth", "two bronze cat statues come alive and box in a museum hall", "VACEDepthAnnotator",
               [ANNOTATOR_MODELS["depth"]], model=ANNOTATOR_MODELS["depth"]["name"])


def pose(wf: Workflow):
    wf.note("DWPose weights", DWPOSE_NOTE)
    controlled(wf, "pose", "pose skeletons", "a dancer in a red dress on a stage, spotlight",
               "VACEPoseAnnotator", backend="dwpose")


def flow(wf: Workflow):
    controlled(wf, "flow", "optical flow drawn as colour", "two robots boxing in a neon-lit garage",
               "VACEFlowAnnotator", backend="dis")


def gray(wf: Workflow):
    controlled(wf, "gray", "grayscale frames: VACE colourises them",
               "two ginger cats boxing, vivid natural colours, warm light", "VACEGrayAnnotator")


def scribble(wf: Workflow):
    controlled(wf, "scribble", "line drawings", "a watercolour painting of two cats boxing, soft pastel colours",
               "VACEScribbleAnnotator", backend="xdog")


def inpaint_sam2(wf: Workflow):
    wf.note("Inpainting with SAM2", "**Inpaint (MV2V)**: SAM2 segments the object you click (points 'x,y' on "
            "`frame`, in pixels of the input video) and follows it through the video; the masked area (white) "
            "is regenerated from the prompt, the rest is kept and pasted back. Needs the `sam2` package and a "
            "SAM2.1 checkpoint in models/sam2. Grow the mask a little so edges blend.")
    base = common(wf, "a golden retriever boxing with its paws, in the same room")
    frames, fps = load_clip(wf)
    masks = wf.add("VACESAM2Masks", models=[ANNOTATOR_MODELS["sam2"]], frames=frames, points="110,120",
                   checkpoint=ANNOTATOR_MODELS["sam2"]["name"])
    grown = wf.add("VACECompositeMask", mask_a=masks, operation="grow", amount=8)
    finish(wf, base, wf.add("VACEBuildVCU", frames=frames, masks=grown, **SIZE), "inpaint_sam2", fps, composite=True)


def animate_anything(wf: Workflow):
    wf.note("Animate anything", "**Reference + pose**: a character from a reference image moves as the person "
            "in the video does. The pose annotator makes the control video; the reference image (a plain "
            "background works best) is added to the same VCU.")
    base = common(wf, "the young woman from the reference dancing, full body, clean background")
    frames, fps = load_clip(wf)
    poses = dwpose(wf, frames)
    vcu = wf.add("VACEBuildVCU", frames=poses, references=wf.add("LoadImage", image=REFERENCE), **SIZE)
    finish(wf, base, vcu, "animate_anything", fps)


def move_anything(wf: Workflow):
    wf.note("Move anything", "**Image + layout**: the first frame is your image; the layout annotator draws a "
            "box moving from `start_box` to `end_box` (x1,y1,x2,y2 in pixels) and **Compose VCUs** makes the "
            "object inside the start box follow it. Describe the motion in the prompt.")
    base = common(wf, "a green snake slithering slowly to the right on a white floor")
    first = wf.add("VACEFramePlacement", images=wf.add("LoadImage", image=REFERENCE_2), placement="first", **SIZE)
    layout = wf.add("VACELayoutAnnotator", start_box="96,140,336,380", end_box="496,140,736,380", **SIZE)
    vcu = wf.add("VACEComposeVCU", vcu_a=first, vcu_b=wf.add("VACEBuildVCU", frames=layout, **SIZE))
    finish(wf, base, vcu, "move_anything")


REGIONAL_NOTE = ("**Regional prompts** (VideoGrain's space-time layout attention): each region's prompt steers only "
                 "its masked pixels (cross-attention) and the regions' features stay apart (self-attention) during "
                 "the first 30% of the steps. Write each region's prompt word for word inside the global prompt. "
                 "Regional Prompts' `positive` goes to the sampler's positive, `regions` to its regions input. "
                 "{what}")


def regional_prompts(wf: Workflow, base: dict, prompt: str, regions: list, background: str = "") -> tuple:
    """Regional Prompts over (prompt, mask) pairs: sets base's positive, returns the REGIONS output."""
    inputs = {f"{key}_{i}": value for i, (text, mask) in enumerate(regions, 1)
              for key, value in (("prompt", text), ("mask", mask))}
    node = wf.add("VACERegionalPrompts", clip=base["clip"], prompt=prompt, background_prompt=background, **inputs)
    base["positive"] = (node, 0)
    return node, 1


def regional_boxing_cats(wf: Workflow):
    wf.note("Multi-instance edit", REGIONAL_NOTE.format(
        what="Here SAM2 masks each cat from one click (x,y in the input video's pixels), the depth video keeps "
             "the motion, and the prompts turn the left cat into a tiger, the right one into a panda and the "
             "ring into a snowy mountain top."))
    base = common(wf, None)
    frames, fps = load_clip(wf)  # the boxing cats at 416x240
    sam2 = {"models": [ANNOTATOR_MODELS["sam2"]], "frames": frames, "checkpoint": ANNOTATOR_MODELS["sam2"]["name"]}
    left = wf.add("VACESAM2Masks", title="Left cat", points="97,150", **sam2)
    right = wf.add("VACESAM2Masks", title="Right cat", points="276,150", **sam2)
    depth = wf.add("VACEDepthAnnotator", models=[ANNOTATOR_MODELS["depth"]], frames=frames,
                   model=ANNOTATOR_MODELS["depth"]["name"])
    regions = regional_prompts(wf, base, "a tiger and a panda boxing on a snowy mountain top, cinematic light",
                               [("a tiger", left), ("a panda", right)], "a snowy mountain top")
    finish(wf, base, wf.add("VACEBuildVCU", frames=depth, **SIZE), "regional_boxing_cats", fps, regions=regions)


def half_mask(wf: Workflow, side: str) -> Node:
    """The left or right half of the frame, white, with native mask nodes."""
    width, height = SIZE["width"], SIZE["height"]
    half = wf.add("SolidMask", value=1.0, width=width // 2, height=height)
    return wf.add("MaskComposite", destination=wf.add("SolidMask", value=0.0, width=width, height=height),
                  source=half, x=0 if side == "left" else width // 2, y=0, operation="add")


def regional_pose(wf: Workflow):
    wf.note("Regional prompts + pose", REGIONAL_NOTE.format(
        what="Here a pose video drives the motion and the frame is split in halves: an astronaut on the left, a "
             "knight on the right. Masks can be any MASK: halves, boxes, SAM2 or person masks."))
    base = common(wf, None)
    frames, fps = load_clip(wf)
    poses = dwpose(wf, frames)
    halves = [("an astronaut in a white suit", half_mask(wf, "left")),
              ("a knight in silver armour", half_mask(wf, "right"))]
    regions = regional_prompts(wf, base, "an astronaut in a white suit and a knight in silver armour dancing on a "
                               "theatre stage", halves, "a theatre stage")
    finish(wf, base, wf.add("VACEBuildVCU", frames=poses, **SIZE), "regional_pose", fps, regions=regions)


LONG_NOTE = ("**Long video**: the VCU is longer than one window, so the **VACE Long Video Sampler** makes it "
             "window by window and decodes inside (IMAGE out). Recommended: window 81 (what VACE was trained on), "
             "overlap 5, perturbation 0.02, colour anchoring at 1.0 (mkl removes tints best; reinhard "
             "matches LAB mean/std). Each extra window costs about one more 81-frame run. Cancel keeps the finished "
             "windows.")


def long_video(wf: Workflow, base: dict, vcu: Node, name: str, fps=None, **options) -> None:
    """Long Video Sampler (decodes inside) -> mp4."""
    images = wf.add("VACELongVideoSampler", vace_model=base["model"], vace_vae=base["vae"],
                    positive=base["positive"], negative=base["negative"], vcu=vcu, **options)
    video = wf.add("CreateVideo", images=images, fps=fps or 16.0)
    wf.add("SaveVideo", video=video, filename_prefix=f"video/vace_{name}")


def long_extension(wf: Workflow):
    wf.note("241-frame extension", LONG_NOTE + "\n\n**Extension to 241 frames (15 s)**: the clip's first 17 "
            "frames are kept and 224 more are generated in 4 windows; each window continues from the last 5 "
            "frames of the one before. Colours are anchored to the clip itself, and its pixels pasted back.")
    base = common(wf, "an astronaut turning slowly, the camera keeps panning right, continuous shot")
    frames, fps = load_clip(wf)
    clip = wf.add("ImageFromBatch", image=frames, batch_index=0, length=17)
    vcu = wf.add("VACEFramePlacement", images=clip, placement="extend_after", width=832, height=480, length=241)
    long_video(wf, base, vcu, "long_extension", fps, colour_anchor=clip, colour_method="mkl", paste_kept=True)


def long_pose(wf: Workflow):
    wf.note("Long pose-driven video", LONG_NOTE + "\n\n**Pose over 161 frames (10 s)**: the clip is chained "
            "with itself (**Repeat Image Batch**) into a long pose video; the pose annotator draws the skeletons "
            "and the windows follow them. Latent replacement holds each window to the frames it continues from.")
    base = common(wf, "a dancer in a red dress on a stage, spotlight, full body")
    frames, fps = load_clip(wf)
    chained = wf.add("RepeatImageBatch", image=frames, amount=2)
    poses = dwpose(wf, chained)
    vcu = wf.add("VACEBuildVCU", frames=poses, width=832, height=480, length=161)
    long_video(wf, base, vcu, "long_pose", fps, replace_latents=True, colour_method="mkl")


def long_hierarchical(wf: Workflow):
    wf.note("Hierarchical long video", LONG_NOTE + "\n\n**Keyframes, then interpolation (LVDM)**: 5 keyframes "
            "spread over 241 frames are made in one window, then each 61-frame gap is filled between its two "
            "keyframes, so errors cannot pile up window after window. More `keyframes` (4n+1) follow faster "
            "motion; the cost is one keyframe window plus one window per gap.")
    base = common(wf, "a time-lapse of clouds rolling over a mountain lake, from dawn to noon, static camera")
    vcu = wf.add("VACEBuildVCU", width=832, height=480, length=241)
    long_video(wf, base, vcu, "long_hierarchical", mode="hierarchical")


TIMELINE_NOTE = ("**Timeline**: **VACE Timeline** directs the long video window by window: one prompt per line "
                 "(or 'frame: prompt' lines), a reference image from a window on, an end frame pinned as a window's "
                 "last frame, seeds per window ('window: seed' lines; default the sampler's seed + window) and "
                 "loops. Turn on `save_state` to keep the run (output/vace_jobs/): set `rerender_from` to that "
                 "file and `rerender_window` to re-sample one window (new seed or prompt) while every other "
                 "window's frames are reused.")


def long_timeline(wf: Workflow):
    wf.note("3-segment timeline", TIMELINE_NOTE + "\n\n**Three segments over 233 frames** (three 81-frame "
            "windows): the same character (the reference, in every window) wakes up, walks to the window and "
            "looks out; the last window ends on the given last frame.")
    base = common(wf, "a young woman in a green coat, cinematic, soft daylight")
    prompts = ("a young woman in a green coat sleeps on a sofa in a bright living room\n"
               "the young woman in a green coat gets up and walks to the window\n"
               "the young woman in a green coat looks out of the window at the city")
    end = wf.add("ImageScale", image=wf.add("LoadImage", image=LAST), upscale_method="lanczos",
                 width=SIZE["width"], height=SIZE["height"], crop="center")
    timeline = wf.add("VACETimeline", clip=base["clip"], prompts=prompts, blend=True,
                      reference=wf.add("LoadImage", image=REFERENCE), reference_window=0, end_frame=end,
                      end_frame_window=-1)
    vcu = wf.add("VACEBuildVCU", width=832, height=480, length=233)
    long_video(wf, base, vcu, "long_timeline", timeline=timeline, save_state=True)


def long_loop(wf: Workflow):
    wf.note("Seamless loop", TIMELINE_NOTE + "\n\n**A loop over 157 frames**: the last window also keeps the "
            "video's first 5 frames at its end (mask 0), so the last frames equal the first ones: play all but "
            "the last `overlap` frames on repeat. The cost: those frames repeat the start, and the last window, "
            "kept at both ends, has fewer frames to move in.")
    base = common(wf, "waves rolling onto a sandy beach at sunset, static camera, calm")
    timeline = wf.add("VACETimeline", clip=base["clip"], prompts="", loop=True)
    long_video(wf, base, wf.add("VACEBuildVCU", width=832, height=480, length=157), "long_loop", timeline=timeline)


LORA_NAMES = ("wan_character_a_lora.safetensors", "wan_character_b_lora.safetensors")


def region_loras(wf: Workflow):
    wf.note("Two characters, a LoRA each", "**LoRAs confined to regions**: each **VACE LoRA** gets a `region` "
            "mask (white = where it acts, one mask or one per frame), so two character LoRAs coexist: each "
            "changes only its region's tokens (y = W x + s m (B A x)). With **Regional Prompts** give "
            "`region_index` instead (its region N). Put your Wan2.1 LoRAs in models/loras and choose them here; "
            "the two halves stand for the characters' masks (SAM2 or person masks follow them).")
    base = common(wf, None)
    halves = [("a woman in a red dress", half_mask(wf, "left")), ("a man in a blue suit", half_mask(wf, "right"))]
    regions = regional_prompts(wf, base, "a woman in a red dress and a man in a blue suit dancing in a ballroom",
                               halves, "a ballroom")
    model = base["model"]
    for name, (_, mask) in zip(LORA_NAMES, halves, strict=True):
        model = wf.add("VACELoRA", vace_model=model, lora_name=name, strength=1.0, region=mask)
    base["model"] = model
    finish(wf, base, wf.add("VACEBuildVCU", **SIZE), "region_loras", regions=regions)


def wan22_two_experts(wf: Workflow):
    wf.note("Wan2.2-VACE-Fun-A14B", "**Two experts**: Wan2.2 denoises with a high-noise expert while the timestep "
            "is >= 875 (of 1000), then a low-noise expert, each with its own cfg (official A14B: 40 steps, "
            "shift 12, cfg 4 then 3; these replace the Wan2.1 file and settings named above). Load each file "
            "with **Load VACE Model** (the weights look like Wan2.1-VACE-14B, so the file decides which expert "
            "it is), connect the high-noise one to the sampler and the low-noise one through **VACE Wan2.2 "
            "Low-Noise Expert**. Only one expert is on the GPU at a time. Same VAE and text encoder as Wan2.1; "
            "14B sizes (1280x720 or 832x480). Put LoRAs on each expert's model.")
    high = wf.add("VACEModelLoader", title="High-noise expert", models=[EXPERTS[0]], model_name=EXPERT_NAMES[0])
    base = common(wf, "a cat in a tiny astronaut suit walking on the moon, earth in the sky, cinematic", high)
    low = wf.add("VACEModelLoader", title="Low-noise expert", models=[EXPERTS[1]], model_name=EXPERT_NAMES[1])
    vcu = wf.add("VACEBuildVCU", references=wf.add("LoadImage", image=REFERENCE), **SIZE)
    finish(wf, base, vcu, "wan22_two_experts", steps=40, cfg=4.0, shift=12.0,
           low_noise_expert=wf.add("VACEWan22LowNoiseExpert", low_noise_model=low, cfg=3.0, boundary=0.875))


EXAMPLES: dict[str, Callable[[Workflow], None]] = {
    "vace_t2v": t2v, "vace_r2v_two_references": r2v, "vace_depth": depth, "vace_pose": pose, "vace_flow": flow,
    "vace_gray_colourise": gray, "vace_scribble": scribble, "vace_inpaint_sam2": inpaint_sam2,
    "vace_outpaint": outpaint, "vace_temporal_extension": extension, "vace_first_last_frame": first_last,
    "vace_swap_anything": swap_anything, "vace_animate_anything": animate_anything,
    "vace_move_anything": move_anything, "vace_long_extension": long_extension, "vace_long_pose": long_pose,
    "vace_long_hierarchical": long_hierarchical, "vace_regional_boxing_cats": regional_boxing_cats,
    "vace_regional_pose": regional_pose,
    "vace_wan22_two_experts": wan22_two_experts, "vace_long_timeline": long_timeline, "vace_long_loop": long_loop,
    "vace_region_loras": region_loras,
}


# titles in the template browser (it shows the file name) and their order (web/vace.js sorts by number)
TITLES = {
    "vace_t2v": "Text to video", "vace_r2v_two_references": "Reference to video (two references)",
    "vace_first_last_frame": "First and last frame", "vace_temporal_extension": "Temporal extension",
    "vace_outpaint": "Outpainting", "vace_inpaint_sam2": "Inpainting with SAM2 clicks",
    "vace_swap_anything": "Swap anything (reference + mask)", "vace_depth": "Depth control",
    "vace_pose": "Pose control", "vace_flow": "Optical flow control", "vace_gray_colourise": "Colourise gray video",
    "vace_scribble": "Scribble control", "vace_animate_anything": "Animate anything (reference + pose)",
    "vace_move_anything": "Move anything (image + layout)", "vace_long_extension": "Long video - 241-frame extension",
    "vace_long_pose": "Long video - 161-frame pose control", "vace_long_hierarchical": "Long video - keyframes "
    "then interpolation", "vace_regional_boxing_cats": "Regional prompts - multi-instance edit",
    "vace_regional_pose": "Regional prompts with pose", "vace_wan22_two_experts": "Wan2.2 VACE-Fun two experts",
    "vace_long_timeline": "Long video - 3-segment timeline", "vace_long_loop": "Long video - seamless loop",
    "vace_region_loras": "Two characters with a LoRA each",
}


def file_name(name: str) -> str:
    """The example's file name without extension: 'VACE 01 Text to video' (its id when it has no title)."""
    return f"VACE {list(TITLES).index(name) + 1:02d} {TITLES[name]}" if name in TITLES else name


def example_path(name: str, suffix: str = ".json") -> Path:
    return EXAMPLES_DIR / f"{file_name(name)}{suffix}"


def build(name: str, object_info: dict) -> dict:
    wf = Workflow(object_info, name)
    wf.note("About this workflow", MODELS_NOTE)
    EXAMPLES[name](wf)
    return wf.to_json()


def write_all(object_info: dict) -> list[Path]:
    EXAMPLES_DIR.mkdir(exist_ok=True)
    paths = []
    for name in EXAMPLES:
        paths.append(example_path(name))
        paths[-1].write_text(json.dumps(build(name, object_info), indent=2, ensure_ascii=False) + "\n")
    return paths


def main() -> None:
    from .comfy_server import ComfyServer, find_runtime, runtime_hint
    from .fixtures import write_inputs, write_models
    from .thumbnails import write_thumbnails

    runtime = find_runtime()
    if runtime is None:
        sys.exit(runtime_hint())
    with tempfile.TemporaryDirectory() as tmp:
        write_models(Path(tmp))
        write_inputs(Path(tmp), 64, 64, 9)
        with ComfyServer(runtime, Path(tmp)) as server:
            for path in write_all(server.object_info()):
                print(path)
    write_thumbnails(TITLES, {name: example_path(name, ".jpg") for name in EXAMPLES})


if __name__ == "__main__":
    main()
