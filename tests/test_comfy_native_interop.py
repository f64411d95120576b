"""Our nodes next to ComfyUI's native Wan VACE path, in one real ComfyUI server, on the same files and inputs.

- VACE LoRA vs native LoraLoaderModelOnly on the native model: the weights ComfyUI runs (patches applied on load)
  are compared key by key (fp32 file, fp32 weights), for a LoRA with low-rank pairs (alpha and none, a conv),
  full deltas (.diff on norms and modulation), bias deltas (.diff_b) and context-block layers, and for LyCORIS
  LoHa / LoKr; kohya and diffusers layouts of the same LoRA through our node give the same weights; vace_core's
  own merge gives them too. Then both sample (same sigma grid) and agree as closely as without a LoRA.
- fp8 base + LoRA samples; a LoRA of another family fails with its message and the queue keeps working; keys
  that do not apply are named in the log.
- VCU to Native Conditioning vs WanVaceToVideo: the context tensors, strengths, latent and trim are equal, a
  native KSampler gives the same latent from both, two streams equal two chained WanVaceToVideo, and a native
  LoRA loader on that path runs.
"""

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.integration.comfy_server import messages, output_files
from tests.integration.fixtures import FULL_VAE, TINY_DIT, VAE_NAME, write_inputs, write_models
from tests.integration.native_graphs import CFG, FRAMES, H, W, native_same_sigmas, ours, run_latent, shared
from tests.lora_files import LAYERS, comfy_lora, diffusers, kohya, lycoris
from vace_core.checkpoints import load_vace_model, save_checkpoint
from vace_core.lora import apply_lora
from vace_core.transformer import VaceTransformer

FP32_DIT = "wan2.1_vace_1.3B_fp32.safetensors"
LORAS = {"comfy": "wan_lora.safetensors", "kohya": "wan_lora_kohya.safetensors",
         "diffusers": "wan_lora_diffusers.safetensors", "lycoris": "wan_lora_lycoris.safetensors",
         "i2v": "wan_i2v_lora.safetensors", "flux": "flux_lora.safetensors",
         "no_modulation": "wan_lora_no_modulation.safetensors"}
STRENGTH = 0.8


def shapes():
    return {k: tuple(v.shape) for k, v in VaceTransformer(TINY_DIT, device="meta").state_dict().items()}


