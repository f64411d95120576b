"""Install hygiene: the pack's runtime requirements and the annotator extras, installed into a ComfyUI environment
that has numpy 2, keep numpy 2 and bring one OpenCV distribution (one `cv2`). Only the opt-in
requirements-mediapipe.txt pins numpy<2, and it says so.

pip resolves the install as a user's `pip install -r ...` would (a dry run from an empty environment, with the
user's `numpy>=2` as a requirement and the torch constraint), and reports what it would install.
"""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OPENCV = {"opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless"}


def resolve(*requirements: str) -> dict[str, str]:
    """{distribution: version} pip would install for the requirement files, from nothing, with numpy>=2."""
    files = [arg for name in requirements for arg in ("-r", str(ROOT / name))]
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--dry-run", "--ignore-installed", "--report", "-",
           "-c", str(ROOT / "constraints.txt"), "numpy>=2", *files]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"pip could not install {requirements} beside numpy>=2:\n{done.stderr[-3000:]}"
    report = json.loads(done.stdout)
    return {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in report["install"]}


def test_requirements_and_annotator_extras_keep_numpy_2_and_one_opencv():
    installed = resolve("requirements.txt", "requirements-annotators.txt")
    assert int(installed["numpy"].split(".")[0]) >= 2, installed["numpy"]
    assert len(OPENCV & set(installed)) == 1, sorted(OPENCV & set(installed))
    assert "mediapipe" not in installed and "torch" not in installed  # torch is ComfyUI's


def test_mediapipe_file_is_apart_and_says_what_it_changes():
    text = (ROOT / "requirements-mediapipe.txt").read_text()
    assert "mediapipe==" in text and "numpy" in text and "opencv-contrib-python" in text
    for name in ("requirements.txt", "requirements-annotators.txt"):
        lines = [line.split("#")[0].strip() for line in (ROOT / name).read_text().splitlines()]
        assert not [line for line in lines if line.startswith(("mediapipe", "numpy<", "opencv-contrib"))], name
