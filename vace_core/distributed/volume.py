"""Bytes each process sends per sampling step, and a projected step time on paper (no measurement).

Counts follow the algorithms in this package: a Ulysses all-to-all sends (u-1)/u of the local tensor;
ring attention sends its K and V block r-1 times; an all-gather of a chunk sends it to n-1 ranks (ring
algorithm); FSDP2 all-gathers every weight once per forward (a context block once per stream it runs
for: the `weights` figure is for one stream). One step is one forward whose batch holds
the conditional and unconditional passes (or half of it per CFG group with CFG parallel).
"""

import math
from dataclasses import dataclass

from ..config import VaceConfig
from .layout import Degrees


@dataclass(frozen=True)
class StepVolume:
    """Bytes sent by one process in one sampling step."""

    ulysses: int  # all-to-all of q, k, v and the attention output
    ring: int  # K/V blocks passed round the ring
    gather: int  # head output gathered over the sequence ranks, the video over the CFG groups
    weights: int  # FSDP2 all-gathers (0 with replicated weights)

    @property
    def total(self) -> int:
        return self.ulysses + self.ring + self.gather + self.weights


def step_volume(cfg: VaceConfig, tokens: int, degrees: Degrees, streams: int = 1, batch: int = 2,
                act_bytes: int = 2, weight_bytes: int | None = None, params: int | None = None) -> StepVolume:
    """Bytes one process sends per step for a latent of `tokens` tokens (L = T_lat * H/16 * W/16).

    batch: the forward's batch (2 with guidance: conditional + unconditional); act_bytes: activation dtype
    size (2 = bf16); weight_bytes: FSDP2 storage dtype size (None = replicated); params: the parameter count
    (needed with weight_bytes).
    """
    u, r, c = degrees.ulysses, degrees.ring, degrees.cfg
    split = c == 2 and batch % 2 == 0  # else both CFG groups run the whole batch
    batch = batch // 2 if split else batch
    chunk = math.ceil(tokens / (u * r))  # tokens per rank (padded)
    layers = cfg.num_layers + len(cfg.vace_layers) * streams  # self-attentions per forward
    per_layer_a2a = 4 * batch * chunk * cfg.dim * act_bytes * (u - 1) // u
    per_layer_ring = 2 * batch * (u * chunk) * (cfg.dim // u) * act_bytes * (r - 1)
    head = cfg.out_dim * math.prod(cfg.patch_size) * 4  # fp32 head output per token
    gather = batch * chunk * head * (u - 1) + batch * u * chunk * head * (r - 1)
    if split:
        gather += batch * tokens * head  # the other CFG group's half, as a (B/2, 16, T, H, W) fp32 video
    weights = 0 if weight_bytes is None else params * weight_bytes * (c * u * r - 1) // (c * u * r)
    return StepVolume(layers * per_layer_a2a, layers * per_layer_ring, gather, weights)


def projected_step_time(single: float, volume: StepVolume, ranks: int, bandwidth: float) -> float:
    """A model on paper: the single-process step time split evenly over the ranks plus the bytes sent at
    `bandwidth` bytes/s per process, with no overlap of compute and communication (pessimistic for ring,
    which overlaps)."""
    return single / ranks + volume.total / bandwidth


def step_flops(cfg: VaceConfig, tokens: int, streams: int = 1, batch: int = 2, text_len: int = 512) -> float:
    """Multiply-adds x 2 of one step (all blocks, every batch entry): per block, q/k/v/o projections
    2L*4d^2, self-attention 4L^2*d, cross-attention q/o 2L*2d^2 and scores 4L*512*d, FFN 2L*2d*ffn."""
    d, n = cfg.dim, tokens
    block = 2 * n * 4 * d * d + 4 * n * n * d + 2 * n * 2 * d * d + 4 * n * text_len * d + 2 * n * 2 * d * cfg.ffn_dim
    return batch * block * (cfg.num_layers + len(cfg.vace_layers) * streams)
