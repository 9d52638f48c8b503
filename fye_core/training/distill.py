"""Latent consistency distillation (LCM, Luo et al. 2023) of a trained FYE into a few-step student.

The teacher is the trained FYE, frozen. The student is the same UNet with a LoRA (peft) on its attention,
feed-forward and residual layers: with the adapter off it is the teacher, so one UNet serves both. Each step
draws a timestep t from the skipping schedule of ``teacher_steps`` (every k = 1000 / teacher_steps-th), noises
the clip's latents to t, and lets the teacher take one guided DDIM step to t - k. The student's consistency
output at t must equal the target network's at t - k, where the target is an exponential moving average of the
student's adapter (``target_ema_decay``): the consistency property f(x_t, t) = f(x_{t-k}, t - k) along the
teacher's guided trajectory, anchored at t = 0 by the boundary scalings of diffusers' LCM scheduler (the ones
the consistency sampler uses).

Guidance is folded in at one fixed scale (``distill_guidance``, the official 3.5) rather than a guidance
embedding: Follow-Your-Emoji is run at one scale, a fixed scale needs no new input layer (so the student stays
a LoRA over the teacher's own architecture and loads anywhere the teacher does), and it halves the student's
work at sampling, which runs the conditional pass alone. The scale is recorded in the student's file.

The facial fine-grained weighting (``ffg_weight``) adds the distance inside the expression and face masks,
as L_FFG adds it to L_LDM.
"""
from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import FYEInputError
from ..files import atomic_output
from ..models import FYEModels
from ..sampling.schedule import ddim_transfer, x0_from_v
from ..sampling.solvers import consistency_scheduler

LORA_FORMAT = "fye-student-lora/1"
# The layers the student's LoRA adapts: attention projections, feed-forwards and the residual blocks' convolutions
# and time projections, in the spatial layers and the motion modules (LCM-LoRA's choice for SD-1.5 less the
# transformers' proj_in/proj_out, which diffusers' motion modules call with a keyword peft's layers do not take).
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "conv1", "conv2", "conv_shortcut",
                "time_emb_proj")
ADAPTER = "student"


@dataclass(frozen=True)
class StudentSettings:
    """What a student was distilled for, recorded in its files: the steps and guidance it samples with and the
    skipping schedule (``teacher_steps``) its timesteps come from; ``lora_rank`` of its adapter."""

    steps: int
    guidance: float
    teacher_steps: int
    lora_rank: int

    @classmethod
    def from_config(cls, config: dict) -> StudentSettings | None:
        found = config.get("student")
        return None if found is None else cls(**found)


def add_student_adapter(unet: nn.Module, rank: int, seed: int) -> None:
    """Injects the student's LoRA (``rank``, alpha = rank) into the UNet; its B matrices start at zero, so the
    student starts as the teacher."""
    from peft import LoraConfig

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=True,
                                    target_modules=list(LORA_TARGETS)), adapter_name=ADAPTER)


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
                 ffg_weight: float, huber_c: float, alphas_cumprod: torch.Tensor):
        super().__init__()
        self.guider, self.referencenet, self.unet = models.guider, models.referencenet, models.unet
        self.models, self.target = models, target
        self.guidance, self.ffg_weight, self.huber_c = guidance, ffg_weight, huber_c
        self.stride = 1000 // teacher_steps
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
            unconditional, context = self.models.encode_context(torch.cat([torch.zeros_like(inputs.clip_tokens),
                                                                           inputs.clip_tokens]))[1].chunk(2)
            reference_context = self.models.encode_context(inputs.clip_tokens)[0]
            reference = self.referencenet.reference_features(inputs.reference_latents, reference_context, 0)
            features = self.guider(inputs.landmarks)
            with teacher(self.unet):
                v_plain, v_cond = self.unet(torch.cat([noisy, noisy]), torch.cat([later, later]),
                                            torch.cat([unconditional, context]), torch.cat([features, features]),
                                            reference, plain_items=items).chunk(2)
            guided = v_plain + self.guidance * (v_cond - v_plain)
            stepped = ddim_transfer(noisy, guided, alpha, alpha_earlier)
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


def lora_state(unet: nn.Module) -> dict[str, torch.Tensor]:
    """The student's adapter weights, with peft's adapter-free key names."""
    from peft.utils import get_peft_model_state_dict

    return {key: tensor.detach().contiguous() for key, tensor in
            get_peft_model_state_dict(unet, adapter_name=ADAPTER).items()}


def save_student_lora(unet: nn.Module, settings: StudentSettings, path: str | os.PathLike,
                      values: dict[str, torch.Tensor] | None = None) -> Path:
    """Writes the student's LoRA (``values``: other weights for the same keys, e.g. the EMA) as safetensors, with
    what it was distilled for in the metadata."""
    from safetensors.torch import save_file

    tensors = values if values is not None else lora_state(unet)
    metadata = {"format": LORA_FORMAT, "student": json.dumps(asdict(settings)),
                "targets": json.dumps(list(LORA_TARGETS))}
    with atomic_output(path) as tmp:
        save_file({key: tensor.float().contiguous() for key, tensor in tensors.items()}, str(tmp), metadata=metadata)
    return Path(path)


def read_student_lora(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], StudentSettings]:
    """The adapter weights and settings of a student LoRA file."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise FYEInputError(f"{path} is not a readable safetensors file ({err})") from None
    if metadata.get("format") != LORA_FORMAT:
        raise FYEInputError(f"{path} is not an FYE student LoRA (no '{LORA_FORMAT}' format tag); make one with "
                            "fye train's distill stage")
    return load_file(str(path)), StudentSettings(**json.loads(metadata["student"]))


def apply_student_lora(models: FYEModels, path: str | os.PathLike, merge: bool = True) -> StudentSettings:
    """Puts a student LoRA onto the teacher ``models`` (merged into the UNet's weights unless ``merge`` is False)
    and records its settings in ``models.config``."""
    from peft.utils import set_peft_model_state_dict

    tensors, settings = read_student_lora(path)
    add_student_adapter(models.unet, settings.lora_rank, 0)
    dtype = next(models.unet.parameters()).dtype
    result = set_peft_model_state_dict(models.unet, {k: v.to(dtype) for k, v in tensors.items()},
                                       adapter_name=ADAPTER)
    if getattr(result, "unexpected_keys", None):
        raise FYEInputError(f"{path} does not fit these FYE weights (unexpected keys such as "
                            f"{result.unexpected_keys[0]}); it was distilled from another architecture")
    if merge:
        models.unet.fuse_lora(adapter_names=[ADAPTER])
        models.unet.unload_lora()
    models.config["student"] = asdict(settings)
    return settings


def merged_student(models: FYEModels, settings: StudentSettings) -> FYEModels:
    """A copy of ``models`` with the student's adapter merged into the UNet's weights: full FYE weights that
    load anywhere the teacher's do, their config recording the student."""
    import copy

    merged = copy.deepcopy(models)
    merged.unet.fuse_lora(adapter_names=[ADAPTER])
    merged.unet.unload_lora()
    merged.config = {**merged.config, "student": asdict(settings)}
    return merged
