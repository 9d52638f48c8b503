"""The paper's progressive long-video strategy (section 3.3): keyframes first, then the frames between
them, each stretch generated as its own clip with both ends fixed to the keyframes.

A clip that fits one pass of the motion modules is sampled directly; a longer one first gets keyframes
(at most one pass of them, including its fixed ends), and the stretches between them are handled the
same way, so any length works and memory follows the window, not the video. Ends are fixed by
concatenating the known latents and a mask to the UNet input for models trained with masked latents,
and otherwise by training-free temporal inpainting: before every step the known frames are replaced by
their keyframe latents diffused to that step's timestep, and after the last step by the keyframes
themselves.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
import torch

from .cache import CachePlan, feature_cache
from .sampler import Conditioning, Guidance, WindowedModel
from .solvers import Callback, Solver

KEYFRAME_CHOICES = ("even", "expression")


@dataclass
class KnownFrames:
    """Latents fixed in a clip: ``latents`` (B, 4, F, h, w), meaningful where ``mask`` is True, (F,) for
    every item or (B, F) per item."""

    latents: torch.Tensor
    mask: torch.Tensor

    def masked_latents(self) -> torch.Tensor:
        """The masked-latent UNet input (B, 5, F, h, w): known latents (zero elsewhere) and the mask."""
        batch, _, frames, height, width = self.latents.shape
        mask = self.mask.to(self.latents).reshape(-1, 1, frames, 1, 1).expand(batch, 1, frames, height, width)
        return torch.cat([self.latents * mask, mask], dim=1)


def sample_clip(unet, x: torch.Tensor, cond: Conditioning, solver: Solver, guidance: Guidance | float = 3.5,
                known: KnownFrames | None = None, callback: Callback | None = None,
                cache: CachePlan | None = None) -> torch.Tensor:
    """One clip that fits one pass, from noise ``x``; frames in ``known`` end equal to it."""
    frames = list(range(x.shape[2]))
    inpaint = known is not None and not unet.takes_masked_latents
    if known is not None and not inpaint:
        cond = replace(cond, masked_latents=known.masked_latents())
    if inpaint:
        mask = known.mask.to(x.device)[None, None, :, None, None]
        noise = x.clone()  # the known frames are diffused with the clip's own noise
    steps = len(solver.timesteps)
    x = solver.start(x)
    with feature_cache(unet, cache or CachePlan(), steps) as features:
        model = WindowedModel(unet, cond, [frames], steps, guidance, cache=features)
        for step, t in enumerate(solver.timesteps):
            if inpaint:
                x = torch.where(mask, solver.noised(known.latents, noise, step), x)
            v = model(solver.model_input(x, step), t, step)
            x, denoised = solver.step(x, v, step)
            if callback is not None:
                callback({"event": "step", "step": step, "steps": steps, "x": x, "denoised": denoised})
    if known is not None:
        x = torch.where(known.mask.to(x.device)[None, None, :, None, None], known.latents, x)
    return x


def _even_positions(length: int, count: int) -> np.ndarray:
    """``count`` indices into ``length`` items, evenly spaced, first and last included, no repeats."""
    return np.unique(np.round(np.linspace(0, length - 1, min(count, length))).astype(int))


def even_keyframes(frames: Sequence[int], count: int) -> list[int]:
    """``count`` frames of ``frames`` evenly spaced, first and last included."""
    return [frames[p] for p in _even_positions(len(frames), count)]


def expression_keyframes(frames: Sequence[int], count: int, window: int, expressiveness: np.ndarray) -> list[int]:
    """Like ``even_keyframes``, each inner keyframe moved to the most expressive frame near it
    (``expressiveness`` per driving frame); the gaps still fit one pass of ``window`` frames."""
    positions = _even_positions(len(frames), count)
    if len(positions) < 3:
        return [frames[p] for p in positions]
    spacing = math.ceil((len(frames) - 1) / (len(positions) - 1))
    reach = max(0, (window - 1 - spacing) // 2)
    chosen = [positions[0]]
    for p in positions[1:-1]:
        low, high = max(p - reach, chosen[-1] + 1), min(p + reach, len(frames) - 2)
        candidates = np.arange(low, high + 1)
        best = int(candidates[np.argmax(expressiveness[[frames[c] for c in candidates]])])
        chosen.append(best if expressiveness[frames[best]] > expressiveness[frames[p]] else p)
    chosen.append(positions[-1])
    return [frames[p] for p in chosen]


def keyframe_count(num_frames: int, window: int) -> int:
    """The fewest keyframes, first and last included, whose gaps fit one pass, and at most one pass."""
    return min(window, math.ceil((num_frames - 1) / (window - 1)) + 1)


class ClipStore(Protocol):
    """Where finished clips are kept so that an interrupted run can resume (``get`` None when absent)."""

    def get(self, frames: Sequence[int]) -> torch.Tensor | None: ...

    def put(self, frames: Sequence[int], latents: torch.Tensor) -> None: ...


@dataclass
class Progressive:
    """One progressive run. ``solver()``: a fresh solver for a clip; ``conditioning(frames)``: the
    Conditioning of those motion frames (landmark features for them alone); ``noise(frames)``: their
    initial noise (1, 4, len, h, w); ``keyframes(frames, count)``: which of ``frames`` become keyframes."""

    unet: torch.nn.Module
    solver: Callable[[], Solver]
    window: int
    guidance: Guidance | float
    conditioning: Callable[[list[int]], Conditioning]
    noise: Callable[[list[int]], torch.Tensor]
    keyframes: Callable[[list[int], int], list[int]]
    store: ClipStore | None = None
    callback: Callback | None = None
    cache: CachePlan | None = None
    _total_steps: int = field(default=0, init=False, repr=False)
    _steps_done: int = field(default=0, init=False, repr=False)

    def clip(self, frames: list[int], known: dict[int, torch.Tensor]) -> torch.Tensor:
        """The latents (1, 4, len(frames), h, w) of ``frames`` sampled together, ends in ``known`` fixed."""
        x = self.noise(frames)
        stored = None if self.store is None else self.store.get(frames)
        if stored is not None:
            self._steps_done += self._steps_per_clip
            return stored.to(x)
        fixed = None
        if known:
            latents = torch.zeros_like(x)
            mask = torch.zeros(len(frames), dtype=torch.bool)
            for position, frame in enumerate(frames):
                if frame in known:
                    latents[:, :, position], mask[position] = known[frame], True
            fixed = KnownFrames(latents, mask)
        result = sample_clip(self.unet, x, self.conditioning(frames), self.solver(), self.guidance, fixed,
                             self._report(frames), self.cache)
        if self.store is not None:
            self.store.put(frames, result)
        return result

    def _report(self, frames: list[int]) -> Callback | None:
        """Step events numbered over the whole run, with the clip's frames."""
        if self.callback is None:
            return None
        first = self._steps_done

        def report(event: dict) -> None:
            self._steps_done = first + event["step"] + 1
            self.callback({**event, "step": self._steps_done - 1, "steps": self._total_steps, "frames": frames})

        return report

    @property
    def _steps_per_clip(self) -> int:
        return len(self.solver().timesteps)

    def clip_count(self, frames: list[int]) -> int:
        """How many clips ``sample`` samples for ``frames``."""
        if len(frames) <= self.window:
            return 1
        keys = self.keyframes(frames, keyframe_count(len(frames), self.window))
        return 1 + sum(self.clip_count(stretch) for stretch in _stretches(frames, keys))

    def sample(self, num_frames: int) -> Iterator[tuple[int, torch.Tensor]]:
        """Yields (frame, latent (1, 4, h, w)) for every frame of the video, in order."""
        self._total_steps = self.clip_count(list(range(num_frames))) * self._steps_per_clip
        self._steps_done = 0
        yield from self._run(list(range(num_frames)), {})

    def _run(self, frames: list[int], known: dict[int, torch.Tensor]) -> Iterator[tuple[int, torch.Tensor]]:
        if len(frames) <= self.window:
            latents = self.clip(frames, known)
            yield from ((frame, latents[:, :, i]) for i, frame in enumerate(frames))
            return
        keys = self.keyframes(frames, keyframe_count(len(frames), self.window))
        key_latents = self.clip(keys, known)
        fixed = {frame: key_latents[:, :, i] for i, frame in enumerate(keys)}
        stretches = _stretches(frames, keys)
        for index, stretch in enumerate(stretches):
            start, end = stretch[0], stretch[-1]
            for frame, latent in self._run(stretch, {start: fixed[start], end: fixed[end]}):
                if frame != end or index == len(stretches) - 1:  # each keyframe once: it also starts the next
                    yield frame, latent


def _stretches(frames: list[int], keys: list[int]) -> list[list[int]]:
    """The frames from each keyframe to the next, both included."""
    return [frames[frames.index(start):frames.index(end) + 1] for start, end in zip(keys, keys[1:], strict=False)]
