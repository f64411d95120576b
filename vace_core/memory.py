"""How much memory one DiT forward needs for its activations: the sampler reserves it before loading the model.

Per token of the batch (s = the compute dtype's bytes, d = dim, f = ffn_dim), calibrated on measured peaks
(tests/test_memory_estimate.py on CPU; benchmarks/gpu_check.py's "estimate" part on CUDA):
- resident through the forward: the fp32 residual stream x, the embedded latent x0 and one fp32 stream per VCU:
  (2 + streams) * 4d;
- the attention phase: modulated input, q/k/v, and RoPE's fp32 temporaries: (16 + 6s) d;
- the FFN phase: its (f)-wide hidden and GELU output, 2sf, plus the modulated input and fp32 residual
  temporaries, (8 + 3s) d. The lean path (vace_core.speed) runs the FFN in chunks of `ffn_chunk` tokens and adds
  in place: 2sf per chunk token only, and (4 + s) d.
The peak is the resident part plus the larger phase, plus 5% (the text side, allocator rounding).
"""

import math

import torch

from .config import VaceConfig
from .ops import dequantize_workspace


def activation_bytes(cfg: VaceConfig, latent_shape, batch: int, streams: int, dtype: torch.dtype,
                     speed=None) -> int:
    """Peak bytes of one forward's activations. latent_shape (T, H, W) of the latent (reference frames included);
    batch 2 for CFG; streams the number of VCUs; dtype the compute dtype; speed the `vace_core.speed.Speed` in use
    (None: the exact path)."""
    s, d, f = dtype.itemsize, cfg.dim, cfg.ffn_dim
    tokens = latent_shape[0] * (latent_shape[1] // cfg.patch_size[1]) * (latent_shape[2] // cfg.patch_size[2])
    attention = (16 + 6 * s) * d
    if speed is not None and speed.lean:
        chunk = min(speed.ffn_chunk or tokens, tokens)
        ffn = (4 + s) * d + 2 * s * f * chunk / tokens
    else:
        ffn = (8 + 3 * s) * d + 2 * s * f
    per_token = (2 + streams) * 4 * d + max(attention, ffn)
    return int(1.05 * batch * tokens * per_token)


def sampling_bytes(model, latent_shape, guided: bool, streams: int) -> int:
    """A sampling run's device memory: one forward's activations (CFG batched) plus the float32 latents the loop
    keeps (x, v, the solver's history: about 8 copies), the context latents (96 channels per stream) and, for GGUF
    weights, the largest layer's dequantized copy (counted on a module; a wrapper such as Experts adds none).
    model: a denoiser (vace_core.denoiser: its config, compute dtype and, when it has them, speed settings);
    latent_shape (T, h, w)."""
    latent = math.prod(latent_shape) * 4
    activations = activation_bytes(model.config, latent_shape, 2 if guided else 1, streams, model.compute_dtype,
                                   getattr(model, "speed", None))
    workspace = dequantize_workspace(model, model.compute_dtype) if isinstance(model, torch.nn.Module) else 0
    return activations + 8 * 16 * latent + streams * 96 * latent + workspace
