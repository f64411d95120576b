"""Our VACE Sampler next to ComfyUI's native WanVaceToVideo + KSampler, in one real ComfyUI server, on the
same files and inputs: a swap-anything task (control video + per-frame masks + one reference image).

Both load the same tiny DiT file (wan2.1_vace_1.3B_fp16.safetensors, dim 256, 2 heads of 128, 4 layers,
context blocks after 0 and 2) through their own loaders (ours: VACEModelLoader; native: UNETLoader). ComfyUI's
VAELoader builds the Wan2.1 VAE at its real width whatever the file holds, so this module writes a full-size
VAE with random weights (fixed seed) that both VAE loaders read. Inputs sit at the video size already (64x64,
9 frames, the reference too), so native centre-crop and our letterbox are both the identity, and masks are
given per frame (native treats a single mask as frame 0's only). Text: the test-only VACETestTextEncode node
(real-shaped (1, 512, 4096) umt5 features; no real text encoder exists here). Both sample with Euler, cfg 5.

The LATENTs are compared (ComfyUI's Wan 2.1 convention; native reference frames trimmed). They are not
bit-equal because the sigma schedules differ by design: ours is the official Wan grid (linspace from
sigma_max = 0.999, integer timesteps, starting from pure noise), ComfyUI's "simple" schedule starts at
sigma 1 and passes fractional timesteps. The encoded VCU and the DiT forward are the same math.
"""

import numpy as np
import PIL.Image
import pytest

from tests.integration.comfy_server import messages, output_files
from tests.integration.fixtures import FULL_VAE, VAE_NAME, write_inputs, write_models
from tests.integration.native_graphs import FRAMES, H, W, native, native_same_sigmas, ours, run_latent


@pytest.fixture(scope="module")
def comfy(comfy_server, tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy_parity")
    write_models(base, vae_shape=FULL_VAE)
    write_inputs(base, H, W, FRAMES)
    with comfy_server.serving(base) as server:
        yield server


def test_same_latent_as_native_wan_vace(comfy):
    a, _ = run_latent(comfy, ours(4, seed=5))
    b, _ = run_latent(comfy, native(4, seed=5))
    assert a.shape == b.shape == (1, 16, 3, H // 8, W // 8)
    relative = ((a - b).norm() / b.norm()).item()
    print(f"\nours vs native (4 Euler steps): max |diff| {(a - b).abs().max():.3e}, relative L2 {relative:.3e}, "
          f"latent std {b.std():.3f}")
    assert relative < 0.03
    # Same grid, and shift 1 with 3 steps, where both pass the same whole timesteps (999, 666, 333): only the
    # start differs (native x = sigma_0 * noise = 0.999 * noise; ours, as the official code: pure noise)
    a1, _ = run_latent(comfy, ours(3, seed=5, shift=1.0))
    d1, _ = run_latent(comfy, native_same_sigmas(3, seed=5, shift=1.0))
    same_math = ((a1 - d1).norm() / d1.norm()).item()
    print(f"same grid and timesteps (shift 1, 3 steps): max |diff| {(a1 - d1).abs().max():.3e}, relative L2 "
          f"{same_math:.3e}")
    assert same_math < 5e-3  # measured 3.2e-3: the 0.1% start difference carried through 3 steps
    # a different seed moves the result far more than our difference from native: the difference is not noise
    c, _ = run_latent(comfy, native(4, seed=6))
    assert (c - b).norm() / b.norm() > 20 * relative


def test_native_vae_decode_reads_our_latent(comfy):
    """Our LATENT is in ComfyUI's Wan 2.1 convention: native VAE Decode gives the same frames as VACE Decode."""
    graph = ours(2, seed=7)
    del graph["save"]
    graph["native_vae"] = {"class_type": "VAELoader", "inputs": {"vae_name": VAE_NAME}}
    graph["native_decode"] = {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["native_vae", 0]}}
    graph["ours_decode"] = {"class_type": "VACEDecode", "inputs": {
        "vace_vae": ["vae", 0], "samples": ["sample", 0], "tiling": "off", "tile_size": 272, "tile_overlap": 64,
        "trim_latent": 0, "feather": 8}}
    for name in ("native", "ours"):
        graph[f"save_{name}"] = {"class_type": "SaveImage", "inputs": {
            "images": [f"{name}_decode", 0], "filename_prefix": f"decode_{name}"}}
    entry = comfy.run(graph, timeout=600)
    assert entry["status"]["status_str"] == "success", messages(entry).get("execution_error")
    files = sorted(output_files(comfy.base_dir, entry))
    frames = {name: [np.asarray(PIL.Image.open(p), np.float32) / 255 for p in files
                     if p.name.startswith(f"decode_{name}")] for name in ("native", "ours")}
    assert len(frames["ours"]) == len(frames["native"]) == FRAMES
    diff = np.abs(np.stack(frames["ours"]) - np.stack(frames["native"]))
    print(f"\nVACE Decode vs native VAE Decode on our LATENT: max |diff| {diff.max():.4f}, mean {diff.mean():.5f}")
    assert diff.max() <= 2 / 255  # 8-bit rounding of the same float frames
