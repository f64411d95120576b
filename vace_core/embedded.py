"""The embedded default: a tiny VACE model built deterministically, fast on a CPU, for demos and tests
when no checkpoint is given. Its heads are 128 wide like the real models, so its config is detected
from its weights like any user's file."""

import torch

from .config import VaceConfig
from .transformer import VaceTransformer

TINY = VaceConfig(dim=256, ffn_dim=512, num_heads=2, num_layers=4, vace_layers=(0, 2), text_dim=64)


def tiny_model(seed: int = 0) -> VaceTransformer:
    """Same weights for the same seed on every machine (initialised on the CPU under a private seed)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return VaceTransformer(TINY).eval().requires_grad_(False)


def tiny_vae(seed: int = 0):
    """A small Wan VAE (base width 8 instead of 96; same structure, 8x/4x strides, 16 latent channels)."""
    from .vae import WanVAE

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return WanVAE(dim=8).eval().requires_grad_(False)
