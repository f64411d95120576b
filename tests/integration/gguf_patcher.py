"""ComfyUI's ModelPatcher on a GGUF model with a LoRA, in-process (tests/test_gguf_comfy.py runs it with ComfyUI's
Python): `python gguf_patcher.py <ComfyUI folder> <model.gguf> <lora.safetensors>` prints one JSON line.

The patcher is driven the ways ComfyUI drives it: fully loaded, partly loaded (low VRAM: the layers past the
budget stream their weights per call, ComfyUI's block swap), partly unloaded afterwards (ComfyUI making room for
another model), and unpatched. Each forward is compared with vace_core's own unmerged LoRA on the same file
dequantized (the expected output); the ggml blocks are compared with the file's after every step.
"""

import json
import sys
from pathlib import Path

import torch

PACK = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PACK))

from benchmarks.gpu_parts import import_pack  # noqa: E402  (the pack as ComfyUI imports custom nodes)


def main(comfy_path: str, model_path: str, lora_path: str) -> dict:
    sys.path.insert(0, comfy_path)
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    import comfy.ops
    import comfy.utils

    torch.set_num_threads(1)
    memory, lora_nodes = import_pack("nodes.memory"), import_pack("nodes.lora")
    checkpoints, vace_lora = import_pack("vace_core.checkpoints"), import_pack("vace_core.lora")
    ops = import_pack("vace_core.ops")
    cpu = torch.device("cpu")

    model = checkpoints.load_vace_model(model_path, device=cpu, operations=comfy.ops.manual_cast)
    patcher = memory.patch(model, cpu, cpu)
    lora = comfy.utils.load_torch_file(lora_path, safe_load=True)
    patched, report = lora_nodes.with_lora(patcher, lora, "lora", 0.8, 0.5)
    blocks = {n: m.weight.clone() for n, m in model.named_modules() if ops.is_quantized(m)}

    expected_model = checkpoints.load_vace_model(model_path, device=cpu)  # vace_core's own layers, GGUF blocks
    plain = expected_model.blocks[0].self_attn.q.weight.dtype == torch.uint8
    vace_lora.apply_lora(expected_model, lora, 0.8, 0.5, merge=False)
    g = torch.Generator().manual_seed(0)
    inputs = (torch.randn(1, 16, 2, 4, 4, generator=g), torch.tensor([600.0]),
              torch.randn(1, 5, model.config.text_dim, generator=g), [torch.randn(1, 96, 2, 4, 4, generator=g)], [1.0])
    with torch.no_grad():
        expected, base = expected_model(*inputs), patcher.model(*inputs)

    def run():  # twice: a patch applied into stored weights would show as a drift between calls
        with torch.no_grad():
            outs = [patched.model(*inputs) for _ in range(2)]
        return {"diff": max((out - expected).abs().max().item() for out in outs),
                "blocks_unchanged": all(torch.equal(m.weight, blocks[n]) for n, m in patched.model.named_modules()
                                        if n in blocks)}

    result = {"patcher": type(patcher).__name__, "clone": type(patched).__name__, "report": report,
              "vace_core_keeps_blocks": plain, "lora_changes": (expected - base).abs().max().item(),
              "scale": expected.abs().max().item()}
    patched.patch_model(cpu, lowvram_model_memory=0)  # full load
    result["full"] = run()
    patched.unpatch_model(cpu)
    size = patched.model_size()
    patched.patch_model(cpu, lowvram_model_memory=size // 3)  # a third resident, the rest streamed per layer
    streamed = [n for n, m in patched.model.named_modules() if getattr(m, "comfy_cast_weights", False)]
    result["partial"] = run() | {"streamed_layers": len(streamed),
                                 "streamed_quantized": sum(ops.is_quantized(patched.model.get_submodule(n))
                                                           for n in streamed)}
    result["freed"] = patched.partially_unload(cpu, memory_to_free=size // 6)
    result["after_partial_unload"] = run()
    patched.unpatch_model(cpu)
    with torch.no_grad():
        unpatched = patched.model(*inputs)
    result["unpatched_equals_base"] = torch.equal(unpatched, base)
    result["unpatched_blocks_unchanged"] = run()["blocks_unchanged"]
    return result


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:4])))
