"""Flow-matching sampling for VACE: sigma schedules with shift, Euler / UniPC (bh2) / DPM++ 2M / LCM,
classifier-free guidance, per-stream context strengths, seeded noise and the denoising loop."""

from .guidance import ContextStream, cfg, context_strengths
from .loop import SamplingInterrupted, make_noise, sample, seeded_generator
from .schedule import NUM_TRAIN_TIMESTEPS, SCHEDULES, flow_sigmas, shift_sigmas, sigma_to_timestep
from .solvers import DPMPP2M, LCM, SOLVERS, Euler, FlowSolver, UniPC, make_solver

__all__ = [
    "DPMPP2M",
    "NUM_TRAIN_TIMESTEPS",
    "SCHEDULES",
    "SOLVERS",
    "ContextStream",
    "Euler",
    "FlowSolver",
    "LCM",
    "SamplingInterrupted",
    "UniPC",
    "cfg",
    "context_strengths",
    "flow_sigmas",
    "make_noise",
    "make_solver",
    "sample",
    "seeded_generator",
    "shift_sigmas",
    "sigma_to_timestep",
]
