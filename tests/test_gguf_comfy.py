"""GGUF transformers in ComfyUI: listed from models/unet and models/diffusion_models, loaded by Load VACE Model,
sampled (alone, with a VACE LoRA, as a Wan2.2 expert) in a real server; ComfyUI's ModelPatcher keeps LoRAs unmerged
on the quantized weights however it loads the model (in-process, tests/integration/gguf_patcher.py).

Parity: the GGUF file (Q8_0) and a safetensors file holding the same weights as gguf-py's numpy code dequantizes
them (float32) give the same latent in the same graph: the pack's torch dequantization is the only difference.
"""

import json
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.gguf_files import read_numpy, write_gguf
from tests.integration.comfy_server import PromptRejected, output_files
from tests.integration.fixtures import EXPERT_NAMES, TINY_DIT, write_inputs, write_models
from tests.integration.graphs import FRAMES, H, W, assert_success, t2v_prompt
from tests.integration.native_graphs import run_latent
from tests.lora_files import comfy_lora
from tests.test_gguf import tiny_weights
from vace_core.checkpoints import load_vace_model
from vace_core.lora.apply import param_shapes
from vace_core.transformer import VaceTransformer

Q8 = "Wan2.1_VACE_tiny-Q8_0.gguf"  # in models/unet, where ComfyUI-GGUF users keep them
Q4K = "Wan2.1_VACE_tiny-Q4_K_M.gguf"  # in models/diffusion_models
REFERENCE = "gguf_q8_0_dequantized_fp32.safetensors"
LORA = "gguf_test_lora.safetensors"
STEPS = 2
ROOT = Path(__file__).resolve().parents[1]


def tiny_dit_weights(seed: int) -> dict[str, torch.Tensor]:
    """TINY_DIT (text 4096 wide, as ComfyUI's Wan encoder gives) with trained-like scales."""
    g = torch.Generator().manual_seed(seed)
    shapes = {k: v.shape for k, v in VaceTransformer(TINY_DIT, device="meta").state_dict().items()}
    return {k: (1 if "norm" in k else 0) + torch.randn(s, generator=g) / (s[-1] if len(s) > 1 else 16) ** 0.5
            for k, s in shapes.items()}


@pytest.fixture(scope="module")
def comfy(comfy_server, tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy_gguf")
    write_models(base)
    unet, diffusion = base / "models" / "unet", base / "models" / "diffusion_models"
    unet.mkdir(parents=True, exist_ok=True)
    q8 = write_gguf(tiny_dit_weights(0), unet / Q8, "Q8_0")
    write_gguf(tiny_dit_weights(1), diffusion / Q4K, "Q4_K")
    save_file({k: v.contiguous() for k, v in read_numpy(q8).items()}, diffusion / REFERENCE)
    shapes = param_shapes(load_vace_model(q8, device="cpu"))
    (base / "models" / "loras").mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in comfy_lora(shapes, scale=0.02).items()}, base / "models" / "loras" / LORA)
    outside = tmp_path_factory.mktemp("outside")  # a GGUF outside the model folders, linked from models/unet
    (unet / "escape.gguf").symlink_to(write_gguf(tiny_dit_weights(3), outside / "secret.gguf", "Q8_0"))
    write_inputs(base, H, W + 32, FRAMES)
    with comfy_server.serving(base) as server:
        yield server


def latent_graph(model: str, lora: bool = False) -> dict:
    prompt = t2v_prompt(seed=5, steps=STEPS)
    prompt["model"]["inputs"]["model_name"] = model
    for name in ("decode", "save"):
        del prompt[name]
    prompt["save"] = {"class_type": "SaveLatent", "inputs": {"samples": ["sample", 0], "filename_prefix": "gguf"}}
    if lora:
        prompt["lora"] = {"class_type": "VACELoRA", "inputs": {"vace_model": ["model", 0], "lora_name": LORA,
                                                              "strength": 1.0, "context_strength": 0.5}}
        prompt["sample"]["inputs"]["vace_model"] = ["lora", 0]
    return prompt


def options(comfy, node: str, name: str) -> list[str]:
    """A combo's choices in /object_info: V3 ["COMBO", {"options": [...]}], V1 [[...], {...}]."""
    kind, *rest = comfy.info[node]["input"]["required"][name]
    return rest[0]["options"] if kind == "COMBO" else kind


