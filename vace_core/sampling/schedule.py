"""Flow-matching sigma schedules with shift, and the timestep the DiT is given for a sigma.

Rectified flow: x_sigma = (1 - sigma) * x0 + sigma * noise, sigma from ~1 (noise) down to 0 (data).
The shift s spends more steps at high noise: sigma' = s * sigma / (1 + (s - 1) * sigma).

Every reference builds the unshifted grid slightly differently; the grid decides the exact sigmas and
the integer timesteps the model sees, so parity needs the same grid. `schedule` names the reference:

- "wan" (default): the official Wan2.1 / VACE code (FlowUniPCMultistepScheduler, its default
  solver): linspace(sigma_max, 0, steps + 1)[:-1] with sigma_max = float32(1 - 1/1000) = 0.999...
  diffusers' DPMSolverMultistepScheduler(use_flow_sigmas=True) builds the same grid from a float64 0.999
  (equal within one float32 rounding).
- "wan_dpm": the official code's sample_solver="dpm++" path: linspace(1, 0, steps + 1)[:-1].
- "diffusers": diffusers' UniPCMultistepScheduler(use_flow_sigmas=True, flow_shift=s), the scheduler of
  the diffusers Wan/VACE checkpoints: linspace(1, 1/1000, steps + 1)[:-1], and a first sigma of exactly 1
  lowered by 1e-6.
- "diffusers_euler": diffusers' FlowMatchEulerDiscreteScheduler(shift=s): `steps` points from 1 to
  shift(1/1000) (the end already shifted once, in float32), then shifted.

The grids are computed in float64 with numpy, as the references do before they cast to float32.
"""

import numpy as np
import torch

from ..errors import VaceError

NUM_TRAIN_TIMESTEPS = 1000
SCHEDULES = ("wan", "wan_dpm", "diffusers", "diffusers_euler")


def shift_sigmas(sigmas, shift: float):
    """sigma' = s * sigma / (1 + (s - 1) * sigma): works on floats, numpy arrays and tensors."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def _unshifted_grid(steps: int, shift: float, schedule: str, n: int) -> np.ndarray:
    if schedule == "wan":
        sigma_max = float(np.float32(1 - 1 / n))  # the official code reads it from a float32 table
        return np.linspace(sigma_max, 0, steps + 1)[:-1]
    if schedule == "wan_dpm":
        return np.linspace(1, 0, steps + 1)[:-1]
    if schedule == "diffusers":
        return np.linspace(1, 1 / n, steps + 1)[:-1]
    # diffusers_euler: its table is shifted at construction (float32), so the last grid point is shifted twice
    sigma_min = shift_sigmas(torch.tensor(1.0) / n, shift).item()
    return np.linspace(n * 1.0, n * sigma_min, steps) / n


def flow_sigmas(steps: int = 50, shift: float = 16.0, schedule: str = "wan") -> torch.Tensor:
    """The sampling sigmas, float64 (steps + 1,): decreasing from ~1, the last one 0.

    Defaults are the official VACE ones (50 steps, shift 16, the official Wan grid).
    """
    if not isinstance(steps, int) or steps < 1:
        raise VaceError(f"steps must be a whole number of at least 1, got {steps!r}")
    if not shift > 0:
        raise VaceError(f"shift must be greater than 0 (VACE uses 16; 1 means no shift), got {shift!r}")
    if schedule not in SCHEDULES:
        raise VaceError(f"unknown sigma schedule {schedule!r}: choose one of {', '.join(SCHEDULES)}")
    sigmas = shift_sigmas(_unshifted_grid(steps, shift, schedule, NUM_TRAIN_TIMESTEPS), shift)
    if schedule == "diffusers" and abs(sigmas[0] - 1) < 1e-6:
        sigmas[0] -= 1e-6  # diffusers keeps log(alpha) finite at sigma 1
    return torch.from_numpy(np.append(sigmas, 0.0))


def sigma_to_timestep(sigma: float, schedule: str = "wan") -> float:
    """The timestep the DiT is given at `sigma` (sigma * 1000), rounded the way the reference does.

    The official Wan code and diffusers' UniPC / DPM++ schedulers pass int64(sigma * 1000) (truncated,
    from the float64 sigma); diffusers' FlowMatchEuler passes float32(sigma) * 1000 in float32.
    """
    if schedule == "diffusers_euler":
        return (torch.tensor(sigma, dtype=torch.float32) * NUM_TRAIN_TIMESTEPS).item()
    return float(int(sigma * NUM_TRAIN_TIMESTEPS))


def denoise_sigmas(steps: int, shift: float, schedule: str = "wan", denoise: float = 1.0) -> torch.Tensor:
    """The sigmas of a partial run (video-to-video), as native KSampler's `denoise`: the grid is built for
    int(steps / denoise) steps and its last `steps` + 1 sigmas are run, so sampling starts where the full schedule
    has that fraction of its steps left. denoise above 0.9999 is the whole schedule (KSampler's rule)."""
    if isinstance(denoise, bool) or not isinstance(denoise, (int, float)) or not 0 < denoise <= 1:
        raise VaceError(f"denoise is the fraction of the schedule to run, above 0 and at most 1 (1: from pure "
                        f"noise; 0.6: keep much of the init video), got {denoise!r}")
    if denoise > 0.9999:
        return flow_sigmas(steps, shift, schedule)
    return flow_sigmas(int(steps / denoise), shift, schedule)[-(steps + 1):]
