"""Latent consistency distillation (LCM, Luo et al. 2023) of a trained FYE into a few-step student, in its
multistep form (Multistep Consistency Models, Heek et al. 2024).

The teacher is the trained FYE, frozen. The student is the same UNet with a LoRA (peft) on every linear and
convolution layer (``LORA_TARGETS``): with the adapter off it is the teacher, so one UNet serves both. Each step draws a
timestep t from the skipping schedule of ``teacher_steps`` (every k = 1000 / teacher_steps-th), noises the clip's
latents to t, and lets the teacher take guided DDIM steps to t - k (one, as LCM, or ``teacher_substeps``: a more
exact target for a coarser skipping schedule, so a shorter chain of targets).

The trajectory is cut into the ``distill_steps`` segments the consistency sampler jumps over (999 -> 759 -> 499
-> 259 -> clean for 4 steps of a 50-step schedule; ``segment_ends``), and consistency holds within a segment: from
x_t the student's DDIM jump to its segment's end s must land where the target network's jump from the teacher's
x_{t-k} lands (f(x_t, t) = f(x_{t-k}, t - k), f the jump to s), and where t - k is s itself the teacher's x_s is
the target. The target network is an exponential moving average of the student's adapter
(``target_ema_decay``). One segment (``distill_steps`` 1) is LCM's consistency to the clean latents; more
segments give the student shorter, straighter stretches of the teacher's trajectory to reproduce, each exactly
the jump it takes when sampling. With ``teacher_steps`` = ``distill_steps`` every draw is a segment's start, the
teacher's ``teacher_substeps`` guided steps cover the whole segment and no target network is needed: the student
regresses the teacher's guided trajectory at its own sampling points.

The sampling points may be chosen (``distill_timesteps``) instead of LCM's even spacing: at 4 steps the test model's
trajectory bends most below t = 249, the last jump of the even schedule, and its teacher's own guided DDIM gains
4.5 dB from ending its last step at 99 instead (``bench/distill.py``). With one teacher skip per segment the chosen
timesteps are the skipping schedule itself; otherwise they must lie on it.

The states the student learns at are the clip's latents noised to t by default. With ``from_noise`` they are its
teacher's own trajectory from pure noise down to t, what the student meets when sampling (this teacher's outputs
are blurrier than real frames, so noised frames are not what the later segments see); with ``whole_trajectory``
as well, each draw runs that trajectory once from the noise to the clean latents and the student learns at every
skip on it, in one batch: at 4 segments one teacher skip per state learnt, against 2.5 on average when each draw
follows the trajectory down to its own t alone.

Guidance is folded in at one fixed scale (``distill_guidance``, the official 3.5) rather than a guidance
embedding: Follow-Your-Emoji is run at one scale, a fixed scale needs no new input layer (so the student stays a
LoRA over the teacher's own architecture and loads anywhere the teacher does), and it halves the student's work at
sampling, which runs the conditional pass alone. The scale is recorded in the student's file.

The facial fine-grained weighting (``ffg_weight``) adds the distance inside the expression and face masks, as
L_FFG adds it to L_LDM.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from ..models import FYEModels
from ..models.student import ADAPTER
from ..sampling.schedule import ddim_transfer
from ..sampling.solvers import ConsistencySolver

TOP_TIMESTEP = 999  # zero terminal SNR: the latents there are the noise itself


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


def skipping_timesteps(teacher_steps: int, timesteps: Sequence[int] = ()) -> torch.Tensor:
    """The timesteps a student is distilled at, ascending: k - 1, 2k - 1, ..., 999 (LCM's skipping schedule), or
    the student's own ``timesteps`` where there are ``teacher_steps`` of them (one teacher skip per segment)."""
    if len(timesteps) == teacher_steps:
        return torch.tensor(sorted(timesteps))
    stride = 1000 // teacher_steps
    return torch.arange(1, teacher_steps + 1) * stride - 1


def segment_ends(distill_steps: int, teacher_steps: int, timesteps: Sequence[int] = ()) -> torch.Tensor:
    """The ends of the student's segments, ascending: the timesteps its sampler steps to (-1: the clean latents).
    They are the consistency sampler's own timesteps, so a student is distilled for exactly the jumps it takes."""
    solver = ConsistencySolver(distill_steps, teacher_steps, timesteps=timesteps)
    return torch.tensor([-1, *sorted(solver.timesteps)[:-1]])


def huber(a: torch.Tensor, b: torch.Tensor, c: float) -> torch.Tensor:
    """The pseudo-Huber distance per element, sqrt((a - b)^2 + c^2) - c (LCM's; 0 = plain squared error)."""
    if c == 0:
        return (a - b).pow(2)
    return ((a - b).pow(2) + c * c).sqrt() - c


class DistillationNetworks(nn.Module):
    """The student and its frozen teacher as one module (what accelerate wraps); forward gives the loss terms of a
    micro-batch: ``consistency``, ``ffg`` (the distance in the face masks) and ``total``."""

    def __init__(self, models: FYEModels, target: list[torch.Tensor], guidance: float, distill_steps: int,
                 teacher_steps: int, ffg_weight: float, huber_c: float, alphas_cumprod: torch.Tensor,
                 teacher_substeps: int = 1, from_noise: bool = False, timesteps: Sequence[int] = (),
                 whole_trajectory: bool = False):
        super().__init__()
        self.guider, self.referencenet, self.unet = models.guider, models.referencenet, models.unet
        self.models, self.target = models, target
        self.guidance, self.ffg_weight, self.huber_c = guidance, ffg_weight, huber_c
        self.substeps, self.from_noise, self.whole_trajectory = teacher_substeps, from_noise, whole_trajectory
        self.register_buffer("skipping", skipping_timesteps(teacher_steps, timesteps), persistent=False)
        self.register_buffer("ends", segment_ends(distill_steps, teacher_steps, timesteps), persistent=False)
        self.register_buffer("alphas_cumprod", alphas_cumprod.float(), persistent=False)
        self.adapter = [parameter for _, parameter in student_parameters(models.unet)]

    def _alpha(self, timesteps: torch.Tensor) -> torch.Tensor:
        alphas = torch.where(timesteps >= 0, self.alphas_cumprod[timesteps.clamp(min=0)], 1.0)
        return alphas.reshape(-1, 1, 1, 1, 1)

    def _skipped_to(self, timesteps: torch.Tensor) -> torch.Tensor:
        """Where the teacher's skip from each of ``timesteps`` (on the skipping schedule) ends: the schedule's next
        timestep below (-1: the clean latents)."""
        below = torch.searchsorted(self.skipping, timesteps) - 1
        return torch.where(below >= 0, self.skipping[below.clamp(min=0)], -1)

    def _teacher_skip(self, x: torch.Tensor, start: torch.Tensor, stop: torch.Tensor, contexts, features,
                      reference) -> torch.Tensor:
        """The teacher's guided DDIM steps (``substeps`` of them) from ``start`` to ``stop`` per item; an item whose
        ``stop`` is its ``start`` stays where it is."""
        items = len(x)
        unconditional, context = contexts
        with teacher(self.unet):
            for substep in range(self.substeps):
                begin = start - (start - stop) * substep // self.substeps
                end = start - (start - stop) * (substep + 1) // self.substeps
                v_plain, v_cond = self.unet(torch.cat([x, x]), torch.cat([begin, begin]),
                                            torch.cat([unconditional, context]), torch.cat([features, features]),
                                            reference, plain_items=items).chunk(2)
                guided = v_plain + self.guidance * (v_cond - v_plain)
                x = ddim_transfer(x, guided, self._alpha(begin), self._alpha(end))
        return x

    def _trajectory_states(self, noise: torch.Tensor, conditions) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every skip of the teacher's guided trajectory from ``noise`` to the clean latents, as one batch: the
        states at the skipping timesteps (descending, each ``len(noise)`` items), their timesteps and where the
        teacher's skip from each lands."""
        items = len(noise)
        starts, landings = [], []
        x = noise
        for timestep in self.skipping.flip(0):
            later = timestep.repeat(items)
            starts.append(x)
            x = self._teacher_skip(x, later, self._skipped_to(later), *conditions)
            landings.append(x)
        return torch.cat(starts), self.skipping.flip(0).repeat_interleave(items), torch.cat(landings)

    def forward(self, inputs) -> dict[str, torch.Tensor]:
        items = len(inputs.latents)
        masks = inputs.expression_mask + inputs.facial_mask
        with torch.no_grad():
            reference_contexts, contexts = self.models.encode_context(
                torch.cat([torch.zeros_like(inputs.clip_tokens), inputs.clip_tokens]))
            unconditional, context = contexts.chunk(2)
            reference_context = reference_contexts[items:]
            reference = self.referencenet.reference_features(inputs.reference_latents, reference_context, 0)
            features = self.guider(inputs.landmarks)
            conditions = ((unconditional, context), features, reference)
            if self.whole_trajectory:  # one teacher trajectory, the student learns at each of its skips
                noisy, later, stepped = self._trajectory_states(inputs.noise, conditions)
                skips = len(self.skipping)
                context, features, masks = (repeated(tensor, skips) for tensor in (context, features, masks))
                reference = [repeated(feature, skips) for feature in reference]
            else:
                later = inputs.timesteps
                if self.from_noise:  # the teacher's own trajectory from pure noise down to t, as the sampler meets it
                    noisy = inputs.noise
                    current = torch.full_like(later, TOP_TIMESTEP)
                    while (current > later).any():
                        stop = torch.maximum(self._skipped_to(current), later)
                        noisy = self._teacher_skip(noisy, current, stop, *conditions)
                        current = stop
                else:
                    alpha = self._alpha(later)
                    noisy = alpha.sqrt() * inputs.latents + (1 - alpha).sqrt() * inputs.noise
                stepped = self._teacher_skip(noisy, later, self._skipped_to(later), *conditions)  # t to t - k
            earlier = self._skipped_to(later)
            end = self.ends[torch.searchsorted(self.ends, later) - 1]  # the segment's end, below ``later``
            alpha, alpha_earlier, alpha_end = self._alpha(later), self._alpha(earlier), self._alpha(end)
            target = stepped  # at the segment's end the teacher's step is the target itself
            inside = (earlier > end).reshape(-1, 1, 1, 1, 1)
            if inside.any():  # elsewhere the target network carries the jump on to the end
                with swapped(self.adapter, self.target):
                    v_target = self.unet(stepped, earlier.clamp(min=0), context, features, reference)
                target = torch.where(inside, ddim_transfer(stepped, v_target, alpha_earlier, alpha_end), stepped)
        v = self.unet(noisy, later, context, features, reference)
        predicted = ddim_transfer(noisy, v, alpha, alpha_end)
        distance = huber(predicted.float(), target.float(), self.huber_c)
        consistency = distance.mean()
        ffg = (distance * masks).mean()
        return {"consistency": consistency, "ffg": ffg, "total": consistency + self.ffg_weight * ffg}


def repeated(tensor: torch.Tensor, times: int) -> torch.Tensor:
    """``times`` copies of a batch one after the other (the batch order of ``_trajectory_states``)."""
    return tensor.repeat(times, *[1] * (tensor.dim() - 1))
