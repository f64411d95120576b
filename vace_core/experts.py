"""Wan2.2 two-expert denoising (Wan2.2-VACE-Fun-A14B).

Wan2.2 A14B splits the denoising between two experts: the high-noise expert runs while the timestep
t >= boundary * 1000, the low-noise expert after it, each with its own guidance (as diffusers'
WanVACEPipeline(transformer, transformer_2, boundary_ratio) and the official Wan2.2 code do).

Each expert is an ordinary VACE transformer of the Wan2.1-VACE-14B shape: same keys, same dims, context blocks
after blocks 0, 5, ..., 35, same VAE. Nothing in the weights tells a Wan2.2 expert from Wan2.1-VACE-14B, nor
the high-noise expert from the low-noise one (only their values differ), so the user says which is which: two
files (or two VACE modules on the Wan2.2 T2V A14B high/low bases), or the release folder whose
`high_noise_model` / `low_noise_model` subfolders name them.
"""

from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import VaceError
from .sampling import NUM_TRAIN_TIMESTEPS
from .settings import check, knob

WAN22_BOUNDARY = 0.875  # Wan2.2 T2V A14B and VACE-Fun-A14B (the official code and VideoX-Fun's config)
EXPERT_FOLDERS = ("high_noise_model", "low_noise_model")  # the release layout (official Wan2.2 and VideoX-Fun)
LABELS = {"boundary": "the expert boundary", "guidance_low": "the low-noise expert's guidance"}


def check_pair(high_config, low_config) -> None:
    """Both experts must have one shape (a 1.3B and a 14B file, or a module on the wrong base, would not)."""
    if high_config != low_config:
        raise VaceError(f"the two experts differ in shape (high-noise: {high_config}; low-noise: {low_config}): "
                        "Wan2.2-VACE-Fun-A14B's experts are both of the 14B shape; load its high-noise and "
                        "low-noise files")


def _identity(expert):
    return expert


@dataclass
class Experts:
    """Two denoisers and when each runs. high / low: the experts (`denoiser.Denoiser`s); `load(expert)` runs when
    the expert changes and returns the denoiser to call (ComfyUI offloads the other expert there, so only one is
    resident). guidance_low: the low-noise expert's guidance (None: the run's guidance, as diffusers' default).

    Itself a denoiser: the call (and `embed`, whose expert `run_blocks` / `unpatchify` then use) runs the expert
    of the timestep t; device, compute dtype and config are the high-noise expert's (both have one shape)."""

    high: Any
    low: Any
    _: KW_ONLY
    boundary: float = knob(WAN22_BOUNDARY, "Switch to the low-noise expert below this fraction of the 1000 "
                           f"timesteps (Wan2.2 A14B: {WAN22_BOUNDARY}).", min=0.0, max=1.0, step=0.005)
    guidance_low: float | None = knob(3.0, "Guidance of the low-noise expert (official Wan2.2 A14B: 3; the "
                                      "sampler's cfg is the high-noise expert's, officially 4). 1 skips its "
                                      "negative pass.", min=1.0, max=30.0, step=0.1, optional=True)
    load: Callable[[Any], Any] = _identity
    _active: tuple = field(default=(None, None), init=False, repr=False)

    def __post_init__(self):
        check(self, LABELS)

    def which(self, timestep: float) -> str:
        """'high' while timestep >= boundary * 1000 (diffusers' rule, on the timestep the DiT sees), else 'low'."""
        return "high" if timestep >= self.boundary * NUM_TRAIN_TIMESTEPS else "low"

    def at(self, timestep: float, guidance: float) -> tuple[Any, float]:
        """(the module to run at `timestep`, its guidance); loads the expert when it changes."""
        name = self.which(timestep)
        if self._active[0] != name:
            self._active = (name, self.load(self.high if name == "high" else self.low))
        low_guidance = guidance if self.guidance_low is None else self.guidance_low
        return self._active[1], guidance if name == "high" else low_guidance

    def guidances(self, guidance: float) -> tuple[float, float]:
        return guidance, guidance if self.guidance_low is None else self.guidance_low

    def each(self, wrap: Callable[[Any], Any]) -> "Experts":
        """The same experts, each wrapped (a multi-process run wraps each in ParallelVace)."""
        return replace(self, high=wrap(self.high), low=self.low if self.low is self.high else wrap(self.low))

    # the denoiser contract: the expert of t (every row of a batch shares the timestep)
    device = property(lambda self: self.high.device)
    compute_dtype = property(lambda self: self.high.compute_dtype)
    config = property(lambda self: self.high.config)
    staged = property(lambda self: self.high.staged and self.low.staged)

    def _of(self, t) -> Any:
        return self.at(float(t[0]), 1.0)[0]

    def __call__(self, x, t, text, contexts, strengths, *, self_bias=None, cross_bias=None):
        return self._of(t)(x, t, text, contexts, strengths, self_bias=self_bias, cross_bias=cross_bias)

    def check(self, x, contexts, strengths) -> None:
        self.high.check(x, contexts, strengths)

    def agree(self, flag: bool) -> bool:
        return self.high.agree(flag)

    def weights_checked(self) -> None:
        """Both experts' checks: a damaged low-noise expert stops the run before the high-noise steps."""
        self.high.weights_checked()
        self.low.weights_checked()

    def embed(self, x, t, text, contexts):
        return self._of(t).embed(x, t, text, contexts)

    def run_blocks(self, tokens, strengths=(), self_bias=None, cross_bias=None, **stages):
        return self._active[1].run_blocks(tokens, strengths, self_bias, cross_bias, **stages)

    def unpatchify(self, x, tokens, dtype):
        return self._active[1].unpatchify(x, tokens, dtype)


def as_experts(model) -> Experts:
    """A plain model as the one expert of every step (boundary 0: 'high' always; no low-noise guidance of its own,
    so guidance 1 runs no negative pass)."""
    return model if isinstance(model, Experts) else Experts(model, model, boundary=0.0, guidance_low=None)


def expert_folders(path: str | Path) -> tuple[Path, Path] | None:
    """(high, low) when `path` is a Wan2.2 release folder with high_noise_model / low_noise_model, else None."""
    folders = tuple(Path(path) / name for name in EXPERT_FOLDERS)
    return folders if all(f.is_dir() for f in folders) else None


def load_experts(high: str | Path, low: str | Path | None = None, *, base_high=None, base_low=None,
                 boundary: float = WAN22_BOUNDARY, guidance_low: float | None = 3.0, **load_kwargs) -> Experts:
    """Wan2.2-VACE-Fun-A14B from its release folder (`high` alone), or from two files / folders (each a full
    VACE model, or a VACE module with its Wan2.2 T2V A14B base: base_high / base_low). load_kwargs go to
    load_vace_model (dtypes, device, operations, attention backend)."""
    from .checkpoints import load_vace_model

    if low is None:
        folders = expert_folders(high)
        if folders is None:
            raise VaceError(f"{high} is not a Wan2.2 folder with {' and '.join(EXPERT_FOLDERS)} subfolders: give "
                            "the low-noise expert's file too")
        high, low = folders
    models = (load_vace_model(high, base_high, **load_kwargs), load_vace_model(low, base_low, **load_kwargs))
    check_pair(*(m.config for m in models))
    return Experts(*models, boundary=boundary, guidance_low=guidance_low)