@pytest.fixture(scope="module")
def comfy(comfy_server, tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy_interop")
    paths = write_models(base, vae_shape=FULL_VAE)
    save_checkpoint(load_vace_model(paths["dit"], device="cpu").state_dict(),
                    paths["dit"].with_name(FP32_DIT), "official", torch.float32)  # the same weights, fp32
    write_inputs(base, H, W, FRAMES)
    lora = comfy_lora(shapes(), seed=4)
    i2v = {f"diffusion_model.blocks.{i}.cross_attn.{m}.lora_{p}.weight": torch.zeros(4, 256)
           for i in range(2) for m in ("k_img", "v_img") for p in ("up", "down")}
    files = {"comfy": lora, "kohya": kohya(lora), "diffusers": diffusers(lora), "lycoris": lycoris(shapes(), seed=5),
             "i2v": {**lora, **i2v}, "no_modulation": {k: v for k, v in lora.items() if "modulation" not in k},
             "flux": {"diffusion_model.double_blocks.0.img_attn.qkv.lora_up.weight":
                                              torch.zeros(9, 4)}}
    (base / "models" / "loras").mkdir(parents=True, exist_ok=True)
    for kind, tensors in files.items():
        save_file(tensors, base / "models" / "loras" / LORAS[kind])
    with comfy_server.serving(base) as server:
        server.files = files
        yield server


def run_files(comfy, graph) -> dict[str, dict]:
    entry = comfy.run(graph, timeout=900)
    error = messages(entry).get("execution_error") or {}
    assert entry["status"]["status_str"] == "success", (error.get("exception_message"), error.get("traceback"))
    return {p.stem: load_file(p) for p in output_files(comfy.base_dir, entry)}


def our_model(weight_dtype="fp32"):
    return {"class_type": "VACEModelLoader", "inputs": {
        "model_name": FP32_DIT, "base_model": "none (the file is a full VACE model)", "weight_dtype": weight_dtype,
        "compute_dtype": "fp32", "attention": "sdpa", "block_swap": 0}}


def our_lora(model, kind, strength=STRENGTH):
    return {"class_type": "VACELoRA", "inputs": {"vace_model": model, "lora_name": LORAS[kind],
                                                 "strength": strength, "context_strength": strength}}


def native_lora(model, kind, strength=STRENGTH):
    return {"class_type": "LoraLoaderModelOnly", "inputs": {"model": model, "lora_name": LORAS[kind],
                                                            "strength_model": strength}}


def save_weights(name, **model):
    return {"class_type": "VACETestSaveWeights", "inputs": {"name": name, **model}}


def rel(a, b):
    return ((a - b).norm() / b.norm().clamp(min=1e-12)).item()


def test_lora_node_equals_native_lora_loader(comfy):
    graph = {"ours": our_model(), "native": {"class_type": "UNETLoader", "inputs": {"unet_name": FP32_DIT,
                                                                                  "weight_dtype": "default"}},
             "save_base": save_weights("base", model=["native", 0])}
    for kind in ("comfy", "kohya", "diffusers", "lycoris"):
        graph[f"ours_{kind}"] = our_lora(["ours", 0], kind)
        graph[f"save_ours_{kind}"] = save_weights(f"ours_{kind}", vace_model=[f"ours_{kind}", 0])
    for kind in ("comfy", "lycoris"):
        graph[f"native_{kind}"] = native_lora(["native", 0], kind)
        graph[f"save_native_{kind}"] = save_weights(f"native_{kind}", model=[f"native_{kind}", 0])
    graph["ours_stack"] = our_lora(["ours_comfy", 0], "lycoris", 0.5)  # a stack: comfy 0.8, then LyCORIS 0.5
    graph["native_stack"] = native_lora(["native_comfy", 0], "lycoris", 0.5)
    graph["save_ours_stack"] = save_weights("ours_stack", vace_model=["ours_stack", 0])
    graph["save_native_stack"] = save_weights("native_stack", model=["native_stack", 0])
    w = run_files(comfy, graph)
    base = w["base"]
    expected = {f"{layer}.weight" if f"{layer}.weight" in base else layer for layer, kind in LAYERS.items()
                if kind != "diff_b"} | {f"{layer}.bias" for layer, kind in LAYERS.items() if kind == "diff_b"}
    # ComfyUI's loader patches only leaf modules' parameters: native drops the modulation delta, our node applies it
    native_skips = {"blocks.0.modulation"}
    for kind in ("comfy", "lycoris"):
        ours, theirs = w[f"ours_{kind}"], w[f"native_{kind}"]
        assert ours.keys() == theirs.keys() == base.keys()
        changed = {k for k in base if not torch.equal(theirs[k], base[k])}
        assert changed | (native_skips if kind == "comfy" else set()) == {k for k in base
                                                                           if not torch.equal(ours[k], base[k])}
        worst = max(rel(ours[k] - base[k], theirs[k] - base[k]) for k in changed)
        print(f"\n{kind}: {len(changed)} weights changed; worst relative difference of the change ours vs "
              f"native: {worst:.2e}")
        assert worst <= 1e-5
        # vace_core's own merge (the CLI / Python API path) gives the same weights as our node, modulation included
        model = load_vace_model(comfy.base_dir / "models" / "diffusion_models" / FP32_DIT, device="cpu",
                                storage_dtype=torch.float32)
        apply_lora(model, comfy.files[kind], strength=STRENGTH)
        core = model.state_dict()
        assert max(rel(core[k] - base[k], ours[k] - base[k]) for k in changed | native_skips) <= 1e-5
    assert {k for k in base if not torch.equal(w["native_comfy"][k], base[k])} == expected - native_skips
    assert {k for k in base if not torch.equal(w["ours_comfy"][k], base[k])} == expected
    stacked = {k for k in base if not torch.equal(w["ours_stack"][k], w["ours_comfy"][k])}
    assert stacked == {"blocks.0.self_attn.q.weight", "blocks.1.self_attn.v.weight"}  # the LyCORIS layers
    assert all(torch.equal(w["ours_stack"][k], w["native_stack"][k]) for k in base if k not in native_skips)
    for kind in ("kohya", "diffusers"):  # the same LoRA in other layouts: the same weights, bit for bit
        assert all(torch.equal(w[f"ours_{kind}"][k], w["ours_comfy"][k]) for k in base), kind


def with_lora(graph, ours_side: bool, kind="comfy"):
    if ours_side:
        graph["lora"] = our_lora(["model", 0], kind)
        graph["sample"]["inputs"]["vace_model"] = ["lora", 0]
    else:
        graph["lora"] = native_lora(["unet", 0], kind)
        graph["shifted"]["inputs"]["model"] = ["lora", 0]
    return graph


def fp32(graph):
    if "model" in graph:
        graph["model"] = our_model()
    if "unet" in graph:
        graph["unet"]["inputs"]["unet_name"] = FP32_DIT
    return graph


def test_lora_sampling_matches_native(comfy):
    """Without the modulation delta, which native drops (see above)."""
    a, _ = run_latent(comfy, with_lora(fp32(ours(3, seed=5, shift=1.0)), True, "no_modulation"))
    b, _ = run_latent(comfy, with_lora(fp32(native_same_sigmas(3, seed=5, shift=1.0)), False, "no_modulation"))
    plain, _ = run_latent(comfy, fp32(ours(3, seed=5, shift=1.0)))
    difference, effect = rel(a, b), rel(a, plain)
    print(f"\nwith the LoRA, ours vs native (same grid, 3 steps): relative {difference:.2e}; the LoRA's own effect "
          f"{effect:.2e}")
    assert difference < 5e-3  # as without a LoRA (tests/test_comfy_native_parity.py): only the start differs
    assert effect > 20 * difference


def test_fp8_base_with_lora_samples_with_lcm_at_cfg_1(comfy):
    """fp8 storage + a LoRA (with I2V-only keys, which are skipped and logged) + LCM at cfg 1 (lightx2v preset)."""
    graph = with_lora(fp32(ours(2, seed=3)), True, "i2v")
    graph["model"] = our_model("fp8_e4m3fn")
    graph["sample"]["inputs"] |= {"sampler": "lcm", "cfg": 1.0, "shift": 5.0}
    graph["save_base"] = save_weights("fp8_base", vace_model=["model", 0])
    graph["save_lora"] = save_weights("fp8_lora", vace_model=["lora", 0])
    files = run_files(comfy, graph)
    base, patched = files["fp8_base"], files["fp8_lora"]
    changed = {k for k in base if not torch.equal(base[k], patched[k])}
    assert {"blocks.0.self_attn.q.weight", "vace_blocks.1.after_proj.weight", "blocks.0.modulation"} <= changed
    [latent] = [v["latent_tensor"] for k, v in files.items() if k.startswith("ours")]
    assert latent.shape == (1, 16, 3, H // 8, W // 8) and torch.isfinite(latent).all()
    assert "8 keys skipped, I2V-only image cross-attention" in comfy.log_tail(200_000)


def test_wrong_family_fails_clearly_and_the_queue_keeps_working(comfy):
    graph = {"model": our_model(), "lora": our_lora(["model", 0], "flux"),
             "save": save_weights("flux", vace_model=["lora", 0])}
    error = messages(comfy.run(graph, timeout=600))["execution_error"]["exception_message"]
    assert "flux_lora.safetensors is not a LoRA for Wan2.1" in error and "Flux / HunyuanVideo" in error
    graph["lora"] = our_lora(["model", 0], "comfy")
    assert "flux" in run_files(comfy, graph)


# ---- VCU to Native Conditioning ----------------------------------------------------------------------------

def adapter_graph(two_streams: bool) -> dict:
    """Our VCUs through the adapter, and native WanVaceToVideo (chained for two streams) on the same VCUs' pixels."""
    graph = {**shared(),
             "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": FP32_DIT, "weight_dtype": "default"}},
             "vae": {"class_type": "VAELoader", "inputs": {"vae_name": VAE_NAME}},
             "vcu": {"class_type": "VACEBuildVCU", "inputs": {
                 "width": W, "height": H, "length": FRAMES, "reference_mode": "letterbox", "frames": ["frames", 0],
                 "masks": ["masks", 0], "references": ["ref", 0]}},
             "adapter": {"class_type": "VACEToNativeConditioning", "inputs": {
                 "positive": ["pos", 0], "negative": ["neg", 0], "vae": ["vae", 0], "vcu": ["vcu", 0],
                 "strength": 1.0, "batch_size": 1}},
             # native gets the VCU's own pixels (Concept Decouple): our inpainting VCU is gray where it generates,
             # as VACE's preprocessing makes it; WanVaceToVideo would otherwise keep the original pixels there
             "decouple": {"class_type": "VACEConceptDecouple", "inputs": {"vcu": ["vcu", 0]}},
             "wan": {"class_type": "WanVaceToVideo", "inputs": {
                 "positive": ["pos", 0], "negative": ["neg", 0], "vae": ["vae", 0], "width": W, "height": H,
                 "length": FRAMES, "batch_size": 1, "strength": 1.0, "control_video": ["decouple", 0],
                 "control_masks": ["decouple", 2], "reference_image": ["decouple", 3]}}}
    native_out = "wan"
    if two_streams:
        graph["vcu_2"] = {"class_type": "VACEBuildVCU", "inputs": {
            "width": W, "height": H, "length": FRAMES, "reference_mode": "letterbox", "frames": ["frames", 0],
            "references": ["ref", 0]}}
        graph["adapter"]["inputs"] |= {"vcu_2": ["vcu_2", 0], "strength_2": 0.7}
        graph["decouple_2"] = {"class_type": "VACEConceptDecouple", "inputs": {"vcu": ["vcu_2", 0]}}
        graph["wan_2"] = {"class_type": "WanVaceToVideo", "inputs": {  # a control video: all of it is reactive
            **graph["wan"]["inputs"], "positive": ["wan", 0], "negative": ["wan", 1], "strength": 0.7,
            "control_video": ["decouple_2", 1], "reference_image": ["decouple_2", 3]}}
        del graph["wan_2"]["inputs"]["control_masks"]
        native_out = "wan_2"
    for name, node in (("ours", "adapter"), ("native", native_out)):
        graph[f"save_{name}"] = {"class_type": "VACETestSaveConditioning", "inputs": {
            "conditioning": [node, 0], "latent": [node, 2], "trim": [node, 3], "name": f"cond_{name}"}}
    return graph


