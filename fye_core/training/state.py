"""Trainer checkpoints in safetensors: the networks as an FYE model file (loads in the sampler and ComfyUI),
their EMA as a second one, and the optimizer state, step and settings in ``training.safetensors``. A
distillation checkpoint holds the merged student as the model files and the adapters (student, its EMA,
the target network) as LoRA files beside them.

A checkpoint is the folder ``checkpoint-<step>``; it appears only when complete.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import FYEInputError
from ..models import FYEModels, save_fye

TRAINING_FORMAT = "fye-training/1"
MODELS_FILE, EMA_FILE, STATE_FILE = "models.safetensors", "ema.safetensors", "training.safetensors"
STUDENT_LORA_FILE, EMA_LORA_FILE, TARGET_LORA_FILE = "student_lora.safetensors", "ema_lora.safetensors", \
    "target_lora.safetensors"


@dataclass
class TrainingState:
    step: int
    optimizer: dict  # torch optimizer state_dict
    ema: dict | None  # diffusers EMAModel scalars (its shadow parameters are the EMA file's weights)
    scaler: dict | None  # GradScaler state_dict (fp16)
    config: dict


def checkpoint_folder(output: str | os.PathLike, step: int) -> Path:
    return Path(output) / f"checkpoint-{step:07d}"


def checkpoints(output: str | os.PathLike) -> list[Path]:
    """The complete checkpoints of a run, oldest first."""
    folder = Path(output)
    return sorted(p for p in folder.glob("checkpoint-*") if (p / STATE_FILE).is_file()) if folder.is_dir() else []


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{name}"] = value.detach().contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, tensor in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = tensor
    for key, value in meta["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


@contextlib.contextmanager
def ema_weights(ema, trained: list[torch.nn.Parameter]) -> Iterator[None]:
    """The ``trained`` parameters hold a diffusers ``EMAModel``'s averages inside the block, their own
    values again after it."""
    if ema is None:
        yield
        return
    ema.store(trained)
    ema.copy_to(trained)
    try:
        yield
    finally:
        ema.restore(trained)


def write_networks(folder: Path, models: FYEModels, ema=None, trained: list[torch.nn.Parameter] | None = None) -> None:
    """The networks as ``MODELS_FILE``; with a diffusers ``ema`` (``EMAModel`` of the ``trained`` parameters) the
    EMA weights also as ``EMA_FILE``."""
    save_fye(models, folder / MODELS_FILE, dtype=None)
    if ema is not None:
        with ema_weights(ema, trained):
            save_fye(models, folder / EMA_FILE, dtype=None)


def save_checkpoint(folder: Path, state: TrainingState, write: Callable[[Path], None]) -> Path:
    """Writes the checkpoint into a hidden folder (the networks by ``write(folder)``) and renames it into
    place."""
    partial = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    write(partial)
    tensors, optimizer_meta = _flatten_optimizer(state.optimizer)
    metadata = {"format": TRAINING_FORMAT, "step": str(state.step), "optimizer": json.dumps(optimizer_meta),
                "ema": json.dumps(state.ema), "scaler": json.dumps(state.scaler), "config": json.dumps(state.config)}
    # safetensors refuses an empty file; an optimizer that has not stepped yet has no tensors
    tensors["step"] = torch.tensor(state.step)
    save_file(tensors, str(partial / STATE_FILE), metadata=metadata)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(partial, folder)
    return folder


def load_checkpoint(folder: str | os.PathLike) -> TrainingState:
    folder = Path(folder)
    path = folder / STATE_FILE
    if not path.is_file():
        raise FYEInputError(f"{folder} is not a trainer checkpoint (no {STATE_FILE}); pass a checkpoint-<step> "
                            "folder of a run, or the run folder to take its newest")
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
        if metadata.get("format") != TRAINING_FORMAT:
            raise FYEInputError(f"{path} is not an FYE training state (no '{TRAINING_FORMAT}' format tag)")
        tensors = {key: f.get_tensor(key) for key in f.keys() if key.startswith("optimizer.")}
    return TrainingState(step=int(metadata["step"]),
                         optimizer=_unflatten_optimizer(tensors, json.loads(metadata["optimizer"])),
                         ema=json.loads(metadata["ema"]), scaler=json.loads(metadata["scaler"]),
                         config=json.loads(metadata["config"]))


def prune_checkpoints(output: str | os.PathLike, keep: int) -> None:
    """Removes all but the newest ``keep`` checkpoints (0 keeps all)."""
    if keep:
        for old in checkpoints(output)[:-keep]:
            shutil.rmtree(old)
