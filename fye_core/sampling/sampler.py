"""The FYE sampler, in the style of k-diffusion: a model function, a step function and loops over them.

``guided_v`` is the one place the networks are called. The loops differ only in how frames are split
into passes: the official cyclic context windows (or overlapping windows with fusion weights), which
average the v-predictions and take one DDIM step on the whole clip, and the official Gaussian temporal
tiling (``forward_long``), which steps every tile and fuses the results. Callbacks report progress and
may raise to cancel; they run between windows and after every step.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .schedule import Schedule, ddim_step, predicted_x0
from .windows import fuse_weights, gaussian_tile_offsets, gaussian_tile_weights

Callback = Callable[[dict], None]


@dataclass
class Conditioning:
    """Everything the UNet needs besides the latents, computed once per video.

    ``context``: (2, N, 768) unconditional then conditional cross-attention context, or (1, N, 768) for
    the conditional one alone when CFG is off; ``reference``: the 16 ReferenceNet features of the
    reference (1, h*w, C); ``landmarks``: guider features (1, 320, F, h, w) of every motion frame;
    ``masked_latents``: (1, 5, F, h, w) known latents and mask, for UNets trained with masked latents.
    """

    context: torch.Tensor
    reference: list[torch.Tensor] | None
    landmarks: torch.Tensor
    masked_latents: torch.Tensor | None = None


def guided_v(unet, x: torch.Tensor, t: int, cond: Conditioning, frames: Sequence[int],
             guidance: float) -> torch.Tensor:
    """The guided v-prediction for latents ``x`` (1, 4, len(frames), h, w) of the given motion frames.

    CFG batches [uncond, cond]; the unconditional item has zero CLIP tokens and ignores the reference
    (official semantics); both see the landmark features.
    """
    frames = list(frames)
    landmarks = cond.landmarks[:, :, frames]
    masked = None if cond.masked_latents is None else cond.masked_latents[:, :, frames]
    if guidance <= 1:
        return unet(x, t, cond.context[-1:], landmarks, cond.reference, masked_latents=masked)
    uncond, conditional = unet(torch.cat([x, x]), t, cond.context, torch.cat([landmarks, landmarks]),
                               cond.reference, plain_items=1,
                               masked_latents=None if masked is None else torch.cat([masked, masked])).chunk(2)
    return uncond + guidance * (conditional - uncond)


def sample_windows(unet, x: torch.Tensor, cond: Conditioning, schedule: Schedule, windows: list[list[int]],
                   guidance: float = 3.5, fuse: str = "flat", callback: Callback | None = None) -> torch.Tensor:
    """DDIM over the whole clip; each step averages the guided v of every window (weighted by ``fuse``)."""
    num_frames = x.shape[2]
    for step, t in enumerate(schedule.timesteps):
        v = torch.zeros_like(x)
        weight = torch.zeros(num_frames, dtype=x.dtype, device=x.device)
        for index, frames in enumerate(windows):
            w = fuse_weights(len(frames), fuse).to(x)
            v[:, :, frames] += guided_v(unet, x[:, :, frames], t, cond, frames, guidance) * w[:, None, None]
            weight[frames] += w
            if callback is not None:
                callback({"event": "window", "step": step, "steps": len(schedule.timesteps), "window": index,
                          "windows": len(windows)})
        v = v / weight[:, None, None]
        denoised = predicted_x0(x, v, t, schedule)
        x = ddim_step(x, v, t, schedule)
        if callback is not None:
            callback({"event": "step", "step": step, "steps": len(schedule.timesteps), "x": x, "denoised": denoised})
    return x


def sample_gaussian_tiles(unet, x: torch.Tensor, cond: Conditioning, schedule: Schedule, tile: int, overlap: int,
                          guidance: float = 3.5, callback: Callback | None = None) -> torch.Tensor:
    """The official ``forward_long``: every tile takes its own DDIM step; the stepped tiles are fused
    with Gaussian weights."""
    num_frames = x.shape[2]
    length = min(tile, num_frames)
    offsets = gaussian_tile_offsets(num_frames, length, overlap)
    weights = gaussian_tile_weights(length).to(x)
    for step, t in enumerate(schedule.timesteps):
        fused = torch.zeros_like(x)
        total = torch.zeros(num_frames, dtype=x.dtype, device=x.device)
        for index, offset in enumerate(offsets):
            frames = list(range(offset, offset + length))
            v = guided_v(unet, x[:, :, frames], t, cond, frames, guidance)
            fused[:, :, frames] += ddim_step(x[:, :, frames], v, t, schedule) * weights[:, None, None]
            total[frames] += weights
            if callback is not None:
                callback({"event": "window", "step": step, "steps": len(schedule.timesteps), "window": index,
                          "windows": len(offsets)})
        x = fused / total[:, None, None]
        if callback is not None:
            callback({"event": "step", "step": step, "steps": len(schedule.timesteps), "x": x, "denoised": x})
    return x
