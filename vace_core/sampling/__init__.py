"""Flow-matching sampling for VACE: sigma schedules with shift, Euler / UniPC (bh2) / DPM++ 2M / LCM,
classifier-free guidance, per-stream context strengths, seeded noise and the denoising loop."""

from .curves import Curve, parse_curve
from .guidance import ContextStream, as_stream, cfg, context_strengths, frame_weights
from .loop import SamplingInterrupted, make_noise, sample, seeded_generator
from .schedule import NUM_TRAIN_TIMESTEPS, SCHEDULES, denoise_sigmas, flow_sigmas, shift_sigmas, sigma_to_timestep
from .solvers import DPMPP2M, LCM, SOLVERS, Euler, FlowSolver, UniPC, make_solver

__all__ = [
    "DPMPP2M",
    "NUM_TRAIN_TIMESTEPS",
    "SCHEDULES",
    "SOLVERS",
    "ContextStream",
    "Curve",
    "Euler",
    "FlowSolver",
    "LCM",
    "SamplingInterrupted",
    "UniPC",
    "as_stream",
    "cfg",
    "context_strengths",
    "denoise_sigmas",
    "flow_sigmas",
    "frame_weights",
    "make_noise",
    "make_solver",
    "parse_curve",
    "sample",
    "seeded_generator",
    "shift_sigmas",
    "sigma_to_timestep",
]
