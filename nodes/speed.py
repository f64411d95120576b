"""VACE Speed: the DiT's speed switches (vace_core/speed.py: compile, lean / chunked FFN, fp8 compute) on a
VACE_MODEL, all off by default (the exact path). The switches travel with the model socket and are set on the
model when a sampler runs it, so a graph with and without them shares one loaded model."""

import dataclasses
import logging

import comfy.ops
from comfy_api.latest import io

from ..vace_core import ops
from ..vace_core.settings import knobs
from ..vace_core.speed import Speed, apply_speed, check_speed
from .inputs import widget
from .types import CATEGORY, VaceModel

SPEED = knobs(Speed)
log = logging.getLogger("vace")


class speed_ops(comfy.ops.manual_cast):  # noqa: N801  (a layer namespace, like comfy.ops.manual_cast)
    """ComfyUI's casting layers (partial loading, weight patches) whose Linear also has the fp8 compute switch."""

    class Linear(comfy.ops.manual_cast.Linear):
        fp8_compute = False  # set by vace_core.speed.apply_speed

        def forward_comfy_cast_weights(self, input):
            patched = self.weight_function or self.bias_function  # ComfyUI patches weights on the fly: its path
            if self.fp8_compute and not patched and ops.fp8_ready(self.weight, input):
                return ops.fp8_linear(input, self.weight.to(input.device), self.bias, None)
            return super().forward_comfy_cast_weights(input)


def use_speed(*loaded) -> None:
    """Sets each LoadedVace's switches on its model before it runs (nothing is touched while they match: a model
    never switched runs exactly as loaded)."""
    for model in loaded:
        net = model.patcher.model
        if getattr(net, "speed", Speed()) != model.speed:
            apply_speed(net, model.speed)
            log.info("VACE speed switches set: %s", model.speed)


class VaceSpeed(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VACESpeed", display_name="VACE Speed", category=CATEGORY,
            description="Speed switches for the VACE model, each off by default (the exact path): compiled blocks, "
                        "lean residuals with a chunked FFN, fp8 matmuls. Connect between Load VACE Model (or a "
                        "VACE LoRA) and the sampler; for Wan2.2, one on each expert.",
            inputs=[VaceModel.Input("vace_model", tooltip="From Load VACE Model (or a VACE LoRA)."),
                    *(widget(spec) for spec in SPEED.values())],
            outputs=[VaceModel.Output(display_name="vace_model")],
        )

    @classmethod
    def execute(cls, vace_model, **switches) -> io.NodeOutput:
        speed = Speed(**switches)
        check_speed(vace_model.patcher.model, speed)  # now, not after the sampler's setup
        return io.NodeOutput(dataclasses.replace(vace_model, speed=speed))


NODES = [VaceSpeed]
