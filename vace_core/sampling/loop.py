"""The denoising loop (model-agnostic) and seeded noise that is the same on every device."""

from collections.abc import Callable

import torch

from ..errors import VaceError
from .solvers import make_solver

MAX_SEED = 2**64 - 1  # torch.Generator's range; ComfyUI's seed widget uses the same


class SamplingInterrupted(Exception):
    """The progress callback stopped the run. Carries the state after the last finished step."""

    def __init__(self, step: int, total: int, x: torch.Tensor, x0_preview: torch.Tensor):
        super().__init__(f"sampling stopped by the callback after step {step} of {total}")
        self.step, self.total, self.x, self.x0_preview = step, total, x, x0_preview


def make_noise(shape, seed: int, device="cpu", dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise from `seed`, drawn on the CPU in float32 and then moved, so one seed
    gives the same values on every device (up to the dtype's rounding). Same values as diffusers'
    randn_tensor with a CPU generator."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise VaceError(f"seed must be a whole number from 0 to {MAX_SEED}, got {seed!r}")
    generator = torch.Generator("cpu").manual_seed(seed)
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32).to(device=device, dtype=dtype)


def _check_sigmas(sigmas: torch.Tensor):
    if sigmas.ndim != 1 or len(sigmas) < 2:
        raise VaceError(f"sigmas must be a 1-D list of at least 2 values, got shape {tuple(sigmas.shape)}")
    if sigmas[-1] != 0 or not (sigmas[:-1] > sigmas[1:]).all() or sigmas[0] > 1:
        raise VaceError("sigmas must decrease strictly from at most 1 down to 0; build them with flow_sigmas")


def sample(
    denoise: Callable[[torch.Tensor, float, int], torch.Tensor],
    noise: torch.Tensor,
    sigmas: torch.Tensor,
    solver: str = "unipc",
    callback: Callable[[int, int, torch.Tensor, torch.Tensor], bool | None] | None = None,
) -> torch.Tensor:
    """Integrate the flow from x = noise at sigmas[0] down to sigmas[-1] = 0; returns x0.

    denoise(x, sigma, step) returns the velocity v = noise - x0 at x (sigma a float, step from 0); it
    owns guidance and context strengths. `noise` is x at sigmas[0] (pure noise for text-to-video; a
    partly noised latent when sigmas start lower). The loop keeps x in noise's dtype (use float32) and
    casts v to it. After each step, callback(step, total, x, x0_preview) runs with step from 1 to total
    and x0_preview = x_in - sigma * v, the model's current guess of the result. Returning False stops
    the run between steps: `sample` then raises SamplingInterrupted; an exception the callback raises
    (ComfyUI's interrupt) propagates unchanged.
    """
    _check_sigmas(sigmas)
    run = make_solver(solver, sigmas)
    total = len(sigmas) - 1
    x = noise
    for step, sigma in enumerate(sigmas[:-1].tolist()):  # host floats: no tensor-to-host reads in the loop
        v = denoise(x, sigma, step).to(x.dtype)
        x0_preview = x - sigma * v
        x = run.step(x, v)
        if callback is not None and callback(step + 1, total, x, x0_preview) is False:
            raise SamplingInterrupted(step + 1, total, x, x0_preview)
    return x
