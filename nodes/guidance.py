"""VACE Guidance: NAG, skip-layer guidance and the CFG variants (CFG-Zero*, APG) for the VACE samplers
(see vace_core/nag.py, vace_core/sampling/guiders.py)."""

from comfy_api.latest import io

from ..vace_core.guidance_options import COMBINATIONS, HELP, GuidanceOptions
from .types import CATEGORY, Guidance


class VaceGuidance(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VACEGuidance", display_name="VACE Guidance (NAG, SLG, CFG-Zero*, APG)", category=CATEGORY,
            description="Guidance add-ons for the VACE Sampler and the Long Video Sampler. NAG makes the negative "
                        "prompt work at cfg 1 (speed LoRAs); SLG sharpens structure with cfg; CFG-Zero* and APG "
                        "replace the CFG combination. Everything off by default (plain CFG).",
            inputs=[
                io.Float.Input("nag_scale", default=0.0, min=0.0, max=50.0, step=0.5,
                               tooltip=HELP["nag_scale"]),
                io.Float.Input("nag_tau", default=2.5, min=1.0, max=10.0, step=0.1,
                               tooltip=HELP["nag_tau"]),
                io.Float.Input("nag_alpha", default=0.25, min=0.0, max=1.0, step=0.01,
                               tooltip=HELP["nag_alpha"]),
                io.Float.Input("nag_start", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip=HELP["nag_start"]),
                io.Float.Input("nag_end", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip=HELP["nag_end"]),
                io.String.Input("slg_blocks", default="",
                                tooltip=HELP["slg_blocks"]),
                io.Combo.Input("slg_mode", options=["uncond", "third"], default="uncond",
                               tooltip=HELP["slg_mode"]),
                io.Float.Input("slg_start", default=0.1, min=0.0, max=1.0, step=0.01,
                               tooltip=HELP["slg_start"]),
                io.Float.Input("slg_end", default=0.9, min=0.0, max=1.0, step=0.01,
                               tooltip=HELP["slg_end"]),
                io.Float.Input("slg_scale", default=3.0, min=0.0, max=10.0, step=0.1,
                               tooltip=HELP["slg_scale"]),
                io.Float.Input("slg_rescale", default=0.0, min=0.0, max=10.0, step=0.01,
                               tooltip=HELP["slg_rescale"]),
                io.Combo.Input("combination", options=list(COMBINATIONS), default="cfg",
                               tooltip=HELP["combination"]),
                io.Int.Input("zero_init_steps", default=2, min=0, max=100,
                             tooltip=HELP["zero_init_steps"]),
                io.Float.Input("apg_eta", default=0.0, min=-10.0, max=10.0, step=0.01,
                               tooltip=HELP["apg_eta"]),
                io.Float.Input("apg_norm_threshold", default=0.0, min=0.0, max=1000.0, step=0.1,
                               tooltip=HELP["apg_norm_threshold"]),
                io.Float.Input("apg_momentum", default=-0.5, min=-0.99, max=0.99, step=0.01,
                               tooltip=HELP["apg_momentum"]),
            ],
            outputs=[Guidance.Output(display_name="guidance")],
        )

    @classmethod
    def execute(cls, **knobs) -> io.NodeOutput:
        options = GuidanceOptions(**knobs)
        options.settings()  # bad values fail here, at the node that has them
        return io.NodeOutput(options)


NODES = [VaceGuidance]
