"""Latent consistency distillation (LCM, Luo et al. 2023) of a trained FYE into a few-step student.

The teacher is the trained FYE, frozen. The student is the same UNet with a LoRA (peft) on its attention, feed-
forward and residual layers: with the adapter off it is the teacher, so one UNet serves both. Each step draws a
timestep t from the skipping schedule of ``teacher_steps`` (every k = 1000 / teacher_steps-th), noises the clip's
latents to t, and lets the teacher take guided DDIM steps to t - k (one, as LCM, or ``teacher_substeps``: a more
exact target for a coarser skipping schedule, so a shorter chain of targets). The student's consistency output at
t must equal the target network's at t - k, where the target is an exponential moving average of the student's
adapter (``target_ema_decay``): the consistency property f(x_t, t) = f(x_{t-k}, t - k) along the teacher's guided
trajectory, anchored at t = 0 by the boundary scalings of diffusers' LCM scheduler (the ones the consistency
sampler uses).

Guidance is folded in at one fixed scale (``distill_guidance``, the official 3.5) rather than a guidance
embedding: Follow-Your-Emoji is run at one scale, a fixed scale needs no new input layer (so the student stays a
LoRA over the teacher's own architecture and loads anywhere the teacher does), and it halves the student's work at
sampling, which runs the conditional pass alone. The scale is recorded in the student's file.

The facial fine-grained weighting (``ffg_weight``) adds the distance inside the expression and face masks, as
L_FFG adds it to L_LDM.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from ..models import FYEModels
from ..models.student import ADAPTER
from ..sampling.schedule import ddim_transfer, x0_from_v
from ..sampling.solvers import consistency_scheduler


def student_parameters(unet: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of the student's adapter, in a fixed order."""
    return [(name, parameter) for name, parameter in unet.named_parameters() if f".{ADAPTER}." in name
            and "lora_" in name]


@contextlib.contextmanager
def teacher(unet: nn.Module) -> Iterator[None]:
    """The teacher: the UNet with the student's adapter off."""
    unet.disable_adapters()
    try:
        yield
    finally:
        unet.enable_adapters()


@contextlib.contextmanager
def swapped(parameters: list[nn.Parameter], values: list[torch.Tensor]) -> Iterator[None]:
    """The adapter holding ``values`` (the target network) instead of its own weights, inside the block."""
    kept = [parameter.detach().clone() for parameter in parameters]
    with torch.no_grad():
        torch._foreach_copy_([p.data for p in parameters], values)
    try:
        yield
    finally:
        with torch.no_grad():
            torch._foreach_copy_([p.data for p in parameters], kept)


def update_target(target: list[torch.Tensor], parameters: list[nn.Parameter], decay: float) -> None:
    """target <- decay * target + (1 - decay) * student."""
    with torch.no_grad():
        torch._foreach_lerp_(target, [p.detach() for p in parameters], 1.0 - decay)


def skipping_timesteps(teacher_steps: int) -> torch.Tensor:
    """The timesteps a student is distilled at: k - 1, 2k - 1, ..., 999 (LCM's skipping schedule)."""
    stride = 1000 // teacher_steps
    return torch.arange(1, teacher_steps + 1) * stride - 1


def consistency_output(x: torch.Tensor, v: torch.Tensor, timesteps: torch.Tensor, alphas: torch.Tensor,
                       scheduler) -> torch.Tensor:
    """f(x_t, t) = c_skip(t) x_t + c_out(t) x0(x_t, v): the consistency function of diffusers' LCM scheduler,
    per batch item (``timesteps`` (B,), ``alphas`` (B, 1, 1, 1, 1) the cumulative alphas there)."""
    scalings = [scheduler.get_scalings_for_boundary_condition_discrete(int(t)) for t in timesteps]
    c_skip, c_out = (torch.tensor(values, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1, 1)
                     for values in zip(*scalings, strict=True))
    return c_skip * x + c_out * x0_from_v(x, v, alphas)


