"""Sampler core: schedules against their formula and diffusers, solver parity with diffusers' schedulers,
exactness on a known x0, the loop's callback / stop, seeded noise, guidance and context strengths."""

import math

import numpy as np
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler
from diffusers.utils.torch_utils import randn_tensor

from vace_core.errors import VaceError
from vace_core.sampling import (
    SCHEDULES,
    SOLVERS,
    ContextStream,
    SamplingInterrupted,
    cfg,
    context_strengths,
    flow_sigmas,
    make_noise,
    make_solver,
    sample,
    sigma_to_timestep,
)

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # diffusers + numpy 2

PARITY_RTOL = 1e-5  # max |ours - diffusers| / max |diffusers| over every step, fp32 (measured <= 3e-6)

# which of our grids each diffusers scheduler builds; DPM++'s is the official Wan grid
REFERENCE_SCHEDULE = {"euler": "diffusers_euler", "unipc": "diffusers", "dpmpp_2m": "wan"}


def diffusers_scheduler(solver: str, steps: int, shift: float):
    if solver == "euler":
        scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    elif solver == "unipc":  # the scheduler of the diffusers Wan / VACE checkpoints
        scheduler = UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift, solver_type="bh2",
            solver_order=2, lower_order_final=True,
        )
    else:
        scheduler = DPMSolverMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift,
            algorithm_type="dpmsolver++", solver_order=2,
        )
    scheduler.set_timesteps(steps)
    return scheduler


W = torch.randn(8, 8, generator=torch.Generator().manual_seed(0)) / 3


def toy_velocity(x, sigma, step=0):
    """Deterministic, nonlinear in x and sigma: any wrong coefficient or history shows in the trajectory."""
    return torch.tanh(x @ W) + sigma**2 * x - 0.3 * math.cos(3 * sigma)


def recording(trajectory):
    def callback(step, total, x, x0_preview):
        trajectory.append(x.clone())

    return callback


# ---- schedules -----------------------------------------------------------------------------------


@pytest.mark.parametrize("shift", [1.0, 3.0, 16.0])
@pytest.mark.parametrize("steps", [1, 8, 50])
def test_shift_against_its_formula(steps, shift):
    sigmas = flow_sigmas(steps, shift)  # the official Wan grid
    assert sigmas.dtype == torch.float64 and sigmas.shape == (steps + 1,) and sigmas[-1] == 0
    assert (sigmas[:-1] > sigmas[1:]).all()
    sigma_max = float(np.float32(0.999))  # FlowUniPCMultistepScheduler: 1 - alphas[0] in a float32 table
    for i, sigma in enumerate(sigmas[:-1].tolist()):
        base = sigma_max * (1 - i / steps)
        assert sigma == pytest.approx(shift * base / (1 + (shift - 1) * base), rel=1e-14)
    # undoing the shift gives back an evenly spaced grid
    unshifted = sigmas / (shift - (shift - 1) * sigmas)
    assert torch.allclose(unshifted.diff(), torch.full((steps,), -sigma_max / steps, dtype=torch.float64))


def test_official_vace_defaults_and_schedule_order():
    sigmas = flow_sigmas()  # 50 steps, shift 16
    assert len(sigmas) == 51
    assert sigmas[0].item() == pytest.approx(16 * 0.999 / (1 + 15 * 0.999), rel=1e-7)
    assert sigmas[49].item() == pytest.approx(16 * 0.999 / 50 / (1 + 15 * 0.999 / 50), rel=1e-7)
    # a larger shift keeps every step noisier
    assert (flow_sigmas(50, 16.0)[:-1] > flow_sigmas(50, 3.0)[:-1]).all()
    torch.testing.assert_close(flow_sigmas(10, 1.0, "wan_dpm"), torch.linspace(1, 0, 11, dtype=torch.float64))


