"""HunyuanPortrait's sampler, in the style of k-diffusion: small functions over tensors and one loop.

``branch_v`` is the one place the UNet is called: one batch of the three official branches (uncond, drop,
cond), which ``guided_v`` combines with the appearance and the motion guidance scale of the step.
``sample_windows`` is the released long-video loop (spec §2.6): at every Euler step the clip is covered by
circular windows, shifted further each step; every window takes the step from the same latents and the
stepped windows are averaged per frame (``index_add_``, so a frame a short clip repeats inside a window counts
each time). Latents are SVD's layout, (1, frames, 4, h, w). The callback reports every window and every step;
raising from it cancels.

Two savings, off by default (the defaults are the released sampler, bit for bit):

- a guidance interval: the three branches run only on the steps whose position step / steps lies in
  ``cfg_interval`` (the rule of ``fye_core.sampling.Guidance``); on the others the ``cond`` branch alone gives v,
  plus, with ``cfg_reuse``, the guided-minus-cond difference each frame had on the last guided step (averaged
  over the windows that covered it, and kept for the whole clip frame by frame, as the windows cover other frames
  from step to step);
- the cross-step feature cache of ``fye_core.sampling.cache`` (DeepCache's split, TaylorSeer's forecast). A
  window's deep features are forecast only from that window's own earlier values (its cache context is named
  by its frames), so it pays off with fixed windows (``shift_offset`` 0, or a multiple of the window); with the
  released shifting windows a window's frames rarely come back and nearly every call is computed whole.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ..sampling.cache import CachePlan, FeatureCache, feature_cache
from ..sampling.sampler import FULL_RUN, in_interval
from .loader import HunyuanModels
from .models import CFG_BRANCHES, HunyuanUNet
from .windows import step_windows

Callback = Callable[[dict], None]

log = logging.getLogger(__name__)


@dataclass
class HunyuanConditioning:
    """Everything the UNet needs besides the latents, computed once per video.

    ``image_tokens`` (1, N, C): the reference's appearance tokens, the same for every frame;
    ``motion_tokens`` (1, L, N, C): one set per sampled frame (fade pads included); ``cond_latent``
    (1, 4, h, w): the reference's VAE mode, unscaled; ``pose_feature`` (1, 320, h, w): the constant pose
    map's feature; ``time_ids`` (1, 3): SVD's micro-conditions.
    """

    image_tokens: torch.Tensor
    motion_tokens: torch.Tensor
    cond_latent: torch.Tensor
    pose_feature: torch.Tensor | None
    time_ids: torch.Tensor


def karras_schedule(steps: int, strength: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The sigmas (K + 1, ending with 0) and UNet timesteps (K,) of the steps run: SVD-xt's Karras schedule of
    ``steps`` steps, of which the last ``int(steps * strength)`` (img2img strength; 1 runs them all)."""
    scheduler = HunyuanModels.new_scheduler()
    scheduler.set_timesteps(steps)
    start = steps - min(int(steps * strength), steps)
    return scheduler.sigmas[start:], scheduler.timesteps[start:]


def guidance_scales(first: float, last: float, steps: int) -> torch.Tensor:
    """A guidance scale per step, linear from ``first`` to ``last`` (the official min/max guidance)."""
    return torch.linspace(first, last, steps)


