"""Solvers over the official noise schedule: the official DDIM, diffusers' few-step schedulers and the
multistep consistency sampler of a distilled student (diffusers' LCM scheduler).

A solver knows its timesteps and how to take one step from a v-prediction; ``sample`` is the loop over
a model function ``model(x, t, step) -> v`` (the guided, window-fused prediction of the whole clip), so
every solver composes with every strategy that is a model function. The few-step solvers are diffusers'
own schedulers configured from the official DDIM config (v-prediction, zero-terminal-SNR betas, trailing
spacing), not copies: diffusers replaces the terminal cumulative alpha 0 by 2**-24 for them, so their
first step sees the same pure noise as DDIM's, and they end on sigma 0 (``final_sigmas_type="zero"``).
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    LCMScheduler,
    UniPCMultistepScheduler,
)

from ..errors import FYEInputError
from .schedule import OFFICIAL_SCHEDULER, Schedule, ddim_step, predicted_x0, x0_from_v

Callback = Callable[[dict], None]
ModelFunction = Callable[[torch.Tensor, float, int], torch.Tensor]  # (model input, timestep, step) -> v

# name -> (diffusers scheduler, settings over the official config)
DIFFUSERS_SOLVERS = {
    "dpmpp_2m": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2,
                                               "final_sigmas_type": "zero"}),
    "unipc": (UniPCMultistepScheduler, {"solver_order": 2, "final_sigmas_type": "zero"}),
    "euler": (EulerDiscreteScheduler, {"final_sigmas_type": "zero"}),
}
CONSISTENCY = "lcm"
SOLVERS = ("ddim", *DIFFUSERS_SOLVERS, CONSISTENCY)
# The skipping schedule a student is distilled over and samples from: every 1000 / TEACHER_STEPS-th timestep
# (LCM's 50 teacher steps); the student's file records the one it was made with.
TEACHER_STEPS = 50


class Solver(Protocol):
    """One run's steps. ``x`` is the solver's own latent (Euler's is scaled by sqrt(sigma^2 + 1))."""

    timesteps: list[float]

    def start(self, noise: torch.Tensor) -> torch.Tensor:
        """The first latents from unit Gaussian noise."""

    def model_input(self, x: torch.Tensor, step: int) -> torch.Tensor:
        """What the UNet sees at ``step``: the variance-preserving latents."""

    def step(self, x: torch.Tensor, v: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The latents after ``step`` and the clean latents the prediction implies (for previews)."""

    def noised(self, latents: torch.Tensor, noise: torch.Tensor, step: int) -> torch.Tensor:
        """Clean ``latents`` diffused to ``step``'s noise level with ``noise``, as the solver's ``x``."""


class DDIMSolver:
    """The official sampler: deterministic DDIM over ``Schedule`` (bit-identical to the official loop)."""

    def __init__(self, schedule: Schedule):
        self.schedule = schedule
        self.timesteps = schedule.timesteps

    def start(self, noise: torch.Tensor) -> torch.Tensor:
        return noise

    def model_input(self, x: torch.Tensor, step: int) -> torch.Tensor:
        return x

    def step(self, x: torch.Tensor, v: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.timesteps[step]
        return ddim_step(x, v, t, self.schedule), predicted_x0(x, v, t, self.schedule)

    def noised(self, latents: torch.Tensor, noise: torch.Tensor, step: int) -> torch.Tensor:
        alpha = self.schedule.alpha(self.timesteps[step])
        return alpha**0.5 * latents + (1 - alpha) ** 0.5 * noise


class DiffusersSolver:
    """A diffusers scheduler (``DIFFUSERS_SOLVERS``) driven step by step; a new one for every run, as
    multistep schedulers keep the previous predictions."""

    def __init__(self, name: str, steps: int):
        scheduler_class, settings = DIFFUSERS_SOLVERS[name]
        self.scheduler = official_scheduler(scheduler_class, **settings)
        self.scheduler.set_timesteps(steps)
        self.timesteps = self.scheduler.timesteps.tolist()
        self._alphas = self.scheduler.alphas_cumprod.double()

    def start(self, noise: torch.Tensor) -> torch.Tensor:
        return noise * self.scheduler.init_noise_sigma

    def model_input(self, x: torch.Tensor, step: int) -> torch.Tensor:
        return self.scheduler.scale_model_input(x, self.scheduler.timesteps[step])

    def step(self, x: torch.Tensor, v: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        alpha = float(self._alphas[round(self.timesteps[step])])
        denoised = x0_from_v(self.model_input(x, step), v, alpha)
        return self.scheduler.step(v, self.scheduler.timesteps[step], x).prev_sample, denoised

    def noised(self, latents: torch.Tensor, noise: torch.Tensor, step: int) -> torch.Tensor:
        return self.scheduler.add_noise(latents, noise, self.scheduler.timesteps[step:step + 1])


class ConsistencySolver(DiffusersSolver):
    """Multistep consistency sampling for a distilled student (LCM, Luo et al. 2023): each step maps the latents
    to clean latents through the consistency function (diffusers' LCM scheduler) and noises them again to the
    next step's level; the last step returns the clean latents. Its timesteps come from the skipping schedule of
    ``teacher_steps`` the student was distilled over, or from the student's own ``timesteps`` (a student distilled
    at chosen timesteps).

    ``eta`` 0 (the default) noises again with the noise the student's own prediction implies, as DDIM does: the
    run stays on the teacher's trajectory from its starting noise, so the student reproduces what the teacher
    makes from the same seed. ``eta`` 1 is LCM's fresh noise (drawn from ``seed``), between the two a mix.
    """

    def __init__(self, steps: int, teacher_steps: int = TEACHER_STEPS, seed: int = 0, eta: float = 0.0,
                 timesteps: Sequence[int] | None = None):
        most, source = (len(timesteps), "its own timesteps") if timesteps else \
            (teacher_steps, "its teacher's skipping schedule")
        if not 1 <= steps <= most:
            raise FYEInputError(f"a consistency student samples 1 to {most} steps ({source}), got {steps}")
        if not 0 <= eta <= 1:
            raise FYEInputError(f"the consistency sampler's eta must be between 0 and 1, got {eta}")
        if timesteps:  # as LCM picks from its skipping schedule: evenly by index
            chosen = [int(timesteps[step * len(timesteps) // steps]) for step in range(steps)]
            # every timestep is on a 1000-step skipping schedule, so the LCM scheduler takes the student's own
            self.scheduler = consistency_scheduler(1000)
            self.scheduler.set_timesteps(timesteps=chosen)
        else:
            self.scheduler = consistency_scheduler(teacher_steps)
            self.scheduler.set_timesteps(steps)
        self.timesteps = self.scheduler.timesteps.tolist()
        self._alphas = self.scheduler.alphas_cumprod.double()
        self.generator = torch.Generator().manual_seed(seed)
        self.eta = eta

    def step(self, x: torch.Tensor, v: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        # the fresh noise is drawn on the CPU, so that a seed gives the same run on every device
        out = self.scheduler.step(v.cpu(), self.scheduler.timesteps[step], x.cpu(), generator=self.generator)
        fresh, denoised = out.prev_sample.to(x.device, x.dtype), out.denoised.to(x.device, x.dtype)
        if step == len(self.timesteps) - 1 or self.eta == 1:
            return fresh, denoised
        alpha, alpha_next = (float(self._alphas[round(t)]) for t in self.timesteps[step:step + 2])
        implied = (x - alpha**0.5 * denoised) / (1 - alpha) ** 0.5
        noise = implied if self.eta == 0 else (
            (1 - self.eta**2) ** 0.5 * implied
            + self.eta * (fresh - alpha_next**0.5 * denoised) / (1 - alpha_next) ** 0.5)
        return alpha_next**0.5 * denoised + (1 - alpha_next) ** 0.5 * noise, denoised


def official_scheduler(scheduler_class, **settings):
    """A diffusers scheduler configured from the official DDIM config (v-prediction, zero-terminal-SNR betas,
    trailing spacing) with ``settings`` over it."""
    accepted = inspect.signature(scheduler_class).parameters
    official = {k: v for k, v in DDIMScheduler(**OFFICIAL_SCHEDULER).config.items() if k in accepted}
    return scheduler_class.from_config(official, **settings)


def consistency_scheduler(teacher_steps: int = TEACHER_STEPS) -> LCMScheduler:
    """The LCM scheduler over the official schedule: its consistency function (``c_skip``, ``c_out``) is the one
    the student is distilled to and sampled with."""
    return official_scheduler(LCMScheduler, original_inference_steps=teacher_steps)


def make_solver(name: str, steps: int, seed: int = 0, teacher_steps: int = TEACHER_STEPS,
                timesteps: Sequence[int] | None = None) -> Solver:
    """A fresh solver of ``steps`` steps (``SOLVERS``); ``seed``, ``teacher_steps`` and ``timesteps`` are the
    consistency sampler's (its fresh noise, the student's skipping schedule and own timesteps)."""
    if name not in SOLVERS:
        raise FYEInputError(f"solver must be one of {SOLVERS}, got {name!r}")
    if name == CONSISTENCY:
        return ConsistencySolver(steps, teacher_steps, seed, timesteps=timesteps)
    schedule = Schedule(steps)  # checks the step count
    return DDIMSolver(schedule) if name == "ddim" else DiffusersSolver(name, steps)


def sample(model: ModelFunction, x: torch.Tensor, solver: Solver, callback: Callback | None = None) -> torch.Tensor:
    """Solves from ``x`` (already ``solver.start``-ed) over the solver's steps."""
    steps = len(solver.timesteps)
    for step, t in enumerate(solver.timesteps):
        v = model(solver.model_input(x, step), t, step)
        x, denoised = solver.step(x, v, step)
        if callback is not None:
            callback({"event": "step", "step": step, "steps": steps, "x": x, "denoised": denoised})
    return x
