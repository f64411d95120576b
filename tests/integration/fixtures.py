"""Tiny checkpoints under the real file names, and small real input media, in a ComfyUI base directory.

Weights are random (fixed seeds): the tests check plumbing, errors and parity, never picture quality. The model
writers run once per session: later calls copy the files the first one wrote (`written_once`).
"""

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from safetensors.torch import save_file

from vace_core.checkpoints import save_checkpoint, split_vace_module
from vace_core.config import VaceConfig
from vace_core.example_media import FILES
from vace_core.transformer import VaceTransformer
from vace_core.vae import WanVAE, load_vae
from vace_core.video_io import write_video

DIT_NAME = "wan2.1_vace_1.3B_fp16.safetensors"
VAE_NAME = "wan_2.1_vae.safetensors"
TEXT_ENCODER_NAME = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
MODULE_NAME = "wan2.1_vace_module_only_fp16.safetensors"  # context blocks only: needs a base model
SAM2_NAME = "sam2.1_hiera_tiny.pt"
# Wan2.2-VACE-Fun-A14B as Comfy-Org/Wan_2.2_ComfyUI_Repackaged ships it (scaled fp8); here tiny, two seeds
EXPERT_NAMES = ("wan2.2_fun_vace_high_noise_14B_fp8_scaled.safetensors",
                "wan2.2_fun_vace_low_noise_14B_fp8_scaled.safetensors")
# real-shaped text (4096, umt5) and head dim (128, so RoPE splits like the real model); tiny otherwise
TINY_DIT = VaceConfig(dim=256, ffn_dim=512, num_heads=2, num_layers=4, vace_layers=(0, 2), text_dim=4096)
TINY_VAE = dict(dim=8, z_dim=16, dim_mult=(1, 2, 2, 2), num_res_blocks=1, temporal_downsample=(False, True, True))
FULL_VAE = dict(dim=96, z_dim=16, dim_mult=(1, 2, 4, 4), num_res_blocks=2, temporal_downsample=(False, True, True))


def written_once(write):
    """`write(base, ...)` runs once per session for each set of arguments, into a folder of its own; every call
    copies those files into its `base` (a copy: tests may overwrite or damage their files), leaves torch's RNG as
    the writer left it, and returns the writer's paths moved to `base`."""
    done = {}

    def moved(result, source: Path, base: Path):
        if isinstance(result, dict):
            return {k: moved(v, source, base) for k, v in result.items()}
        return base / result.relative_to(source)

    @functools.wraps(write)
    def copy(base: Path, *args, **kwargs):
        key = repr((args, sorted(kwargs.items())))
        if key not in done:
            source = Path(tempfile.mkdtemp(prefix=f"vace_{write.__name__}_"))
            atexit.register(shutil.rmtree, source, ignore_errors=True)
            done[key] = source, write(source, *args, **kwargs), torch.get_rng_state()
        source, result, rng = done[key]
        shutil.copytree(source, base, dirs_exist_ok=True)
        torch.set_rng_state(rng)
        return moved(result, source, Path(base))
    return copy


@written_once
def write_models(base: Path, vae_shape: dict = TINY_VAE) -> dict[str, Path]:
    """The DiT (fp16, official keys), the VAE (the shape given), a VACE-module-only file, and two Wan2.2 experts."""
    torch.manual_seed(0)
    dit = VaceTransformer(TINY_DIT).state_dict()
    paths = {"dit": base / "models" / "diffusion_models" / DIT_NAME,
             "module": base / "models" / "diffusion_models" / MODULE_NAME,
             "vae": base / "models" / "vae" / VAE_NAME}
    save_checkpoint(dit, paths["dit"], "official", torch.float16)
    save_checkpoint(split_vace_module(dit)[1], paths["module"], "official", torch.float16)
    for seed, name in enumerate(EXPERT_NAMES, start=2):
        torch.manual_seed(seed)
        save_checkpoint(VaceTransformer(TINY_DIT).state_dict(), base / "models" / "diffusion_models" / name,
                        "official", torch.float8_e4m3fn, scaled=True)
    torch.manual_seed(1)
    vae = WanVAE(**vae_shape)
    paths["vae"].parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.half().contiguous() for k, v in vae.state_dict().items()}, paths["vae"])  # as shipped: 16 bit
    assert load_vae(paths["vae"]).config == WanVAE(**vae_shape).config  # our loader reads the shape back
    return paths


@written_once
def write_annotator_models(base: Path) -> Path:
    """A tiny random MiDaS DPT-hybrid folder under the name the depth annotator looks for."""
    from tests.test_annotators_depth import tiny_dpt_hybrid

    torch.manual_seed(2)
    folder = base / "models" / "annotators" / "dpt-hybrid-midas"
    tiny_dpt_hybrid().save_pretrained(folder)
    return folder


