"""A cross-step feature cache for the denoising UNet: DeepCache's split, TaylorSeer's forecast.

The deep branch of the UNet (every level from ``depth`` down, the mid block, and the up blocks back to
that level) changes slowly from one step to the next. On full steps the whole UNet runs and the output
of the branch's last up block is recorded; on the steps between, only the outer levels run and the
branch's output is forecast by a Taylor expansion over the finite differences of its recorded values
(Follow-Your-Emoji-Faster's Taylor-interpolated cache, TaylorSeer's forecast).

Built on diffusers' hook machinery (``ModelHook``, ``HookRegistry``, ``StateManager`` with named cache
contexts, ``TaylorSeerState`` for the expansion). diffusers' own ``TaylorSeerCacheHook`` does not fit
as it is: it counts forward calls as steps, while our sampler calls the UNet once per context window per
step, with batches of two items (guided) or one (conditional only) as the guidance plan says; and it
holds flat tensor outputs, while the down blocks return (hidden states, residuals). Our hook takes the
step from the sampler, keeps one cache context per window and batch item, and flattens nested outputs.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from diffusers.hooks.hooks import CacheContext, HookRegistry, ModelHook, StateManager
from diffusers.hooks.taylorseer_cache import TaylorSeerState
from torch.utils._pytree import tree_flatten, tree_unflatten

from ..errors import FYEInputError

_HOOK = "fye_feature_cache"
LEVELS = 4  # SD-1.5 UNet levels (down/up blocks)


@dataclass(frozen=True)
class CachePlan:
    """``interval``: the whole UNet every ``interval`` steps (1 = no cache); ``order``: of the Taylor
    forecast (0 reuses the last value, DeepCache); ``depth``: the UNet level where the cached branch
    starts (1 = all but the outermost level); ``warmup``: first steps always computed whole. The last
    step is always whole."""

    interval: int = 1
    order: int = 1
    depth: int = 1
    warmup: int = 2

    def __post_init__(self):
        if self.interval < 1 or self.order < 0 or self.warmup < 0 or not 1 <= self.depth < LEVELS:
            raise FYEInputError(f"feature cache: interval >= 1, order >= 0, warmup >= 0 and depth 1..{LEVELS - 1}, "
                                f"got {self}")

    @property
    def enabled(self) -> bool:
        return self.interval > 1

    def describe(self) -> str:
        return f"feature cache every {self.interval} (order {self.order}, depth {self.depth}, warm-up {self.warmup})"

    def full(self, step: int, steps: int) -> bool:
        """Whether ``step`` of ``steps`` runs the whole UNet."""
        return (not self.enabled or step < self.warmup or step == steps - 1
                or (step - self.warmup) % self.interval == 0)


class _ForecastState(TaylorSeerState):
    def __init__(self, order: int, skip: bool):
        super().__init__(taylor_factors_dtype=torch.float32, max_order=order, is_inactive=skip)
        self.structure = None

    def reset(self) -> None:
        super().reset()
        self.structure = None


class _ForecastHook(ModelHook):
    """Runs its module on full steps (recording the output of every batch item) and forecasts the output
    on the others; a skipped module (whose output only feeds forecast ones) returns zeros of the recorded
    shapes. Items are recorded apart, so a conditional pass forecasts from the conditional half of the
    guided passes before it."""

    _is_stateful = True

    def __init__(self, plan: CachePlan, steps: int, skip: bool):
        super().__init__()
        self.plan, self.steps = plan, steps
        self.state_manager = StateManager(_ForecastState, init_kwargs={"order": plan.order, "skip": skip})
        self.call: tuple[str, tuple[str, ...], int] | None = None  # window, batch items, step

    def reset_state(self, module):
        self.state_manager.reset()
        return module

    def _item_states(self) -> list[_ForecastState]:
        window, items, step = self.call
        states = []
        for item in items:
            self.state_manager.set_context(CacheContext(f"{window}:{item}", step_index=step))
            states.append(self.state_manager.get_state())
            states[-1].current_step = step
        return states

    def new_forward(self, module, *args, **kwargs):
        states = self._item_states()
        if any(state.last_update_step is None for state in states) or self.plan.full(self.call[2], self.steps):
            output = self.fn_ref.original_forward(*args, **kwargs)
            flat, structure = tree_flatten(output)  # every tensor is (items * frames, ...)
            for index, state in enumerate(states):
                state.structure = structure
                state.update(tuple(tensor.chunk(len(states))[index] for tensor in flat))
            return output
        forecasts = [state.predict() for state in states]
        return tree_unflatten([torch.cat(parts) for parts in zip(*forecasts, strict=True)], states[0].structure)


def branch_modules(depth: int) -> tuple[list[str], str]:
    """The UNet modules the cached branch skips, and the one whose output is forecast."""
    skipped = [f"down_blocks.{level}" for level in range(depth, LEVELS)] + ["mid_block"]
    skipped += [f"up_blocks.{level}" for level in range(LEVELS - 1 - depth)]
    return skipped, f"up_blocks.{LEVELS - 1 - depth}"


class FeatureCache:
    """The cache on one UNet for one run of ``steps`` steps; ``at(window, items, step)`` around every UNet
    call (each window and batch item keeps its own history)."""

    def __init__(self, unet: torch.nn.Module, plan: CachePlan, steps: int):
        self.plan, self.steps = plan, steps
        skipped, forecast = branch_modules(plan.depth)
        modules = dict(unet.named_modules())
        self.hooks = {name: _ForecastHook(plan, steps, skip=name != forecast) for name in [*skipped, forecast]}
        for name, hook in self.hooks.items():
            HookRegistry.check_if_exists_or_initialize(modules[name]).register_hook(hook, _HOOK)
        self._modules = {name: modules[name] for name in self.hooks}
        self._seen: set[str] = set()

    @contextmanager
    def at(self, window: str, items: tuple[str, ...], step: int) -> Iterator[bool]:
        """Around one UNet call of a window with a batch of ``items`` (e.g. ("uncond", "cond")); yields
        whether the call runs only the outer levels."""
        for hook in self.hooks.values():
            hook.call = (window, items, step)
        names = {f"{window}:{item}" for item in items}
        partial = names <= self._seen and not self.plan.full(step, self.steps)
        self._seen |= names
        try:
            yield partial
        finally:
            for hook in self.hooks.values():
                hook.call = None
                hook.state_manager.set_context(None)

    def remove(self) -> None:
        for module in self._modules.values():
            HookRegistry.check_if_exists_or_initialize(module).remove_hook(_HOOK, recurse=False)


@contextmanager
def feature_cache(unet: torch.nn.Module, plan: CachePlan, steps: int) -> Iterator[FeatureCache | None]:
    """The cache on ``unet`` for one run (None when the plan is off); removed afterwards."""
    if not plan.enabled:
        yield None
        return
    cache = FeatureCache(unet, plan, steps)
    try:
        yield cache
    finally:
        cache.remove()
