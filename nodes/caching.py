"""VACE Step Cache nodes: TeaCache and MagCache settings for the VACE samplers (vace_core/step_cache.py,
vace_core/magcache.py)."""

from comfy_api.latest import io

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
                        "expert. The sampler shows how many model evaluations it saved.",
            inputs=[
                widget(CACHE["threshold"]),
                widget(CACHE["mode"], labels=MODES),
                io.Combo.Input("coefficients", options=list(SIZE_LABELS), default="auto (from the model)",
                               tooltip=SIZES_HELP),
            ],
            outputs=[StepCache.Output(display_name="step_cache")],
        )

    @classmethod
    def execute(cls, threshold, mode, coefficients) -> io.NodeOutput:
        mode, dim = MODES[mode], SIZES[SIZE_LABELS[coefficients]]
        return io.NodeOutput(TeaCache(threshold=threshold, mode=mode,
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


NODES = [VaceStepCache, VaceMagCache]