@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0, 16.0])
@pytest.mark.parametrize("steps", [8, 20, 50])
@pytest.mark.parametrize("solver", ["euler", "unipc", "dpmpp_2m"])
def test_schedules_match_diffusers(solver, steps, shift):
    reference = diffusers_scheduler(solver, steps, shift)
    schedule = REFERENCE_SCHEDULE[solver]
    sigmas = flow_sigmas(steps, shift, schedule)
    timesteps = torch.tensor([sigma_to_timestep(s, schedule) for s in sigmas[:-1].tolist()])
    assert torch.equal(timesteps, reference.timesteps.double())
    if solver == "dpmpp_2m":  # float32(0.999) vs float64 0.999 at the grid's start: one float32 rounding
        torch.testing.assert_close(sigmas.float(), reference.sigmas, rtol=0, atol=1.2e-7)
    else:
        assert torch.equal(sigmas.float(), reference.sigmas)


def test_schedules_differ_where_documented():
    wan, diffusers = flow_sigmas(50, 16.0, "wan"), flow_sigmas(50, 16.0, "diffusers")
    assert diffusers[0].item() == pytest.approx(1 - 1e-6, abs=1e-12)  # diffusers starts at pure noise
    assert wan[0].item() == pytest.approx(0.99993745, abs=1e-8)
    assert wan[49].item() == pytest.approx(0.245964, abs=1e-6)
    # the references truncate sigma * 1000 (int64 cast), they do not round it
    assert sigma_to_timestep(wan[0].item()) == 999.0 and sigma_to_timestep(wan[49].item()) == 245.0
    assert sigma_to_timestep(wan[49].item(), "diffusers_euler") == pytest.approx(245.96446, abs=1e-4)


