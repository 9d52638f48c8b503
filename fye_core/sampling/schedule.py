"""The official noise schedule: DDIM, zero-terminal-SNR rescaled scaled_linear betas, trailing, v-prediction."""
from __future__ import annotations

import torch
from diffusers import DDIMScheduler

from ..errors import FYEInputError

OFFICIAL_SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
    "clip_sample": False,
    "rescale_betas_zero_snr": True,
    "timestep_spacing": "trailing",
    "prediction_type": "v_prediction",
    "set_alpha_to_one": True,
}


class Schedule:
    """Timesteps and cumulative alphas of a DDIM run with ``steps`` steps (diffusers' values)."""

    def __init__(self, steps: int, config: dict | None = None):
        scheduler = DDIMScheduler(**(config or OFFICIAL_SCHEDULER))
        if not 1 <= steps <= scheduler.config.num_train_timesteps:
            raise FYEInputError(f"steps must be between 1 and {scheduler.config.num_train_timesteps} (the "
                                f"training timesteps), got {steps}")
        scheduler.set_timesteps(steps)
        self.timesteps = scheduler.timesteps.tolist()
        self.alphas_cumprod = scheduler.alphas_cumprod.double()
        self.final_alpha_cumprod = float(scheduler.final_alpha_cumprod)
        # diffusers' DDIM steps to t - T/steps, which is not always the next timestep (trailing: 666 -> 333, then 332)
        self.stride = scheduler.config.num_train_timesteps // steps

    def alpha(self, t: int) -> float:
        return float(self.alphas_cumprod[t]) if t >= 0 else self.final_alpha_cumprod

    def previous(self, t: int) -> int:
        return t - self.stride


def x0_from_v(x: torch.Tensor, v: torch.Tensor, alpha) -> torch.Tensor:
    """The clean latents a v-prediction implies at cumulative alpha ``alpha`` (a float or a broadcastable
    tensor): sqrt(a) * x_t - sqrt(1 - a) * v."""
    return alpha**0.5 * x - (1 - alpha) ** 0.5 * v


def ddim_transfer(x: torch.Tensor, v: torch.Tensor, alpha, alpha_prev) -> torch.Tensor:
    """The deterministic DDIM move (eta 0) of latents ``x`` at cumulative alpha ``alpha`` with v-prediction ``v``
    to cumulative alpha ``alpha_prev`` (floats or broadcastable tensors)."""
    x0 = x0_from_v(x, v, alpha)
    eps = alpha**0.5 * v + (1 - alpha) ** 0.5 * x
    return alpha_prev**0.5 * x0 + (1 - alpha_prev) ** 0.5 * eps


def ddim_step(x: torch.Tensor, v: torch.Tensor, t: int, schedule: Schedule) -> torch.Tensor:
    """One deterministic DDIM step (eta 0) from a v-prediction: x_t -> x_{t-stride}."""
    return ddim_transfer(x, v, schedule.alpha(t), schedule.alpha(schedule.previous(t)))


def predicted_x0(x: torch.Tensor, v: torch.Tensor, t: int, schedule: Schedule) -> torch.Tensor:
    """The clean-latent estimate of a v-prediction at timestep ``t`` (for previews)."""
    return x0_from_v(x, v, schedule.alpha(t))
