"""ODE solvers for flow prediction (v = noise - x0), one instance per run.

Every solver has the same small interface: built on the run's sigmas, then `step(x, v)` once per
model evaluation, in order; it returns x at the next sigma. The multistep solvers work on the data
prediction x0 = x - sigma * v and keep the last predictions as their state.

The coefficients are computed in float64 from the sigmas; the tensors keep their dtype. The
formulas follow diffusers' schedulers with flow sigmas (UniPCMultistepScheduler and
DPMSolverMultistepScheduler, solver_order=2, lower_order_final=True, final sigma 0), which the
official Wan code copies: alpha = 1 - sigma, lambda = log(alpha / sigma), h = lambda_next - lambda.
"""

import math

import torch

from ..errors import VaceError


def _lambda(sigma: float) -> float:
    """log(alpha / sigma): +inf at sigma 0 (data), -inf at sigma 1 (pure noise)."""
    if sigma == 0:
        return math.inf
    if sigma == 1:
        return -math.inf
    return math.log(1 - sigma) - math.log(sigma)


class FlowSolver:
    def __init__(self, sigmas: torch.Tensor, generator: torch.Generator | None = None):
        self.sigmas = [float(s) for s in sigmas]
        self.i = 0  # index of the current sigma
        self.generator = generator  # only stochastic solvers (LCM) draw from it

    @property
    def last(self) -> bool:
        return self.i == len(self.sigmas) - 2

    def step(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        x_next = self.update(x, v)
        self.i += 1
        return x_next

    def update(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class Euler(FlowSolver):
    """x_next = x + (sigma_next - sigma) * v."""

    def update(self, x, v):
        return x + (self.sigmas[self.i + 1] - self.sigmas[self.i]) * v


def _first_order(x: torch.Tensor, x0: torch.Tensor, s: float, t: float) -> tuple[torch.Tensor, float, float]:
    """The exact step from sigma s to t for a constant x0 (DDIM / DPM-Solver-1), in x0 prediction.

    Returns (x_t, alpha_t * (e^-h - 1), h); the higher-order terms are corrections scaled by the middle value.
    """
    h = _lambda(t) - _lambda(s)
    a_phi = (1 - t) * math.expm1(-h)
    return t / s * x - a_phi * x0, a_phi, h


class DPMPP2M(FlowSolver):
    """DPM-Solver++(2M), midpoint: first order on the first step (no history) and on the last (sigma 0)."""

    def __init__(self, sigmas, generator=None):
        super().__init__(sigmas, generator)
        self.prev_x0 = None

    def update(self, x, v):
        s, t = self.sigmas[self.i], self.sigmas[self.i + 1]
        x0 = x - s * v
        d = x0
        if self.prev_x0 is not None and not self.last:
            r = (_lambda(s) - _lambda(self.sigmas[self.i - 1])) / (_lambda(t) - _lambda(s))
            d = x0 + (x0 - self.prev_x0) / (2 * r)  # midpoint: x0 plus half its divided difference
        self.prev_x0 = x0
        return _first_order(x, d, s, t)[0]


class UniPC(FlowSolver):
    """UniPC with B(h) = e^h - 1 (bh2), order 2: predictor UniP-2 and corrector UniC after every model call.

    Order 1 on the first step (no history) and on the last one (sigma 0, where lambda is infinite), as
    diffusers' lower_order_final does. The corrector refines the current x with the new model output
    before the next predictor; the model output itself was taken at the uncorrected x.
    """

    def __init__(self, sigmas, generator=None):
        super().__init__(sigmas, generator)
        self.x0s: list[torch.Tensor] = []  # the last two x0 predictions, oldest first
        self.prev_x = None  # the x the last predictor started from
        self.order = 1  # the last predictor's order

    def update(self, x, v):
        x0 = x - self.sigmas[self.i] * v
        if self.i > 0:
            x = self._correct(x0)
        self.x0s = [*self.x0s, x0][-2:]
        self.order = 1 if self.i == 0 or self.last else 2
        self.prev_x = x
        return self._predict(x)

    def _d1(self, k: int, h: float) -> tuple[torch.Tensor, float]:
        """Divided difference of the x0 predictions in lambda, from sigma index k - 1 to k (current: k)."""
        s0, s1 = self.sigmas[k], self.sigmas[k - 1]
        r = (_lambda(s1) - _lambda(s0)) / h
        return (self.x0s[-2] - self.x0s[-1]) / r, r

    def _predict(self, x):
        s, t = self.sigmas[self.i], self.sigmas[self.i + 1]
        x_t, a_phi, h = _first_order(x, self.x0s[-1], s, t)
        if self.order == 1:
            return x_t
        d1, _ = self._d1(self.i, h)
        return x_t - a_phi * 0.5 * d1

    def _correct(self, x0_t):
        """UniC-p with p = the last predictor's order, from sigma i-1 (at prev_x) to sigma i."""
        s, t = self.sigmas[self.i - 1], self.sigmas[self.i]
        m0 = self.x0s[-1]
        x_t, a_phi, h = _first_order(self.prev_x, m0, s, t)
        if self.order == 1:
            return x_t - a_phi * 0.5 * (x0_t - m0)
        # rho solves [[1, 1], [r, 1]] rho = b with b_k = k! * phi_{k+1}(-h) terms / B(h) (diffusers' R, b)
        hh = -h
        phi1 = math.expm1(hh)
        phi2 = phi1 / hh - 1
        phi3 = phi2 / hh - 0.5
        b0, b1 = phi2 / phi1, 2 * phi3 / phi1
        d1, r = self._d1(self.i - 1, h)
        rho0 = (b1 - b0) / (r - 1)
        rho1 = b0 - rho0
        return x_t - a_phi * (rho0 * d1 + rho1 * (x0_t - m0))


class LCM(FlowSolver):
    """Consistency sampling for step-distilled models and LoRAs (CausVid, lightx2v): jump to the predicted x0,
    then noise it afresh to the next sigma, x_next = (1 - sigma_next) * x0 + sigma_next * noise; the last step
    returns x0. As diffusers' FlowMatchLCMScheduler and ComfyUI's `lcm` sampler. The fresh noise is drawn on
    the CPU in float32 from `generator` (the sampler passes the one that drew the starting noise, so one seed
    fixes the whole run on every device)."""

    def update(self, x, v):
        sigma, sigma_next = self.sigmas[self.i], self.sigmas[self.i + 1]
        x0 = x - sigma * v
        if sigma_next == 0:
            return x0
        if self.generator is None:
            self.generator = torch.Generator("cpu").manual_seed(0)
        noise = torch.randn(x.shape, generator=self.generator, dtype=torch.float32).to(x.device, x.dtype)
        return (1 - sigma_next) * x0 + sigma_next * noise


SOLVERS = {"euler": Euler, "unipc": UniPC, "dpmpp_2m": DPMPP2M, "lcm": LCM}


def make_solver(name: str, sigmas: torch.Tensor, generator: torch.Generator | None = None) -> FlowSolver:
    if name not in SOLVERS:
        raise VaceError(f"unknown solver {name!r}: choose one of {', '.join(SOLVERS)}")
    return SOLVERS[name](sigmas, generator)