# ---- solvers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("shift", [1.0, 3.0, 16.0])
@pytest.mark.parametrize("steps", [8, 20])
@pytest.mark.parametrize("solver", ["euler", "unipc", "dpmpp_2m"])
def test_solver_parity_with_diffusers(solver, steps, shift):
    reference = diffusers_scheduler(solver, steps, shift)
    noise = torch.randn(2, 8, generator=torch.Generator().manual_seed(1))

    expected, x = [], noise.clone()
    for i, t in enumerate(reference.timesteps):
        x = reference.step(toy_velocity(x, reference.sigmas[i].item()), t, x, return_dict=False)[0]
        expected.append(x)

    ours = []
    sigmas = flow_sigmas(steps, shift, REFERENCE_SCHEDULE[solver])
    result = sample(toy_velocity, noise.clone(), sigmas, solver, callback=recording(ours))

    assert len(ours) == steps and torch.equal(result, ours[-1])
    for step, (a, b) in enumerate(zip(ours, expected, strict=True)):
        error = ((a - b).abs().max() / b.abs().max()).item()
        assert error < PARITY_RTOL, f"step {step}: relative error {error:.2e}"


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("solver", sorted(set(SOLVERS) - {"lcm"}))  # LCM re-noises: tests/test_fast_sampling.py
def test_exact_velocity_lands_on_x0(solver, schedule):
    """For one data point the exact flow is v = (x - x0) / sigma: every solver follows the straight line
    x = (1 - sigma) x0 + sigma noise and ends on x0."""
    x0 = torch.randn(3, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    noise = torch.randn(3, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    sigmas = flow_sigmas(12, 5.0, schedule)
    start = (1 - sigmas[0]) * x0 + sigmas[0] * noise

    trajectory = []
    result = sample(lambda x, sigma, step: (x - x0) / sigma, start, sigmas, solver, recording(trajectory))

    torch.testing.assert_close(result, x0, rtol=0, atol=1e-12)
    for sigma, x in zip(sigmas[1:], trajectory, strict=True):
        torch.testing.assert_close(x, (1 - sigma) * x0 + sigma * noise, rtol=0, atol=1e-12)


def test_solver_state_is_per_run():
    sigmas = flow_sigmas(6, 3.0)
    x_a = torch.randn(2, 8, generator=torch.Generator().manual_seed(4))
    x_b = torch.randn(2, 8, generator=torch.Generator().manual_seed(5))
    alone_a = sample(toy_velocity, x_a, sigmas, "unipc")
    alone_b = sample(toy_velocity, x_b, sigmas, "unipc")

    run_a, run_b = make_solver("unipc", sigmas), make_solver("unipc", sigmas)
    for i in range(6):  # two runs stepped in turn must not see each other's history
        x_a = run_a.step(x_a, toy_velocity(x_a, sigmas[i].item()))
        x_b = run_b.step(x_b, toy_velocity(x_b, sigmas[i].item()))
    assert torch.equal(x_a, alone_a) and torch.equal(x_b, alone_b)


# ---- loop: callback, stop, determinism, dtype ----------------------------------------------------


def test_callback_sees_every_step_with_a_preview():
    sigmas = flow_sigmas(5, 3.0)
    calls = []
    sample(toy_velocity, make_noise((2, 8), seed=7), sigmas, "unipc",
           lambda step, total, x, preview: calls.append((step, total, preview.shape)))
    assert calls == [(step, 5, (2, 8)) for step in range(1, 6)]

    x0 = torch.randn(2, 8, generator=torch.Generator().manual_seed(8))
    previews = []
    sample(lambda x, sigma, step: (x - x0) / sigma, make_noise((2, 8), seed=7), sigmas, "euler",
           lambda step, total, x, preview: previews.append(preview))
    for preview in previews:  # the preview is the model's x0 guess
        torch.testing.assert_close(preview, x0)


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_callback_stops_the_run_after_k_steps(solver):
    sigmas, noise, k = flow_sigmas(10, 16.0), make_noise((2, 8), seed=9), 3
    full = []
    sample(toy_velocity, noise, sigmas, solver, recording(full))

    steps_run = []

    def denoise(x, sigma, step):
        steps_run.append(step)
        return toy_velocity(x, sigma)

    with pytest.raises(SamplingInterrupted, match="after step 3 of 10") as stopped:
        sample(denoise, noise, sigmas, solver, lambda step, total, x, preview: step < k)
    assert steps_run == [0, 1, 2]  # the model ran k times, no step after the stop
    assert stopped.value.step == k and stopped.value.total == 10
    assert torch.equal(stopped.value.x, full[k - 1])


def test_callback_exception_propagates_unchanged():
    class Interrupt(Exception):
        pass

    def callback(step, total, x, preview):
        if step == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        sample(toy_velocity, make_noise((2, 8), seed=0), flow_sigmas(6, 3.0), "unipc", callback)


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_sampling_is_deterministic(solver):
    sigmas = flow_sigmas(8, 16.0)
    first = sample(toy_velocity, make_noise((2, 8), seed=123), sigmas, solver)
    torch.manual_seed(999)  # the global RNG plays no part
    second = sample(toy_velocity, make_noise((2, 8), seed=123), sigmas, solver)
    assert torch.equal(first, second)


def test_loop_keeps_the_latent_dtype():
    def bf16_model(x, sigma, step):
        return toy_velocity(x, sigma).to(torch.bfloat16)

    result = sample(bf16_model, make_noise((2, 8), seed=1), flow_sigmas(4, 3.0), "unipc")
    assert result.dtype == torch.float32 and torch.isfinite(result).all()


# ---- noise ----------------------------------------------------------------------------------------


def test_noise_is_seeded_and_matches_diffusers():
    shape = (1, 16, 3, 8, 10)
    noise = make_noise(shape, seed=42)
    assert noise.shape == shape and noise.dtype == torch.float32
    torch.manual_seed(0)
    assert torch.equal(noise, make_noise(shape, seed=42))
    assert not torch.equal(noise, make_noise(shape, seed=43))
    expected = randn_tensor(shape, generator=torch.Generator("cpu").manual_seed(42), dtype=torch.float32)
    assert torch.equal(noise, expected)
    assert abs(noise.mean().item()) < 0.1 and abs(noise.std().item() - 1) < 0.1
    assert make_noise((2,), seed=2**64 - 1).shape == (2,)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_noise_dtype_only_rounds(dtype):
    reference = make_noise((4, 64), seed=5)
    assert torch.equal(make_noise((4, 64), seed=5, dtype=dtype), reference.to(dtype))


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_noise_is_the_same_on_every_device(device):
    on_device = make_noise((4, 64), seed=5, device=device)
    assert on_device.device.type == device
    assert torch.equal(on_device.cpu(), make_noise((4, 64), seed=5))


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, "7", True])
def test_bad_seed_is_refused(seed):
    with pytest.raises(VaceError, match="seed must be a whole number from 0 to"):
        make_noise((2,), seed=seed)


