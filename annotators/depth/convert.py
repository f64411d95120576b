"""Depth-Anything-V2's original checkpoint layout (`pretrained.*` DINOv2 + `depth_head.*` DPT head) mapped onto
transformers' DepthAnythingForDepthEstimation, with the model's shape read from the checkpoint."""

from __future__ import annotations

import re

import torch

from ..base import AnnotatorError

# DINOv2 blocks whose outputs feed the DPT head, by encoder width (Depth-Anything-V2's intermediate_layer_idx)
OUT_LAYERS = {384: [2, 5, 8, 11], 768: [2, 5, 8, 11], 1024: [4, 11, 17, 23], 1536: [9, 19, 29, 39]}

RENAMES = [  # original -> transformers, applied in order to each key
    (r"^pretrained\.cls_token$", "backbone.embeddings.cls_token"),
    (r"^pretrained\.mask_token$", "backbone.embeddings.mask_token"),
    (r"^pretrained\.pos_embed$", "backbone.embeddings.position_embeddings"),
    (r"^pretrained\.patch_embed\.proj\.", "backbone.embeddings.patch_embeddings.projection."),
    (r"^pretrained\.norm\.", "backbone.layernorm."),
    (r"^pretrained\.blocks\.(\d+)\.ls(\d)\.gamma$", r"backbone.encoder.layer.\1.layer_scale\2.lambda1"),
    (r"^pretrained\.blocks\.(\d+)\.attn\.proj\.", r"backbone.encoder.layer.\1.attention.o_proj."),
    (r"^pretrained\.blocks\.(\d+)\.", r"backbone.encoder.layer.\1."),
    (r"^depth_head\.projects\.(\d)\.", r"neck.reassemble_stage.layers.\1.projection."),
    (r"^depth_head\.resize_layers\.(\d)\.", r"neck.reassemble_stage.layers.\1.resize."),
    (r"^depth_head\.scratch\.layer(\d)_rn\.", lambda m: f"neck.convs.{int(m[1]) - 1}."),
    (r"^depth_head\.scratch\.refinenet(\d)\.", lambda m: f"neck.fusion_stage.layers.{4 - int(m[1])}."),
    (r"\.out_conv\.", ".projection."),
    (r"\.resConfUnit(\d)\.conv(\d)\.", r".residual_layer\1.convolution\2."),
    (r"^depth_head\.scratch\.output_conv1\.", "head.conv1."),
    (r"^depth_head\.scratch\.output_conv2\.0\.", "head.conv2."),
    (r"^depth_head\.scratch\.output_conv2\.2\.", "head.conv3."),
]


def rename(key: str) -> str:
    for pattern, repl in RENAMES:
        key = re.sub(pattern, repl, key)
    return key


def convert_state_dict(state: dict, hidden: int) -> dict:
    out = {}
    for key, value in state.items():
        qkv = re.match(r"^pretrained\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)$", key)
        if qkv:  # one fused projection -> query, key, value
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.split(hidden), strict=False):
                out[f"backbone.encoder.layer.{qkv[1]}.attention.{name}.{qkv[2]}"] = part
        else:
            out[rename(key)] = value
    return out


# transformers < 5 named DINOv2's attention projections differently
TRANSFORMERS_4_NAMES = {
    "attention.q_proj.": "attention.attention.query.",
    "attention.k_proj.": "attention.attention.key.",
    "attention.v_proj.": "attention.attention.value.",
    "attention.o_proj.": "attention.output.dense.",
}


def match_names(state: dict, expected) -> dict:
    if "backbone.encoder.layer.0.attention.q_proj.weight" in expected:
        return state
    renamed = {}
    for key, value in state.items():
        for new, old in TRANSFORMERS_4_NAMES.items():
            key = key.replace(new, old)
        renamed[key] = value
    return renamed


def config_from_state(state: dict):
    from transformers import DepthAnythingConfig, Dinov2Config

    hidden = state["pretrained.cls_token"].shape[-1]
    layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("pretrained.blocks."))
    patch = state["pretrained.patch_embed.proj.weight"].shape[-1]
    grid = int(round((state["pretrained.pos_embed"].shape[1] - 1) ** 0.5))
    out_layers = OUT_LAYERS.get(hidden) or [round(layers * f) - 1 for f in (0.25, 0.5, 0.75, 1.0)]
    backbone = Dinov2Config(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        mlp_ratio=state["pretrained.blocks.0.mlp.fc1.weight"].shape[0] // hidden,
        patch_size=patch,
        image_size=grid * patch,
        layerscale_value=1.0,
        out_indices=[i + 1 for i in out_layers],
        apply_layernorm=True,
        reshape_hidden_states=False,
    )
    return DepthAnythingConfig(
        backbone_config=backbone,
        reassemble_hidden_size=hidden,
        patch_size=patch,
        neck_hidden_sizes=[state[f"depth_head.projects.{i}.weight"].shape[0] for i in range(4)],
        fusion_hidden_size=state["depth_head.scratch.layer1_rn.weight"].shape[0],
        head_hidden_size=state["depth_head.scratch.output_conv2.0.weight"].shape[0],
        depth_estimation_type="relative",
    )


def depth_anything_v2_from_original(state: dict) -> torch.nn.Module:
    from transformers import DepthAnythingForDepthEstimation

    config = config_from_state(state)
    model = DepthAnythingForDepthEstimation(config)
    converted = convert_state_dict(state, config.backbone_config.hidden_size)
    missing, unexpected = model.load_state_dict(match_names(converted, model.state_dict()), strict=False)
    if missing or unexpected:
        raise AnnotatorError(
            f"Depth-Anything-V2 checkpoint does not match: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return model
