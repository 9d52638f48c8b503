"""A distilled few-step student: what it was made for, its LoRA file, and putting it onto its teacher's weights.

The student is the teacher's UNet with a LoRA (peft) on every linear and convolution layer (``fye train``'s
distill stage makes it). It ships as full FYE weights (the adapter merged; the config records the student) or as
the adapter alone, a small file for the teacher's weights.
"""
from __future__ import annotations

import copy
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import FYEInputError
from ..files import atomic_output
from .checkpoints import FYEModels, safetensors_metadata

LORA_FORMAT = "fye-student-lora/1"
# The layers the student's LoRA adapts (peft's regular expression over module names): every linear and convolution
# layer of the UNet, the spatial and the motion modules' (attention projections, feed-forwards, the residual
# blocks' convolutions and time projections, conv_in / conv_out, the samplers' convolutions, the time embedding and
# the spatial transformers' proj_in / proj_out), less the motion modules' proj_in / proj_out, which diffusers calls
# with a keyword peft's layers do not take. Every layer, not LCM-LoRA's attention and residual layers alone: on the
# test model a student needs the changes of both kinds of layer (README, "How the student got there").
LORA_TARGETS = (r".*(to_q|to_k|to_v|to_out\.0|ff\.net\.0\.proj|ff\.net\.2|conv1|conv2|conv_shortcut|time_emb_proj"
                r"|conv_in|conv_out|samplers\.0\.conv|time_embedding\.linear_\d|attentions\.\d+\.proj_(in|out))")
ADAPTER = "student"


@dataclass(frozen=True)
class StudentSettings:
    """What a student was distilled for, recorded in its files: the steps and guidance it samples with, the
    skipping schedule (``teacher_steps``) its timesteps come from, or the ``timesteps`` themselves where the
    distillation chose them (None: the schedule's); ``lora_rank`` of its adapter."""

    steps: int
    guidance: float
    teacher_steps: int
    lora_rank: int
    timesteps: tuple[int, ...] | None = None

    def __post_init__(self):
        if self.timesteps is not None:  # a JSON list in the files
            object.__setattr__(self, "timesteps", tuple(self.timesteps))

    @classmethod
    def from_config(cls, config: dict) -> StudentSettings | None:
        found = config.get("student")
        return None if found is None else cls(**found)


def read_student_settings(weights, student_lora: str | os.PathLike | None = None) -> StudentSettings | None:
    """What the student among these weights was made for, without loading them: the LoRA's settings, else those
    an FYE file's config records (None for a teacher or the official files)."""
    if student_lora is not None:
        return read_student_lora(student_lora)[1]
    if not isinstance(weights, (str, os.PathLike)):
        return None
    return StudentSettings.from_config(json.loads(safetensors_metadata(weights).get("config", "{}")))


def add_student_adapter(unet: nn.Module, rank: int, seed: int, targets: str | list[str] = LORA_TARGETS) -> None:
    """Injects the student's LoRA (``rank``, alpha = rank, on the ``targets`` layers) into the UNet; its B matrices
    start at zero, so the student starts as the teacher."""
    from peft import LoraConfig

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=True,
                                    target_modules=targets), adapter_name=ADAPTER)


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
                "targets": json.dumps(LORA_TARGETS)}
    with atomic_output(path) as tmp:
        save_file({key: tensor.float().contiguous() for key, tensor in tensors.items()}, str(tmp), metadata=metadata)
    return Path(path)


def read_student_lora(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], StudentSettings]:
    """The adapter weights and settings of a student LoRA file."""
    from safetensors.torch import load_file

    path = Path(path)
    metadata = safetensors_metadata(path)
    if metadata.get("format") != LORA_FORMAT:
        raise FYEInputError(f"{path} is not an FYE student LoRA (no '{LORA_FORMAT}' format tag); make one with "
                            "fye train's distill stage")
    return load_file(str(path)), StudentSettings(**json.loads(metadata["student"]))


def apply_student_lora(models: FYEModels, path: str | os.PathLike) -> StudentSettings:
    """Merges a student LoRA into the teacher ``models``' UNet weights and records its settings in
    ``models.config``."""
    from peft.utils import set_peft_model_state_dict

    tensors, settings = read_student_lora(path)
    # the layers it was made on: files from before every layer was adapted name fewer
    targets = json.loads(safetensors_metadata(path).get("targets", json.dumps(LORA_TARGETS)))
    add_student_adapter(models.unet, settings.lora_rank, 0, targets)
    dtype = next(models.unet.parameters()).dtype
    result = set_peft_model_state_dict(models.unet, {k: v.to(dtype) for k, v in tensors.items()},
                                       adapter_name=ADAPTER)
    if getattr(result, "unexpected_keys", None):
        raise FYEInputError(f"{path} does not fit these FYE weights (unexpected keys such as "
                            f"{result.unexpected_keys[0]}); it was distilled from another architecture")
    _merge_adapter(models.unet)
    models.config["student"] = asdict(settings)
    return settings


def _merge_adapter(unet: nn.Module) -> None:
    """The student's adapter folded into the UNet's own weights, and the adapter layers removed."""
    unet.fuse_lora(adapter_names=[ADAPTER])
    unet.unload_lora()


def merged_student(models: FYEModels, settings: StudentSettings) -> FYEModels:
    """A copy of ``models`` with the student's adapter merged into the UNet's weights: full FYE weights that
    load anywhere the teacher's do, their config recording the student."""
    merged = copy.deepcopy(models)
    _merge_adapter(merged.unet)
    merged.config = {**merged.config, "student": asdict(settings)}
    return merged
