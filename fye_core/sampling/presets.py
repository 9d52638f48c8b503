"""Speed presets: which solver, how many steps, where guidance runs and how the feature cache skips.

``official`` is the official sampler (30 DDIM steps, guidance on every step, no cache); ``fast`` and
``fastest`` trade a measured amount of fidelity to it for time (``bench/speed.py`` measures both on the
test model trained here). Every field can be overridden on its own.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..errors import FYEInputError
from .cache import CachePlan
from .sampler import FULL_RUN, check_interval
from .solvers import SOLVERS


@dataclass(frozen=True)
class SpeedSettings:
    """``solver`` (``SOLVERS``) and ``steps``; ``cfg_interval``: the part of the run (fractions of the steps)
    whose steps run the unconditional pass; ``cfg_reuse``: outside it, keep guiding with the last guidance
    difference instead of dropping guidance; ``cache``: the cross-step feature cache."""

    solver: str = "ddim"
    steps: int = 30
    cfg_interval: tuple[float, float] = FULL_RUN
    cfg_reuse: bool = False
    cache: CachePlan = field(default_factory=CachePlan)

    def __post_init__(self):
        if self.solver not in SOLVERS:
            raise FYEInputError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        check_interval(self.cfg_interval)


PRESETS = {
    "official": SpeedSettings(),
    # measured on the test model (bench/speed.py): a few-step solver and the feature cache cost little, UniPC a
    # little less than DPM-Solver++ 2M and Euler; skipping the unconditional pass on half the steps costs the most
    # (about 33 dB), so neither preset does. fastest takes 3 steps, not 4: the VAE decode and the conditioning
    # stay whole, so 4 steps (8 evaluations) were under 6x end to end on the full-size networks
    "fast": SpeedSettings(solver="unipc", steps=8, cache=CachePlan(interval=2, order=1, depth=1, warmup=2)),
    "fastest": SpeedSettings(solver="unipc", steps=3),
}
CACHE_FIELDS = ("interval", "order", "depth", "warmup")


def speed_settings(preset: str = "official", **overrides) -> SpeedSettings:
    """The preset's settings with the given fields replaced (None leaves a field as the preset has it);
    ``cache_interval``, ``cache_order``, ``cache_depth``, ``cache_warmup`` override the cache plan."""
    if preset not in PRESETS:
        raise FYEInputError(f"preset must be one of {tuple(PRESETS)}, got {preset!r}")
    settings = PRESETS[preset]
    cache = {name: overrides.pop(f"cache_{name}") for name in CACHE_FIELDS
             if overrides.get(f"cache_{name}") is not None}
    unknown = set(overrides) - {"solver", "steps", "cfg_interval", "cfg_reuse"} - {f"cache_{n}" for n in CACHE_FIELDS}
    if unknown:
        raise FYEInputError(f"unknown speed settings {sorted(unknown)}")
    chosen = {name: value for name, value in overrides.items() if value is not None and not name.startswith("cache_")}
    if "cfg_interval" in chosen:
        chosen["cfg_interval"] = tuple(chosen["cfg_interval"])
    return replace(settings, **chosen, cache=replace(settings.cache, **cache))


def describe_speed(preset: str, settings: SpeedSettings) -> str:
    """One line for logs: the preset and what it runs."""
    parts = [f"{settings.solver} {settings.steps} steps"]
    if settings.cfg_interval != FULL_RUN:
        parts.append(f"uncond pass in {settings.cfg_interval[0]:g}-{settings.cfg_interval[1]:g} of the run"
                     + (" (difference reused after)" if settings.cfg_reuse else ""))
    if settings.cache.enabled:
        parts.append(settings.cache.describe())
    return f"preset {preset}: " + ", ".join(parts)


def describe_presets() -> str:
    """What every preset runs, for help texts and tooltips."""
    return "; ".join(describe_speed(name, settings).removeprefix("preset ") for name, settings in PRESETS.items())
