"""Random LoRA files for a model, in the key layouts that circulate for Wan2.1 (tests only).

`comfy_lora` writes the ComfyUI / official layout (what CausVid / lightx2v ship: low-rank pairs with alpha,
full deltas `.diff` for norms and modulation, bias deltas `.diff_b`); the other layouts are renames of it,
written the way their tools write them, so the same LoRA in every layout must change the model identically.
"""

import torch

from vace_core.checkpoints.keymap import official_to_diffusers_name

RANK = 4
# layer -> kind: low-rank pairs (with or without alpha), and the full deltas CausVid / lightx2v carry
LAYERS = {
    "blocks.0.self_attn.q": "lora_alpha", "blocks.0.cross_attn.o": "lora", "blocks.1.ffn.0": "lora_alpha",
    "blocks.2.ffn.2": "lora", "vace_blocks.0.before_proj": "lora_alpha", "vace_blocks.1.self_attn.v": "lora_alpha",
    "vace_blocks.1.after_proj": "lora", "patch_embedding": "lora_alpha", "time_projection.1": "lora",
    "blocks.1.norm3": "diff", "blocks.2.self_attn.norm_k": "diff", "blocks.0.modulation": "diff",
    "head.head": "diff_b", "blocks.1.cross_attn.k": "diff_b",
}


def comfy_lora(shapes: dict[str, tuple], seed: int = 0, scale: float = 0.05, layers: dict = LAYERS) -> dict:
    """A random LoRA in ComfyUI's layout (`diffusion_model.<layer>.<part>`) for a model with these shapes."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g) * scale

    out = {}
    for layer, kind in layers.items():
        key = f"diffusion_model.{layer}"
        weight = shapes.get(layer + ".weight", shapes.get(layer))
        if kind.startswith("lora"):
            out[f"{key}.lora_down.weight"] = rand(RANK, *weight[1:])
            out[f"{key}.lora_up.weight"] = rand(weight[0], RANK, *[1] * (len(weight) - 2)) * 10
            if kind == "lora_alpha":
                out[f"{key}.alpha"] = torch.tensor(float(RANK) / 2)
        elif kind == "diff":
            out[f"{key}.diff"] = rand(*weight)
        else:
            out[f"{key}.diff_b"] = rand(*shapes[layer + ".bias"])
    return out


def kohya(lora: dict) -> dict:
    """kohya / musubi-tuner: lora_unet_<layer with underscores>.<part>."""
    def rename(key):
        layer, part = split(key)
        return "lora_unet_" + layer.replace(".", "_") + "." + part
    return {rename(k): v for k, v in lora.items()}


def diffusers(lora: dict) -> dict:
    """diffusers / PEFT: transformer.<diffusers layer>.lora_A / lora_B (alpha kept), bias deltas as lora_B.bias."""
    parts = {"lora_down.weight": "lora_A.weight", "lora_up.weight": "lora_B.weight", "diff_b": "lora_B.bias"}

    def rename(key):
        layer, part = split(key)
        return f"transformer.{official_to_diffusers_name(layer)}.{parts.get(part, part)}"
    return {rename(k): v for k, v in lora.items()}


def split(key: str) -> tuple[str, str]:
    layer = key.removeprefix("diffusion_model.")
    for part in ("lora_down.weight", "lora_up.weight", "alpha", "diff_b", "diff"):
        if layer.endswith("." + part):
            return layer[: -len(part) - 1], part
    raise ValueError(key)


def lycoris(shapes: dict[str, tuple], seed: int = 0) -> dict:
    """LoHa on one layer, LoKr (one whole factor, one low-rank) on another, in ComfyUI's layout."""
    g = torch.Generator().manual_seed(seed)
    out, q, v = {}, shapes["blocks.0.self_attn.q.weight"], shapes["blocks.1.self_attn.v.weight"]
    for name in ("hada_w1_a", "hada_w2_a"):
        out[f"diffusion_model.blocks.0.self_attn.q.{name}"] = torch.randn(q[0], 2, generator=g) * 0.3
    for name in ("hada_w1_b", "hada_w2_b"):
        out[f"diffusion_model.blocks.0.self_attn.q.{name}"] = torch.randn(2, q[1], generator=g) * 0.3
    out["diffusion_model.blocks.0.self_attn.q.alpha"] = torch.tensor(1.0)
    out["diffusion_model.blocks.1.self_attn.v.lokr_w1"] = torch.randn(2, 2, generator=g) * 0.1
    out["diffusion_model.blocks.1.self_attn.v.lokr_w2_a"] = torch.randn(v[0] // 2, 3, generator=g) * 0.1
    out["diffusion_model.blocks.1.self_attn.v.lokr_w2_b"] = torch.randn(3, v[1] // 2, generator=g) * 0.1
    out["diffusion_model.blocks.1.self_attn.v.alpha"] = torch.tensor(3.0)
    return out