def sample(graph, name, conditioning, model="unet"):
    graph[f"ks_{name}"] = {"class_type": "KSampler", "inputs": {
        "model": [model, 0], "seed": 5, "steps": 2, "cfg": CFG, "sampler_name": "euler", "scheduler": "simple",
        "positive": [conditioning, 0], "negative": [conditioning, 1], "latent_image": [conditioning, 2],
        "denoise": 1.0}}
    graph[f"trim_{name}"] = {"class_type": "TrimVideoLatent", "inputs": {
        "samples": [f"ks_{name}", 0], "trim_amount": [conditioning, 3]}}
    graph[f"out_{name}"] = {"class_type": "SaveLatent", "inputs": {"samples": [f"trim_{name}", 0],
                                                                   "filename_prefix": f"latent_{name}"}}


def compare_conditioning(files, streams):
    ours, theirs = files["cond_ours"], files["cond_native"]
    assert ours.keys() == theirs.keys()
    assert torch.equal(ours["vace_strength"], theirs["vace_strength"])
    assert len([k for k in ours if k.startswith("vace_frames")]) == streams
    assert torch.equal(ours["latent_shape"], theirs["latent_shape"]) and ours["trim"] == theirs["trim"] == 1
    for key in ours:
        assert ours[key].shape == theirs[key].shape, key
        assert rel(ours[key], theirs[key]) < 1e-5, key  # the same VAE on the same pixels (float rounding)