def write_dwpose_models(base: Path) -> Path:
    """DWPose-shaped ONNX files (yolox_l.onnx, dw-ll_ucoco_384.onnx) in models/annotators."""
    from tests.test_annotators_pose import write_dwpose_pair

    folder = base / "models" / "annotators"
    folder.mkdir(parents=True, exist_ok=True)
    write_dwpose_pair(folder)
    return folder


@written_once
def write_sam2_checkpoint(base: Path) -> Path:
    """SAM2.1 hiera-tiny (the released architecture and file layout) with random weights, its object-score head
    biased to +10: the model then always finds the prompted object present (a random head often scores it absent,
    and SAM2 then blanks the mask), so prompted masks are never empty. Built at the test server's input size
    (test_text_node/small_sam2.py)."""
    from sam2.build_sam import build_sam2_video_predictor

    from tests.integration.test_text_node.small_sam2 import OVERRIDES

    torch.manual_seed(3)
    model = build_sam2_video_predictor("configs/sam2.1/sam2.1_hiera_t.yaml", None, device="cpu",
                                       hydra_overrides_extra=OVERRIDES)
    with torch.no_grad():
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(10.0)
    path = base / "models" / "sam2" / SAM2_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict()}, path)
    return path


def photo(name: str, height: int, width: int) -> np.ndarray:
    """A real photo from skimage.data, centre-cropped and resized: uint8 (H, W, 3)."""
    from skimage import data

    image = PIL.Image.fromarray(getattr(data, name)()).convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    scale = max(height, width) / side
    image = image.resize((round(side * scale), round(side * scale)), PIL.Image.LANCZOS)
    left, top = (image.width - width) // 2, (image.height - height) // 2
    return np.asarray(image.crop((left, top, left + width, top + height)))


def pan(image: np.ndarray, frames: int, height: int, width: int, step: int = 2) -> np.ndarray:
    """A clip panning right across `image` by `step` px per frame: (T, H, W, 3)."""
    return np.stack([image[:height, t * step:t * step + width] for t in range(frames)])


def write_inputs(base: Path, height: int, width: int, frames: int) -> dict[str, str]:
    """Small images, a mask and a clip in input/, under the example media's names (example_media/); being there
    first, they win over the shipped files (which the pack copies only when absent)."""
    folder = base / "input"
    folder.mkdir(parents=True, exist_ok=True)
    wide = photo("astronaut", height, width + 2 * frames)
    clip = pan(wide, frames, height, width)
    write_video(folder / FILES["clip"], torch.from_numpy(clip).float() / 255, 16.0)
    PIL.Image.fromarray(photo("coffee", height, width)).save(folder / FILES["reference"])
    PIL.Image.fromarray(photo("chelsea", height, width)).save(folder / FILES["reference_2"])
    PIL.Image.fromarray(clip[0]).save(folder / FILES["first"])
    PIL.Image.fromarray(clip[-1]).save(folder / FILES["last"])
    mask = np.zeros((height, width), np.uint8)  # white = generate: a box in the middle
    mask[height // 4: 3 * height // 4, width // 4: 3 * width // 4] = 255
    PIL.Image.fromarray(mask).save(folder / FILES["mask"])
    return {"clip": FILES["clip"], "reference": FILES["reference"]}


def write_base(base: Path, height: int, width: int, frames: int, dwpose: bool = True) -> Path:
    """A ComfyUI base directory with everything the example workflows load: the tiny models under the real
    names, annotator weights (DWPose's unless `dwpose` is off) and the inputs."""
    write_models(base)
    write_annotator_models(base)
    if dwpose:
        write_dwpose_models(base)
    write_sam2_checkpoint(base)
    write_character_loras(base)
    write_inputs(base, height, width, frames)
    return base


def write_character_loras(base: Path) -> None:
    """Two LoRAs (attention and FFN layers, as character LoRAs are trained) under the region-LoRA example's names."""
    from tests.integration.examples import LORA_NAMES
    from tests.lora_files import comfy_lora

    shapes = {k: tuple(v.shape) for k, v in VaceTransformer(TINY_DIT).state_dict().items()}
    layers = {"blocks.0.self_attn.q": "lora_alpha", "blocks.1.cross_attn.k": "lora", "blocks.2.ffn.0": "lora"}
    (base / "models" / "loras").mkdir(parents=True, exist_ok=True)
    for seed, name in enumerate(LORA_NAMES):
        save_file(comfy_lora(shapes, seed, layers=layers), base / "models" / "loras" / name)
