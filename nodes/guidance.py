"""VACE Guidance: NAG, skip-layer guidance and the CFG variants (CFG-Zero*, APG) for the VACE samplers
(see vace_core/nag.py, vace_core/sampling/guiders.py)."""

from comfy_api.latest import io

from ..vace_core.guidance_options import GuidanceOptions
from ..vace_core.settings import knobs
from .inputs import widget
from .types import CATEGORY, Guidance


class VaceGuidance(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VACEGuidance", display_name="VACE Guidance (NAG, SLG, CFG-Zero*, APG)", category=CATEGORY,
            description="Guidance add-ons for the VACE Sampler and the Long Video Sampler. NAG makes the negative "
                        "prompt work at cfg 1 (speed LoRAs); SLG sharpens structure with cfg; CFG-Zero* and APG "
                        "replace the CFG combination. Everything off by default (plain CFG).",
            inputs=[widget(spec) for spec in knobs(GuidanceOptions).values()],
            outputs=[Guidance.Output(display_name="guidance")],
        )

    @classmethod
    def execute(cls, **values) -> io.NodeOutput:
        options = GuidanceOptions(**values)
        options.settings()  # bad values fail here, at the node that has them
        return io.NodeOutput(options)


NODES = [VaceGuidance]