def noisy_start(reference_latents: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The first latents (1, L, 4, h, w): the reference's latents (1, 4, h, w) in every frame, noised to
    ``sigma`` (the official img2img start; at the full strength's sigma 700 it is practically pure noise)."""
    return reference_latents[:, None] + noise * sigma


def model_input(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The UNet's input scaling: x / sqrt(sigma^2 + 1)."""
    return x / ((sigma**2 + 1) ** 0.5)


def denoised_from_v(x: torch.Tensor, v: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The clean latents a v-prediction implies at noise level ``sigma``."""
    return v * (-sigma / (sigma**2 + 1) ** 0.5) + x / (sigma**2 + 1)


def euler_step(x: torch.Tensor, v: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    """One Euler step of the probability-flow ODE from ``sigma`` to ``sigma_next`` (no churn: deterministic)."""
    derivative = (x - denoised_from_v(x, v, sigma)) / sigma
    return x + derivative * (sigma_next - sigma)


def branch_v(unet: HunyuanUNet, x: torch.Tensor, sigma: torch.Tensor, timestep: torch.Tensor,
             cond: HunyuanConditioning, frames: torch.Tensor,
             branches: Sequence[str] = CFG_BRANCHES) -> tuple[torch.Tensor, ...]:
    """The v-predictions (1, F, 4, h, w) of ``branches`` (some of ``CFG_BRANCHES``, in that order) for latents
    ``x`` of the sampled ``frames`` (F,): the one place the UNet is called."""
    return unet.predict_branches(model_input(x, sigma), timestep, cond.cond_latent, cond.image_tokens,
                                 cond.motion_tokens[:, frames], cond.time_ids, cond.pose_feature,
                                 branches).to(x.dtype)[:, None].unbind(0)


def combine(uncond: torch.Tensor, drop: torch.Tensor, conditional: torch.Tensor, appearance: float,
            motion: float) -> torch.Tensor:
    """v = v_uncond + appearance * (v_drop - v_uncond) + motion * (v_cond - v_drop): the drop branch adds the
    reference (image tokens and condition latents) to nothing, the cond branch adds the motion tokens."""
    return uncond + appearance * (drop - uncond) + motion * (conditional - drop)


def guided_v(unet: HunyuanUNet, x: torch.Tensor, sigma: torch.Tensor, timestep: torch.Tensor,
             cond: HunyuanConditioning, frames: torch.Tensor, appearance: float, motion: float) -> torch.Tensor:
    """The official guided v-prediction (1, F, 4, h, w) for latents ``x`` of the sampled ``frames`` (F,)
    (``combine`` of the three branches)."""
    return combine(*branch_v(unet, x, sigma, timestep, cond, frames), appearance, motion)


def fixed_windows(window: int, shift_offset: int) -> bool:
    """Whether the windows cover the same frames at every step (no shift, or a whole window's)."""
    return shift_offset % window == 0


@contextmanager
def _cache_call(cache: FeatureCache | None, frames: Sequence[int], branches: tuple[str, ...],
                step: int) -> Iterator[bool]:
    """Around one UNet call: the cache context of the window named by its frames (so a window is only ever
    forecast from its own history); yields whether the call runs only the outer levels."""
    if cache is None:
        yield False
        return
    with cache.at(",".join(map(str, frames)), branches, step) as partial:
        yield partial


def sample_windows(unet: HunyuanUNet, x: torch.Tensor, cond: HunyuanConditioning, sigmas: torch.Tensor,
                   timesteps: torch.Tensor, appearance: Sequence[float], motion: Sequence[float],
                   window: int = 25, overlap: int = 3, shift_offset: int = 3,
                   callback: Callback | None = None, *, cfg_interval: tuple[float, float] = FULL_RUN,
                   cfg_reuse: bool = False, cache: CachePlan | None = None, batched: bool = True) -> torch.Tensor:
    """Euler over the whole clip ``x`` (1, L, 4, h, w) with the released circular, shifting windows.

    ``sigmas`` (K + 1,), ``timesteps`` (K,): the steps run (``karras_schedule``); ``appearance``, ``motion``:
    a guidance scale per step. ``cfg_interval``, ``cfg_reuse``, ``cache``: the savings of the module docstring
    (the defaults: none). ``batched``: the branches in one UNet batch (released), or one after the other (the
    low-memory mode: a third of the activations, the same v). The callback gets ``{"event": "window", step,
    steps, window, windows, frames, v, stepped, branches, partial}`` after every window (``branches``: those the
    UNet ran; ``partial``: whether it ran only the outer levels of the cached UNet, of the last call) and
    ``{"event": "step", step, steps, x, denoised}`` after every step.
    """
    num_frames, steps = x.shape[1], len(timesteps)
    plan = cache or CachePlan()
    if plan.enabled and not fixed_windows(window, shift_offset):
        log.warning("HunyuanPortrait feature cache: the windows shift every step (shift offset %d), so a window's "
                    "frames rarely come back and nearly every UNet call is computed whole; shift offset 0 lets the "
                    "cache forecast", shift_offset)
    difference = None  # guided - cond per frame (1, L, 4, h, w), of the last guided step, with cfg_reuse
    with feature_cache(unet, plan, steps) as features:  # None when the plan is off
        for step in range(steps):
            sigma, sigma_next = sigmas[step].to(x), sigmas[step + 1].to(x)
            positions = step_windows(num_frames, step, window, overlap, shift_offset) % num_frames
            windows = torch.from_numpy(positions)
            guided = in_interval(step, steps, cfg_interval)
            branches = CFG_BRANCHES if guided else ("cond",)
            stepped_sum, denoised_sum = torch.zeros_like(x), torch.zeros_like(x)
            difference_sum = torch.zeros_like(x) if guided and cfg_reuse else None
            count = torch.zeros(num_frames, dtype=x.dtype, device=x.device)
            for index, frames in enumerate(windows.to(x.device)):
                latents = x[:, frames]
                outputs = ()
                for group in [branches] if batched else [(branch,) for branch in branches]:
                    with _cache_call(features, positions[index].tolist(), group, step) as partial:
                        outputs += branch_v(unet, latents, sigma, timesteps[step], cond, frames, group)
                if guided:
                    v = combine(*outputs, float(appearance[step]), float(motion[step]))
                    if difference_sum is not None:
                        difference_sum.index_add_(1, frames, v - outputs[-1])
                else:
                    v = outputs[0] if difference is None else outputs[0] + difference[:, frames]
                stepped = euler_step(latents, v, sigma, sigma_next)
                stepped_sum.index_add_(1, frames, stepped)
                denoised_sum.index_add_(1, frames, denoised_from_v(latents, v, sigma))
                count.index_add_(0, frames, torch.ones_like(frames, dtype=x.dtype))
                if callback is not None:
                    callback({"event": "window", "step": step, "steps": steps, "window": index,
                              "windows": len(windows), "frames": frames, "v": v, "stepped": stepped,
                              "branches": branches, "partial": partial})
            x = stepped_sum / count[:, None, None, None]
            if difference_sum is not None:
                difference = difference_sum / count[:, None, None, None]
            if callback is not None:
                callback({"event": "step", "step": step, "steps": steps, "x": x,
                          "denoised": denoised_sum / count[:, None, None, None]})
    return x
