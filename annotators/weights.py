"""The one place that finds annotator weight files.

Callers give the folders to search (inside ComfyUI: the `annotators` and `sam2` model folders; elsewhere any
models folder). Within each folder a file is found as `<file>`, in VACE's layout (`<task>/<file>`, also under
`VACE-Annotators/`), or in comfyui_controlnet_aux's layout (`ckpts/<hf repo>/<file>`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .base import AnnotatorError

VACE_ANNOTATORS_REPO = "ali-vilab/VACE-Annotators"


@dataclass(frozen=True)
class WeightFile:
    folder_kind: str  # "annotators" or "sam2": the ComfyUI model folder it belongs in
    repos: tuple[str, ...]  # Hugging Face repositories that publish it, best first
    vace_path: str = ""  # its path inside ali-vilab/VACE-Annotators, when VACE ships it
    url: str = ""  # a direct download, for files not on Hugging Face


KNOWN_WEIGHTS = {
    "yolox_l.onnx": WeightFile("annotators", ("yzd-v/DWPose", VACE_ANNOTATORS_REPO), "pose/yolox_l.onnx"),
    "dw-ll_ucoco_384.onnx": WeightFile(
        "annotators", ("yzd-v/DWPose", VACE_ANNOTATORS_REPO), "pose/dw-ll_ucoco_384.onnx"
    ),
    "depth_anything_v2_vitl.pth": WeightFile(
        "annotators",
        ("depth-anything/Depth-Anything-V2-Large", VACE_ANNOTATORS_REPO),
        "depth/depth_anything_v2_vitl.pth",
    ),
    "dpt_hybrid-midas-501f0c75.pt": WeightFile(
        "annotators", ("lllyasviel/Annotators", VACE_ANNOTATORS_REPO), "depth/dpt_hybrid-midas-501f0c75.pt"
    ),
    # a transformers model folder (config.json + weights), for MiDaS DPT-hybrid through transformers
    "dpt-hybrid-midas": WeightFile("annotators", ("Intel/dpt-hybrid-midas",)),
    "netG_A_latest.pth": WeightFile(
        "annotators",
        (VACE_ANNOTATORS_REPO, "lllyasviel/Annotators"),
        "scribble/anime_style/netG_A_latest.pth",
    ),
    "raft-things.pth": WeightFile("annotators", (VACE_ANNOTATORS_REPO,), "flow/raft-things.pth"),
    # torchvision's RAFT-large (what the RAFT backend loads)
    "raft_large_C_T_SKHT_V2-ff5fadd5.pth": WeightFile(
        "annotators", (), url="https://download.pytorch.org/models/raft_large_C_T_SKHT_V2-ff5fadd5.pth"
    ),
    "sam2.1_hiera_tiny.pt": WeightFile("sam2", ("facebook/sam2.1-hiera-tiny",)),
    "sam2.1_hiera_small.pt": WeightFile("sam2", ("facebook/sam2.1-hiera-small",)),
    "sam2.1_hiera_base_plus.pt": WeightFile("sam2", ("facebook/sam2.1-hiera-base-plus",)),
    "sam2.1_hiera_large.pt": WeightFile(
        "sam2", ("facebook/sam2.1-hiera-large", VACE_ANNOTATORS_REPO), "sam2/sam2.1_hiera_large.pt"
    ),
}


def relative_candidates(filename: str) -> list[str]:
    """Where `filename` may lie inside a models folder ('/'-separated, as ComfyUI lists names), in order."""
    known = KNOWN_WEIGHTS.get(filename)
    names = [filename]
    if known and known.vace_path:
        names += [known.vace_path, f"VACE-Annotators/{known.vace_path}"]
    for repo in known.repos if known else ():
        names.append(f"ckpts/{repo}/{filename}")
    return names


def candidates(filename: str, folder: Path) -> list[Path]:
    """Where `filename` may lie inside one models folder, in the order they are tried."""
    return [folder / name for name in relative_candidates(filename)]


def source_hint(filename: str) -> str:
    known = KNOWN_WEIGHTS.get(filename)
    if known is None:
        return ""
    where = [f"https://huggingface.co/{repo}" for repo in known.repos] + ([known.url] if known.url else [])
    vace = f" (in {VACE_ANNOTATORS_REPO} it is {known.vace_path})" if known.vace_path else ""
    return f" Download it from {' or '.join(where)}{vace}."


def resolve_weight(filename: str, folder_kind: str | None = None, search_dirs=()) -> Path:
    """The path of weight file (or model folder) `filename`, searched in `search_dirs`; an existing path is
    taken as is.

    A missing file raises AnnotatorError naming the file, the folder it belongs in and where to get it.
    """
    given = Path(filename).expanduser()
    if given.exists():
        return given
    known = KNOWN_WEIGHTS.get(filename)
    folder_kind = folder_kind or (known.folder_kind if known else "annotators")
    searched = [Path(d).expanduser() for d in search_dirs if d]
    for folder in searched:
        for path in candidates(filename, folder):
            if path.exists():
                return path
    looked = ", ".join(str(d) for d in searched) or "no folders were given"
    raise AnnotatorError(
        f"weight file '{filename}' not found. Put it in ComfyUI's models/{folder_kind}/ folder "
        f"(searched: {looked}).{source_hint(filename)}"
    )