# ---- guidance and context strengths --------------------------------------------------------------


def test_cfg():
    cond = torch.randn(2, 8, generator=torch.Generator().manual_seed(0))
    uncond = torch.randn(2, 8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(cfg(cond, uncond, 0.0), uncond)
    torch.testing.assert_close(cfg(cond, uncond, 1.0), cond)
    torch.testing.assert_close(cfg(cond, uncond, 5.0), cond + 4.0 * (cond - uncond))


def test_context_strengths_follow_step_fractions():
    streams = [ContextStream(), (0.5, 0.0, 0.5), ContextStream(0.8, 0.5, 1.0), (2.0, 0.3, 0.3)]
    table = [context_strengths(streams, step, 10) for step in range(10)]
    assert [row[0] for row in table] == [1.0] * 10  # the default stream is on for every step
    assert [row[1] for row in table] == [0.5] * 5 + [0.0] * 5  # steps 0..4: i / 10 < 0.5
    assert [row[2] for row in table] == [0.0] * 5 + [0.8] * 5  # steps 5..9: the other half, no overlap
    assert [row[3] for row in table] == [0.0] * 10  # start == end: never
    assert context_strengths([(1.0, 0.0, 0.34)], 16, 50) == [1.0] and context_strengths(
        [(1.0, 0.0, 0.34)], 17, 50) == [0.0]


@pytest.mark.parametrize(
    "streams, step, steps, message",
    [
        ([(1.0, 0.6, 0.4)], 0, 10, "context stream 0: start 0.6 and end 0.4"),
        ([(1.0, 0.0, 1.0), (1.0, -0.1, 1.0)], 0, 10, "context stream 1"),
        ([(1.0, 0.0, 1.5)], 0, 10, "0 <= start <= end <= 1"),
        ([(1.0, 0.0, 1.0)], 10, 10, "step 10 is outside the run of 10 steps"),
    ],
)
def test_context_strengths_refuse_bad_input(streams, step, steps, message):
    with pytest.raises(VaceError, match=message):
        context_strengths(streams, step, steps)


# ---- bad input -----------------------------------------------------------------------------------


def test_bad_schedule_and_solver_input_is_refused():
    with pytest.raises(VaceError, match="steps must be a whole number of at least 1"):
        flow_sigmas(0, 16.0)
    with pytest.raises(VaceError, match="shift must be greater than 0"):
        flow_sigmas(10, 0.0)
    with pytest.raises(VaceError, match="unknown sigma schedule 'comfy': choose one of wan, wan_dpm"):
        flow_sigmas(10, 3.0, "comfy")
    with pytest.raises(VaceError, match="unknown solver 'ddim': choose one of euler, unipc, dpmpp_2m"):
        sample(toy_velocity, make_noise((2, 8), seed=0), flow_sigmas(4, 3.0), "ddim")
    for sigmas in (torch.tensor([1.0, 0.5, 0.1]), torch.tensor([0.9, 0.9, 0.0]), torch.tensor([1.5, 0.0])):
        with pytest.raises(VaceError, match="sigmas must decrease strictly"):
            sample(toy_velocity, make_noise((2, 8), seed=0), sigmas, "euler")
