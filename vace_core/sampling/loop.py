"""The denoising loop (model-agnostic) and seeded noise that is the same on every device."""

from collections import deque
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


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator from a seed (checked), so one seed gives the same numbers on every device."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise VaceError(f"seed must be a whole number from 0 to {MAX_SEED}, got {seed!r}")
    return torch.Generator("cpu").manual_seed(seed)


def make_noise(shape, seed: int | torch.Generator, device="cpu", dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise from `seed` (or a generator to continue), drawn on the CPU in float32 and then
    moved, so one seed gives the same values on every device (up to the dtype's rounding). Same values as
    diffusers' randn_tensor with a CPU generator."""
    generator = seed if isinstance(seed, torch.Generator) else seeded_generator(seed)
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32).to(device=device, dtype=dtype)


def _check_sigmas(sigmas: torch.Tensor):
    if sigmas.ndim != 1 or len(sigmas) < 2:
        raise VaceError(f"sigmas must be a 1-D list of at least 2 values, got shape {tuple(sigmas.shape)}")
    if sigmas[-1] != 0 or not (sigmas[:-1] > sigmas[1:]).all() or sigmas[0] > 1:
        raise VaceError("sigmas must decrease strictly from at most 1 down to 0; build them with flow_sigmas")


class FiniteWatch:
    """Watches the latent for NaN/inf after every step without making the host wait for the device: each step's
    flag (one sum over the latent: NaN and inf survive it) is copied without blocking into a (pinned) host
    buffer allocated before the loop, and read through its numpy view once the copy has landed: on a GPU when
    its event reports completion (a step or so later), on a CPU at once. The run stops there, naming the first
    step that produced them; `finish` waits for the last flags."""

    def __init__(self, total: int, device):
        self.total, self.pending = total, deque()
        self.flags = torch.zeros(total + 1, dtype=torch.bool, pin_memory=torch.device(device).type == "cuda")
        self.landed = self.flags.numpy()  # a view: reading it is no tensor read

    def record(self, x: torch.Tensor, step: int) -> None:
        self.flags[step:step + 1].copy_((~torch.isfinite(x.sum())).view(1), non_blocking=True)
        event = None
        if x.is_cuda:
            event = torch.cuda.Event()
            event.record()
        self.pending.append((step, event))
        self._read(wait=False)

    def finish(self) -> None:
        self._read(wait=True)

    def _read(self, wait: bool) -> None:
        while self.pending:
            step, event = self.pending[0]
            if event is not None and not event.query():
                if not wait:
                    return
                event.synchronize()
            self.pending.popleft()
            if self.landed[step]:
                raise VaceError(
                    f"sampling produced NaN or infinite values at step {step} of {self.total}. Usual causes: fp16 "
                    "compute overflowing (choose compute_dtype bf16 or fp32), a damaged or mismatched checkpoint, "
                    "or extreme settings (very high cfg or strength).")


def sample(
    denoise: Callable[[torch.Tensor, float, int], torch.Tensor],
    noise: torch.Tensor,
    sigmas: torch.Tensor,
    solver: str = "unipc",
    callback: Callable[[int, int, torch.Tensor, torch.Tensor], bool | None] | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Integrate the flow from x = noise at sigmas[0] down to sigmas[-1] = 0; returns x0.

    denoise(x, sigma, step) returns the velocity v = noise - x0 at x (sigma a float, step from 0); it
    owns guidance and context strengths. `noise` is x at sigmas[0] (pure noise for text-to-video; a
    partly noised latent when sigmas start lower). The loop keeps x in noise's dtype (use float32) and
    casts v to it. After each step, callback(step, total, x, x0_preview) runs with step from 1 to total
    and x0_preview = x_in - sigma * v, the model's current guess of the result. Returning False stops
    the run between steps: `sample` then raises SamplingInterrupted; an exception the callback raises
    (ComfyUI's interrupt) propagates unchanged. `generator` feeds stochastic solvers (LCM).
    """
    _check_sigmas(sigmas)
    run = make_solver(solver, sigmas, generator)
    total = len(sigmas) - 1
    x, watch = noise, FiniteWatch(total, noise.device)
    for step, sigma in enumerate(sigmas[:-1].tolist()):  # host floats: no tensor-to-host reads in the loop
        v = denoise(x, sigma, step).to(x.dtype)
        x0_preview = x - sigma * v
        x = run.step(x, v)
        watch.record(x, step + 1)
        if callback is not None and callback(step + 1, total, x, x0_preview) is False:
            raise SamplingInterrupted(step + 1, total, x, x0_preview)
    watch.finish()
    return x
