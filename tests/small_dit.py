"""The small DiT the sampler-level tests share (3 blocks, context blocks 0 and 2, width 24, text width 32) and
seeded inputs for it: one VCU context of LATENT latent frames, and prompts of 5, 4 and 6 tokens."""

import torch

from vace_core.config import VaceConfig
from vace_core.pipeline import SamplerSettings, sample_latent
from vace_core.transformer import VaceTransformer

SMALL = VaceConfig(dim=24, ffn_dim=32, num_heads=2, num_layers=3, vace_layers=(0, 2), text_dim=32)
LATENT = (3, 4, 4)  # (T_lat, H/8, W/8)


def small_dit(config: VaceConfig = SMALL) -> VaceTransformer:
    """A fresh model with the seed-0 random weights, in eval mode without gradients."""
    torch.manual_seed(0)
    return VaceTransformer(config).eval().requires_grad_(False)


def sampler_inputs(seed: int = 1, contexts: int = 1, texts: int = 2) -> tuple:
    """([contexts of (1, 96, *LATENT)], positive (1, 5, 32), negative (1, 4, 32)[, a third prompt (1, 6, 32)])."""
    g = torch.Generator().manual_seed(seed)
    ctx = [torch.randn(1, 96, *LATENT, generator=g) for _ in range(contexts)]
    return (ctx, *(torch.randn(1, length, 32, generator=g) for length in (5, 4, 6)[:texts]))


def sample_small(model, cache=None, streams=None, steps: int = 10, guidance: float = 4.0) -> torch.Tensor:
    """A seeded sampling run of the small DiT on `sampler_inputs()` (shift 3, seed 2) with an optional step cache."""
    contexts, positive, negative = sampler_inputs()
    settings = SamplerSettings(steps=steps, guidance=guidance, shift=3.0, seed=2, step_cache=cache)
    return sample_latent(model, contexts, positive, negative, streams, settings)