def huber(a: torch.Tensor, b: torch.Tensor, c: float) -> torch.Tensor:
    """The pseudo-Huber distance per element, sqrt((a - b)^2 + c^2) - c (LCM's; 0 = plain squared error)."""
    if c == 0:
        return (a - b).pow(2)
    return ((a - b).pow(2) + c * c).sqrt() - c


class DistillationNetworks(nn.Module):
    """The student and its frozen teacher as one module (what accelerate wraps); forward gives the loss terms of a
    micro-batch: ``consistency``, ``ffg`` (the distance in the face masks) and ``total``."""

    def __init__(self, models: FYEModels, target: list[torch.Tensor], guidance: float, teacher_steps: int,
                 ffg_weight: float, huber_c: float, alphas_cumprod: torch.Tensor, teacher_substeps: int = 1):
        super().__init__()
        self.guider, self.referencenet, self.unet = models.guider, models.referencenet, models.unet
        self.models, self.target = models, target
        self.guidance, self.ffg_weight, self.huber_c = guidance, ffg_weight, huber_c
        self.stride, self.substeps = 1000 // teacher_steps, teacher_substeps
        self.scheduler = consistency_scheduler(teacher_steps)
        self.register_buffer("alphas_cumprod", alphas_cumprod.float(), persistent=False)
        self.adapter = [parameter for _, parameter in student_parameters(models.unet)]

    def _alpha(self, timesteps: torch.Tensor) -> torch.Tensor:
        alphas = torch.where(timesteps >= 0, self.alphas_cumprod[timesteps.clamp(min=0)], 1.0)
        return alphas.reshape(-1, 1, 1, 1, 1)

    def forward(self, inputs) -> dict[str, torch.Tensor]:
        items = len(inputs.latents)
        later = inputs.timesteps
        earlier = later - self.stride
        alpha, alpha_earlier = self._alpha(later), self._alpha(earlier)
        noisy = alpha.sqrt() * inputs.latents + (1 - alpha).sqrt() * inputs.noise
        with torch.no_grad():
            reference_contexts, contexts = self.models.encode_context(
                torch.cat([torch.zeros_like(inputs.clip_tokens), inputs.clip_tokens]))
            unconditional, context = contexts.chunk(2)
            reference_context = reference_contexts[items:]
            reference = self.referencenet.reference_features(inputs.reference_latents, reference_context, 0)
            features = self.guider(inputs.landmarks)
            stepped = noisy
            with teacher(self.unet):  # the skip from t to t - k in ``substeps`` guided DDIM steps
                for substep in range(self.substeps):
                    start = later - self.stride * substep // self.substeps
                    end = later - self.stride * (substep + 1) // self.substeps
                    v_plain, v_cond = self.unet(torch.cat([stepped, stepped]), torch.cat([start, start]),
                                                torch.cat([unconditional, context]), torch.cat([features, features]),
                                                reference, plain_items=items).chunk(2)
                    guided = v_plain + self.guidance * (v_cond - v_plain)
                    stepped = ddim_transfer(stepped, guided, self._alpha(start), self._alpha(end))
            with swapped(self.adapter, self.target):
                v_target = self.unet(stepped, earlier.clamp(min=0), context, features, reference)
            target = consistency_output(stepped, v_target, earlier.clamp(min=0), alpha_earlier, self.scheduler)
            target = torch.where((earlier >= 0).reshape(-1, 1, 1, 1, 1), target, stepped)
        v = self.unet(noisy, later, context, features, reference)
        predicted = consistency_output(noisy, v, later, alpha, self.scheduler)
        distance = huber(predicted.float(), target.float(), self.huber_c)
        masks = inputs.expression_mask + inputs.facial_mask
        consistency = distance.mean()
        ffg = (distance * masks).mean()
        return {"consistency": consistency, "ffg": ffg, "total": consistency + self.ffg_weight * ffg}
