"""The FYE sampler, in the style of k-diffusion: a model function, solvers and loops over them.

``predictions`` is the one place the networks are called. ``WindowedModel`` is the model function of a
clip: the official cyclic context windows (or overlapping windows with fusion weights) each give a
guided v, averaged into one v of the whole clip, which any solver (``solvers``) steps; it also applies
the guidance plan and the feature cache. The official Gaussian temporal tiling (``forward_long``), which
steps every tile and fuses the stepped tiles, stays its own DDIM loop. Callbacks report progress and may
raise to cancel; they run between windows and after every step.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ..errors import FYEInputError
from .cache import CachePlan, FeatureCache, feature_cache
from .schedule import Schedule, ddim_step
from .solvers import Callback, DDIMSolver, Solver, sample
from .windows import fuse_weights, gaussian_tile_offsets, gaussian_tile_weights


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


FULL_RUN = (0.0, 1.0)  # a guidance interval covering every step


def check_interval(interval: tuple[float, float]) -> tuple[float, float]:
    """A guidance interval as a tuple; an error unless it is two fractions 0 <= start <= end <= 1."""
    interval = tuple(interval)
    if len(interval) != 2 or not 0 <= interval[0] <= interval[1] <= 1:
        raise FYEInputError(f"cfg_interval must be two fractions 0 <= start <= end <= 1, got {interval}")
    return interval


def in_interval(step: int, steps: int, interval: tuple[float, float]) -> bool:
    """Whether ``step`` of ``steps`` lies in ``interval`` [start, end) of the run (step / steps)."""
    return interval[0] <= step / steps < interval[1]


@dataclass(frozen=True)
class Guidance:
    """Classifier-free guidance over a run: ``scale`` (1 = off); the unconditional pass runs on the steps
    whose position in the run (step / steps) lies in ``interval``; outside it the conditional pass alone
    gives v, plus, with ``reuse``, ``scale - 1`` times the last guidance difference (cond - uncond) of the
    same window (FasterCache's CFG cache). ``batched``: both passes in one batch of two (the official way), or
    one after the other (the low-memory mode: half the activations, the same v)."""

    scale: float = 3.5
    interval: tuple[float, float] = FULL_RUN
    reuse: bool = False
    batched: bool = True

    def unconditional(self, step: int, steps: int) -> bool:
        """Whether ``step`` of ``steps`` runs the unconditional pass."""
        return self.scale > 1 and in_interval(step, steps, self.interval)


def single_prediction(unet, x: torch.Tensor, t: float, cond: Conditioning, frames: Sequence[int],
                      conditional: bool) -> torch.Tensor:
    """The conditional, or alone the unconditional, v-prediction for latents ``x`` (1, 4, len(frames), h, w)."""
    frames = list(frames)
    masked = None if cond.masked_latents is None else cond.masked_latents[:, :, frames]
    if conditional:
        return unet(x, t, cond.context[-1:], cond.landmarks[:, :, frames], cond.reference, masked_latents=masked)
    return unet(x, t, cond.context[:1], cond.landmarks[:, :, frames], None, masked_latents=masked)


def predictions(unet, x: torch.Tensor, t: float, cond: Conditioning, frames: Sequence[int],
                unconditional: bool, batched: bool = True) -> tuple[torch.Tensor | None, torch.Tensor]:
    """The unconditional (or None) and conditional v-predictions for latents ``x`` (1, 4, len(frames), h, w)
    of the given motion frames: the one place the UNet is called (``single_prediction`` one pass).

    Both passes go in one batch [uncond, cond] (or, not ``batched``, one after the other); the unconditional
    item has zero CLIP tokens and ignores the reference (official semantics); both see the landmark features.
    """
    if not unconditional:
        return None, single_prediction(unet, x, t, cond, frames, True)
    if not batched:
        return single_prediction(unet, x, t, cond, frames, False), single_prediction(unet, x, t, cond, frames, True)
    frames = list(frames)
    landmarks = cond.landmarks[:, :, frames]
    masked = None if cond.masked_latents is None else cond.masked_latents[:, :, frames]
    uncond, conditional = unet(torch.cat([x, x]), t, cond.context, torch.cat([landmarks, landmarks]),
                               cond.reference, plain_items=1,
                               masked_latents=None if masked is None else torch.cat([masked, masked])).chunk(2)
    return uncond, conditional


def guided_v(unet, x: torch.Tensor, t: float, cond: Conditioning, frames: Sequence[int],
             guidance: float, batched: bool = True) -> torch.Tensor:
    """The official guided v-prediction: uncond + guidance * (cond - uncond), the conditional one alone
    when ``guidance`` <= 1."""
    uncond, conditional = predictions(unet, x, t, cond, frames, guidance > 1, batched)
    return conditional if uncond is None else uncond + guidance * (conditional - uncond)


class WindowedModel:
    """The model function of a clip: at each step the guided v of every window, averaged with ``fuse``
    weights where windows overlap, so any solver steps the whole clip at once."""

    def __init__(self, unet, cond: Conditioning, windows: list[list[int]], steps: int,
                 guidance: Guidance | float = 3.5, fuse: str = "flat", cache: FeatureCache | None = None,
                 callback: Callback | None = None):
        self.unet, self.cond, self.windows, self.steps = unet, cond, windows, steps
        self.guidance = guidance if isinstance(guidance, Guidance) else Guidance(guidance)
        self.fuse, self.cache, self.callback = fuse, cache, callback
        self._differences: dict[int, torch.Tensor] = {}

    def window_v(self, x: torch.Tensor, t: float, step: int, index: int) -> torch.Tensor:
        frames, guidance = self.windows[index], self.guidance
        unconditional = guidance.unconditional(step, self.steps)
        if unconditional and not guidance.batched:  # each pass keeps its own cached features
            with self._cache_context(str(index), ("uncond",), step):
                uncond = single_prediction(self.unet, x, t, self.cond, frames, False)
            with self._cache_context(str(index), ("cond",), step):
                conditional = single_prediction(self.unet, x, t, self.cond, frames, True)
        else:
            items = ("uncond", "cond") if unconditional else ("cond",)
            with self._cache_context(str(index), items, step):
                uncond, conditional = predictions(self.unet, x, t, self.cond, frames, unconditional)
        if uncond is not None:
            if guidance.reuse:
                self._differences[index] = conditional - uncond
            return uncond + guidance.scale * (conditional - uncond)
        if guidance.reuse and index in self._differences:
            return conditional + (guidance.scale - 1) * self._differences[index]
        return conditional

    @contextmanager
    def _cache_context(self, window: str, items: tuple[str, ...], step: int) -> Iterator[None]:
        if self.cache is None:
            yield
            return
        with self.cache.at(window, items, step):
            yield

    def __call__(self, x: torch.Tensor, t: float, step: int) -> torch.Tensor:
        num_frames = x.shape[2]
        v = torch.zeros_like(x)
        weight = torch.zeros(num_frames, dtype=x.dtype, device=x.device)
        for index, frames in enumerate(self.windows):
            w = fuse_weights(len(frames), self.fuse).to(x)
            v[:, :, frames] += self.window_v(x[:, :, frames], t, step, index) * w[:, None, None]
            weight[frames] += w
            if self.callback is not None:
                self.callback({"event": "window", "step": step, "steps": self.steps, "window": index,
                               "windows": len(self.windows)})
        return v / weight[:, None, None]


def sample_windows(unet, x: torch.Tensor, cond: Conditioning, schedule: Schedule | Solver, windows: list[list[int]],
                   guidance: Guidance | float = 3.5, fuse: str = "flat", callback: Callback | None = None,
                   cache: CachePlan | None = None) -> torch.Tensor:
    """Solves the whole clip from noise ``x``; each step averages the guided v of every window (weighted by
    ``fuse``). ``schedule``: the official DDIM ``Schedule`` or any ``Solver``."""
    solver = DDIMSolver(schedule) if isinstance(schedule, Schedule) else schedule
    steps = len(solver.timesteps)
    with feature_cache(unet, cache or CachePlan(), steps) as features:
        model = WindowedModel(unet, cond, windows, steps, guidance, fuse, features, callback)
        return sample(model, solver.start(x), solver, callback)


def sample_gaussian_tiles(unet, x: torch.Tensor, cond: Conditioning, schedule: Schedule, tile: int, overlap: int,
                          guidance: float = 3.5, callback: Callback | None = None,
                          batched: bool = True) -> torch.Tensor:
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
            v = guided_v(unet, x[:, :, frames], t, cond, frames, guidance, batched)
            fused[:, :, frames] += ddim_step(x[:, :, frames], v, t, schedule) * weights[:, None, None]
            total[frames] += weights
            if callback is not None:
                callback({"event": "window", "step": step, "steps": len(schedule.timesteps), "window": index,
                          "windows": len(offsets)})
        x = fused / total[:, None, None]
        if callback is not None:
            callback({"event": "step", "step": step, "steps": len(schedule.timesteps), "x": x, "denoised": x})
    return x
