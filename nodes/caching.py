"""VACE Step Cache nodes: TeaCache, MagCache and EasyCache settings for the VACE samplers (vace_core/step_cache.py,
vace_core/magcache.py, vace_core/easycache.py)."""

from comfy_api.latest import io

from ..vace_core.easycache import EasyCache
from ..vace_core.magcache import MagCache
from ..vace_core.settings import knobs
from ..vace_core.step_cache import COEFFICIENTS, SIZES, SIZES_HELP, TeaCache
from .inputs import widget
from .types import CATEGORY, StepCache

# the node's words (saved workflows hold them) -> TeaCache's mode and SIZES' names
MODES = {"timestep embedding": "t_emb", "modulation (first 5 steps kept)": "e"}
SIZE_LABELS = {"auto (from the model)": "auto", "wan2.1 1.3B": "1.3B", "wan2.1 14B": "14B"}
CACHE = knobs(TeaCache)


class VaceStepCache(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VACEStepCache", display_name="VACE Step Cache (TeaCache)", category=CATEGORY,
            description="Skips the DiT blocks of steps whose timestep embedding barely changed, reusing the last "
                        "computed residual (TeaCache, with its Wan2.1 coefficients). VACE-aware: a VCU stream's "
                        "start/end switching forces a computed step; one cache per CFG branch and per Wan2.2 "
                        "expert. context_every_step: the context blocks run on skipped steps too and only the "
                        "main blocks' residual is reused. The sampler shows how many model evaluations it saved.",
            inputs=[
                widget(CACHE["threshold"]),
                widget(CACHE["mode"], labels=MODES),
                io.Combo.Input("coefficients", options=list(SIZE_LABELS), default="auto (from the model)",
                               tooltip=SIZES_HELP),
                widget(CACHE["context_every_step"], optional=True),  # graphs saved before it still validate
            ],
            outputs=[StepCache.Output(display_name="step_cache")],
        )

    @classmethod
    def execute(cls, threshold, mode, coefficients, context_every_step=False) -> io.NodeOutput:
        mode, dim = MODES[mode], SIZES[SIZE_LABELS[coefficients]]
        return io.NodeOutput(TeaCache(threshold=threshold, mode=mode, context_every_step=context_every_step,
                                      coefficients=None if dim is None else COEFFICIENTS[mode, dim]))


class VaceMagCache(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VACEMagCache", display_name="VACE Step Cache (MagCache)", category=CATEGORY,
            description="Skips the DiT blocks of steps whose residual magnitude barely changes, by MagCache's "
                        "published Wan2.1 magnitude ratios. VACE-aware like TeaCache: a VCU stream switching or "
                        "its strength moving forces a computed step; one cache per CFG call and per Wan2.2 expert.",
            inputs=[widget(spec) for spec in knobs(MagCache).values()],
            outputs=[StepCache.Output(display_name="step_cache")],
        )

    @classmethod
    def execute(cls, threshold, retention, k) -> io.NodeOutput:
        return io.NodeOutput(MagCache(threshold, retention, k))


class VaceEasyCache(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VACEEasyCache", display_name="VACE Step Cache (EasyCache)", category=CATEGORY,
            description="Skips whole model evaluations while the change of the output, predicted from the input's "
                        "change by the transformation rate measured at run time (EasyCache: no fitted "
                        "coefficients), stays under the threshold. VACE-aware like TeaCache: a VCU stream "
                        "switching or its strength moving forces a computed step; one cache per CFG branch, per "
                        "Wan2.2 expert and per long-video window.",
            inputs=[widget(spec) for spec in knobs(EasyCache).values()],
            outputs=[StepCache.Output(display_name="step_cache")],
        )

    @classmethod
    def execute(cls, threshold, warmup) -> io.NodeOutput:
        return io.NodeOutput(EasyCache(threshold=threshold, warmup=warmup))


NODES = [VaceStepCache, VaceMagCache, VaceEasyCache]
