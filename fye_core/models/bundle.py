"""Everything ``fye animate`` loads from one models folder, and what to tell users who lack a file."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ..errors import FYEInputError
from .checkpoints import FORMAT, OFFICIAL_FILES, FYEModels, load_fye, load_official
from .student import apply_student_lora

KIJAI_PATTERNS = {"guider": "FYE_lmk_guider*.safetensors", "referencenet": "FYE_referencenet*.safetensors",
                  "unet": "FYE_unet*.safetensors"}
VAE_FOLDERS = ("sd-vae-ft-mse", "vae")
CLIP_FOLDERS = ("image_encoder", "sd-image-variations-encoder")
WHERE = {
    "fye": "fye.safetensors (from `fye convert`), or lmk_guider.pth + referencenet.pth + unet.pth from "
           "https://huggingface.co/YueMafighting/FollowYourEmoji, or FYE_lmk_guider / FYE_referencenet / FYE_unet "
           "safetensors from https://huggingface.co/Kijai/FollowYourEmoji-safetensors",
    "vae": "the sd-vae-ft-mse folder (config.json + diffusion_pytorch_model.safetensors) from "
           "https://huggingface.co/stabilityai/sd-vae-ft-mse, as sd-vae-ft-mse/",
    "clip": "the image_encoder folder (config.json + model.safetensors) of "
            "https://huggingface.co/lambdalabs/sd-image-variations-diffusers, as image_encoder/",
}


@dataclass(frozen=True)
class ModelFiles:
    fye: Path | dict[str, Path]  # our single file, or one official/kijai file per network
    vae: Path
    clip: Path


def _is_fye_file(path: Path) -> bool:
    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("format") == FORMAT
    except (SafetensorError, OSError):
        return False


def find_fye_weights(folder: Path) -> Path | dict[str, Path] | None:
    """The FYE weights in a folder: our file, else a complete official or kijai set; None without."""
    ours = sorted(p for p in folder.glob("*.safetensors") if _is_fye_file(p))
    if ours:
        return ours[0]
    if all((folder / name).is_file() for name in OFFICIAL_FILES.values()):
        return {network: folder / name for network, name in OFFICIAL_FILES.items()}
    kijai = {network: sorted(folder.glob(pattern)) for network, pattern in KIJAI_PATTERNS.items()}
    if all(kijai.values()):
        return {network: files[0] for network, files in kijai.items()}
    return None


def locate_model_files(folder: str | os.PathLike) -> ModelFiles:
    """Finds the FYE weights, the VAE and the CLIP image encoder in ``folder``; names every missing one."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FYEInputError(f"models folder not found: {folder}")
    found = {
        "fye": find_fye_weights(folder),
        "vae": next((folder / name for name in VAE_FOLDERS if (folder / name / "config.json").is_file()), None),
        "clip": next((folder / name for name in CLIP_FOLDERS if (folder / name / "config.json").is_file()), None),
    }
    missing = [key for key, value in found.items() if value is None]
    if missing:
        raise FYEInputError(f"{folder} lacks model files; put into it: "
                            + "; ".join(f"({i + 1}) {WHERE[key]}" for i, key in enumerate(missing)))
    return ModelFiles(**found)


def load_fye_models(weights: Path | dict[str, Path], dtype: torch.dtype = torch.float32, device="cpu",
                    student_lora: str | os.PathLike | None = None) -> FYEModels:
    """Loads ``ModelFiles.fye`` (or ``locate_fye_weights``) for inference, with a distilled student's LoRA merged
    into the UNet when given (``models.config["student"]`` then says what it was made for)."""
    models = load_fye(weights) if isinstance(weights, Path) else load_official(weights)
    if student_lora is not None:
        models.to(dtype=torch.float32)  # merged in fp32, then cast like the rest
        apply_student_lora(models, student_lora)
    for network in models.networks().values():
        network.eval().requires_grad_(False)
    return models.to(device=device, dtype=dtype)


def locate_fye_weights(path: str | os.PathLike) -> Path | dict[str, Path]:
    """The FYE weights a chosen file stands for: our single file, or the official/kijai set it belongs to."""
    path = Path(path)
    if _is_fye_file(path):
        return path
    siblings = find_fye_weights(path.parent)
    if isinstance(siblings, dict) and path in siblings.values():
        return siblings
    raise FYEInputError(f"{path} is not an FYE model file and has no complete official set beside it; use "
                        f"{WHERE['fye']}")
