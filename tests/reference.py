"""Tiny reference models from diffusers with every weight randomised, for parity tests."""

import torch
from diffusers import WanVACETransformer3DModel

from vace_core.checkpoints.keymap import diffusers_to_official
from vace_core.config import VaceConfig


def randomise(module: torch.nn.Module, seed: int, std: float = 0.1) -> torch.nn.Module:
    """Every parameter random (norm weights near 1), so a wrong key mapping cannot hide behind defaults."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g) * std
            p.copy_(1 + noise if "norm" in name and name.endswith("weight") else noise)
    return module.eval()


def diffusers_vace(heads, head_dim, layers, vace_layers, ffn=32, text_dim=32, seed=0):
    """(reference model, our config, official-layout state dict) for one tiny shape."""
    ref = WanVACETransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=head_dim, in_channels=16,
        out_channels=16, text_dim=text_dim, freq_dim=256, ffn_dim=ffn, num_layers=layers, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=64, vace_layers=list(vace_layers), vace_in_channels=96)
    randomise(ref, seed)
    cfg = VaceConfig(dim=heads * head_dim, ffn_dim=ffn, num_heads=heads, num_layers=layers,
                     vace_layers=tuple(vace_layers), text_dim=text_dim)
    return ref, cfg, diffusers_to_official(ref.state_dict())


def reference_forward(ref, x, t, text, vace_context, scale):
    """diffusers' forward; text zero-padded to 512 as the Wan pipelines do (longer text attended whole)."""
    text = torch.nn.functional.pad(text, (0, 0, 0, max(0, 512 - text.shape[1])))
    scales = torch.full((len(ref.config.vace_layers),), float(scale))
    with torch.no_grad():
        return ref(x, t, text, control_hidden_states=vace_context, control_hidden_states_scale=scales,
                   return_dict=False)[0]
