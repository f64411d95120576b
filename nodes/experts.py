"""Wan2.2-VACE-Fun-A14B in ComfyUI: the low-noise expert for the VACE Sampler, and the two experts with only
one resident on the GPU at a time (the other offloaded through ComfyUI's model management)."""

import logging
from dataclasses import dataclass

import comfy.model_management as mm
from comfy_api.latest import io

from ..vace_core.experts import Experts, check_pair
from ..vace_core.settings import knobs
from . import memory
from .inputs import widget
from .loaders import LoadedVace
from .types import CATEGORY, LowNoiseExpert, VaceModel

log = logging.getLogger("vace")
EXPERTS = knobs(Experts)


@dataclass
class LowNoise:
    """What flows through a VACE_LOW_NOISE_EXPERT socket."""

    model: LoadedVace
    cfg: float
    boundary: float


class VaceLowNoiseExpert(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VACEWan22LowNoiseExpert", display_name="VACE Wan2.2 Low-Noise Expert", category=CATEGORY,
            description="Wan2.2-VACE-Fun-A14B: connect the low-noise expert here and the high-noise expert to the "
                        "sampler's vace_model. The high-noise expert runs while t >= boundary x 1000, then this "
                        "one, each with its own cfg; only one is on the GPU at a time. Apply LoRAs to each "
                        "expert's model before.",
            inputs=[
                VaceModel.Input("low_noise_model", tooltip="Load VACE Model with the low-noise file, e.g. "
                                                           "wan2.2_fun_vace_low_noise_14B_fp8_scaled.safetensors."),
                widget(EXPERTS["guidance_low"], "cfg"),
                widget(EXPERTS["boundary"]),
            ],
            outputs=[LowNoiseExpert.Output(display_name="low_noise_expert")],
        )

    @classmethod
    def execute(cls, low_noise_model, cfg, boundary) -> io.NodeOutput:
        return io.NodeOutput(LowNoise(low_noise_model, cfg, boundary))


def loaded_models(vace_model: LoadedVace, low_noise_expert: LowNoise | None) -> list[LoadedVace]:
    """The model, and the low-noise expert's when one is connected."""
    return [vace_model] + ([low_noise_expert.model] if low_noise_expert is not None else [])


def two_experts(high: LoadedVace, low: LowNoise, reserve_bytes: int) -> Experts:
    """The sampler's denoiser: the two experts as `memory.Managed` denoisers; switching expert offloads the other
    one first, then loads the new one (with `reserve_bytes` free for sampling, plus its block swap)."""
    check_pair(high.patcher.model.config, low.model.patcher.model.config)
    experts = {name: memory.Managed(e.patcher, reserve_bytes + memory.swap_reserve(e.patcher.model, e.block_swap))
               for name, e in (("high", high), ("low", low.model))}

    def load_alone(expert: memory.Managed) -> memory.Managed:
        for other in experts.values():
            if other.patcher is not expert.patcher:
                memory.offload(other.patcher)
        expert.inner  # noqa: B018  (loads it now)
        resident = sum(m.model in [e.patcher for e in experts.values()] for m in mm.current_loaded_models)
        log.info("VACE Wan2.2: %s-noise expert loaded; experts resident: %d",
                 "high" if expert is experts["high"] else "low", resident)
        return expert

    return Experts(experts["high"], experts["low"], boundary=low.boundary, guidance_low=low.cfg, load=load_alone)


NODES = [VaceLowNoiseExpert]