def latents(files):
    return {k.split("_")[1]: v["latent_tensor"] for k, v in files.items() if k.startswith("latent_")}


def test_adapter_equals_wan_vace_to_video_and_native_sampling_agrees(comfy):
    graph = adapter_graph(two_streams=False)
    sample(graph, "ours", "adapter")
    sample(graph, "native", "wan")
    files = run_files(comfy, graph)
    compare_conditioning(files, streams=1)
    out = latents(files)
    assert out["ours"].shape == (1, 16, 3, H // 8, W // 8)
    print(f"\nKSampler on adapter vs WanVaceToVideo conditioning: relative {rel(out['ours'], out['native']):.2e}")
    assert rel(out["ours"], out["native"]) < 1e-5


def test_adapter_two_streams_equal_chained_native_and_native_lora_runs(comfy):
    graph = adapter_graph(two_streams=True)
    graph["native_lora"] = native_lora(["unet", 0], "comfy")
    sample(graph, "plain", "adapter")
    sample(graph, "lora", "adapter", model="native_lora")
    files = run_files(comfy, graph)
    compare_conditioning(files, streams=2)
    assert files["cond_ours"]["vace_strength"].tolist() == pytest.approx([1.0, 0.7])
    out = latents(files)
    assert torch.isfinite(out["lora"]).all() and rel(out["lora"], out["plain"]) > 1e-3