def test_loader_lists_gguf_from_unet_and_diffusion_models(comfy):
    models = options(comfy, "VACEModelLoader", "model_name")
    assert {Q8, Q4K, REFERENCE, *EXPERT_NAMES} <= set(models)
    assert Q8 in options(comfy, "VACEModelLoader", "base_model")
    native = options(comfy, "UNETLoader", "unet_name")
    assert REFERENCE in native and Q8 not in native and Q4K not in native  # ComfyUI's own loader cannot read GGUF


def test_gguf_link_leading_out_is_neither_listed_nor_opened(comfy):
    assert "escape.gguf" not in options(comfy, "VACEModelLoader", "model_name")
    with pytest.raises(PromptRejected) as rejected:
        comfy.queue(latent_graph("escape.gguf"))
    text = json.dumps(rejected.value.body["node_errors"])
    assert "'escape.gguf' is not a file in ComfyUI's models/diffusion_models folder" in text, text


def test_gguf_samples_like_its_dequantized_weights(comfy):
    gguf_latent, _ = run_latent(comfy, latent_graph(Q8))
    reference, _ = run_latent(comfy, latent_graph(REFERENCE))
    assert gguf_latent.abs().max() > 0.1
    torch.testing.assert_close(gguf_latent, reference, rtol=1e-5, atol=1e-5)
    gguf_lora, _ = run_latent(comfy, latent_graph(Q8, lora=True))
    reference_lora, _ = run_latent(comfy, latent_graph(REFERENCE, lora=True))
    assert (gguf_lora - gguf_latent).abs().max() > 1e-3  # the LoRA changes the GGUF model
    torch.testing.assert_close(gguf_lora, reference_lora, rtol=1e-5, atol=1e-5)
    again, _ = run_latent(comfy, latent_graph(Q8))  # the LoRA left the shared model as it was
    torch.testing.assert_close(again, gguf_latent, rtol=0, atol=0)


def test_k_quant_file_samples_and_decodes(comfy):
    prompt = t2v_prompt(seed=2, steps=2)
    prompt["model"]["inputs"]["model_name"] = Q4K
    entry = comfy.run(prompt, timeout=600)
    assert_success(entry)
    [video] = output_files(comfy.base_dir, entry)
    assert video.stat().st_size > 0


def test_gguf_expert_pair(comfy):
    """Wan2.2: a GGUF high-noise expert with a scaled-fp8 low-noise one (experts of one shape in any format)."""
    prompt = latent_graph(Q8)
    prompt["low_model"] = {**prompt["model"], "inputs": {**prompt["model"]["inputs"], "model_name": EXPERT_NAMES[1]}}
    prompt["low"] = {"class_type": "VACEWan22LowNoiseExpert", "inputs": {
        "low_noise_model": ["low_model", 0], "cfg": 3.0, "boundary": 0.0}}
    prompt["sample"]["inputs"]["low_noise_expert"] = ["low", 0]
    high_only, _ = run_latent(comfy, prompt)  # boundary 0: the GGUF expert throughout
    torch.testing.assert_close(high_only, run_latent(comfy, latent_graph(Q8))[0], rtol=0, atol=0)


def test_model_patcher_keeps_lora_unmerged_in_every_load_mode(comfy_runtime, tmp_path):
    """Fully loaded, a third resident and the rest streamed (ComfyUI's low-VRAM mode, the pack's block swap), then
    partly unloaded: the forward equals vace_core's own unmerged LoRA on the file, twice in a row (nothing added
    into stored weights), the ggml blocks never change, and unpatching gives the model without the LoRA."""
    model = write_gguf(tiny_weights(), tmp_path / "v.gguf", "Q4_K")
    lora = tmp_path / "lora.safetensors"
    shapes = param_shapes(load_vace_model(model, device="cpu"))
    save_file({k: v.contiguous() for k, v in comfy_lora(shapes).items()}, lora)
    done = subprocess.run([str(comfy_runtime.python), str(ROOT / "tests" / "integration" / "gguf_patcher.py"),
                           str(comfy_runtime.path), str(model), str(lora)], capture_output=True, text=True,
                           timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["patcher"] == result["clone"] == "QuantizedPatcher"
    assert result["vace_core_keeps_blocks"] and result["lora_changes"] > 1e-3 * result["scale"]
    for mode in ("full", "partial", "after_partial_unload"):
        assert result[mode]["diff"] <= 1e-6 * result["scale"], (mode, result)
        assert result[mode]["blocks_unchanged"], mode
    assert result["partial"]["streamed_quantized"] > 0 and result["freed"] > 0
    assert result["unpatched_equals_base"] and result["unpatched_blocks_unchanged"]
