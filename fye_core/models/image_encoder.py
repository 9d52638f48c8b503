"""The CLIP image conditioning: sd-image-variations' ViT-L/14 encoder tokens of the reference portrait.

The official pipeline runs ``CLIPImageProcessor()`` with the library defaults of its time (transformers 4.x, PIL
bicubic) and takes ``last_hidden_state``: 257 tokens x 1024, before ``post_layernorm``. ``clip_pixel_values``
reproduces that preprocessing without transformers, so the ComfyUI path can feed the same pixels to ComfyUI's model.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import FYEInputError
from .checkpoints import assign_weights, read_tensors

CLIP_IMAGE_SIZE = 224
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_TOKENS = 257  # CLS + 16 x 16 patches

# sd-image-variations-diffusers/image_encoder/config.json (the CLIPVisionConfig keys that shape the network)
SD_IMAGE_VARIATIONS_ENCODER_CONFIG = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "projection_dim": 768,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "num_channels": 3,
    "image_size": 224,
    "patch_size": 14,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
    "initializer_factor": 1.0,
}
ENCODER_DESCRIPTION = ("the sd-image-variations CLIP image encoder (ViT-L/14, 224 px, transformers key names, "
                       "e.g. sd-image-variations-encoder-fp16.safetensors)")


def _preprocess_one(image: np.ndarray) -> np.ndarray:
    """One uint8 HWC image -> float32 CHW, step by step as transformers' PIL CLIP processor does it."""
    pil = Image.fromarray(image)
    short, long = sorted(pil.size)
    new_long = int(CLIP_IMAGE_SIZE * long / short)
    size = (CLIP_IMAGE_SIZE, new_long) if pil.width <= pil.height else (new_long, CLIP_IMAGE_SIZE)
    resized = np.asarray(pil.resize(size, Image.Resampling.BICUBIC))
    top = (resized.shape[0] - CLIP_IMAGE_SIZE) // 2
    left = (resized.shape[1] - CLIP_IMAGE_SIZE) // 2
    crop = resized[top:top + CLIP_IMAGE_SIZE, left:left + CLIP_IMAGE_SIZE]
    # transformers rescales in float64 then casts, and normalises in float32: same order, same bits
    scaled = (crop.astype(np.float64) * (1 / 255)).astype(np.float32)
    normalised = (scaled - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32)
    return normalised.transpose(2, 0, 1)


def clip_pixel_values(images: np.ndarray) -> torch.Tensor:
    """uint8 RGB (H,W,3) or (B,H,W,3) -> float32 (B,3,224,224), as the official ``CLIPImageProcessor()`` makes it:
    shortest edge to 224 (PIL bicubic), centre crop 224, /255, CLIP mean/std."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 RGB images (H,W,3) or (B,H,W,3), got {images.dtype} {images.shape}")
    batch = images[None] if images.ndim == 3 else images
    return torch.from_numpy(np.stack([_preprocess_one(image) for image in batch]))


def _materialise_position_ids(model: torch.nn.Module) -> None:
    """``position_ids`` is a non-persistent buffer: files do not hold it, so a meta-built model still lacks it."""
    embeddings = model.vision_model.embeddings
    if embeddings.position_ids.is_meta:
        ids = torch.arange(embeddings.num_positions, device=embeddings.position_embedding.weight.device)
        embeddings.register_buffer("position_ids", ids.expand((1, -1)), persistent=False)


def _load_single_file(path: Path) -> torch.nn.Module:
    """Builds the encoder on the meta device and assigns the file's tensors: no random init, no second copy."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    # files saved by transformers < 4.31 still hold the derivable position_ids
    state = {key: tensor for key, tensor in read_tensors(path).items() if not key.endswith("position_ids")}
    with torch.device("meta"):
        model = CLIPVisionModelWithProjection(CLIPVisionConfig(**SD_IMAGE_VARIATIONS_ENCODER_CONFIG))
    assign_weights(model, state, str(path), ENCODER_DESCRIPTION)
    _materialise_position_ids(model)
    return model


def _load_folder(path: Path) -> torch.nn.Module:
    from transformers import CLIPVisionModelWithProjection

    try:
        return CLIPVisionModelWithProjection.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as err:
        raise FYEInputError(f"{path} is not a transformers folder of {ENCODER_DESCRIPTION} ({err}); it needs "
                            "config.json and model.safetensors (the image_encoder folder of "
                            "lambdalabs/sd-image-variations-diffusers)") from None


def load_clip_image_encoder(path: str | os.PathLike, dtype: torch.dtype = torch.float32,
                            device: str | torch.device = "cpu") -> torch.nn.Module:
    """A ``CLIPVisionModelWithProjection`` in eval mode from a transformers folder or a single weights file."""
    path = Path(path)
    if path.is_dir():
        model = _load_folder(path)
    elif path.is_file():
        model = _load_single_file(path)
    else:
        raise FYEInputError(f"CLIP image encoder not found: {path}; expected {ENCODER_DESCRIPTION} as a "
                            ".safetensors file or a transformers folder")
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def encode_clip_tokens(encoder: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """The (B,257,1024) ``last_hidden_state`` (before ``post_layernorm``) the official pipeline conditions on."""
    weight = next(encoder.parameters())
    with torch.no_grad():
        return encoder(pixel_values=pixel_values.to(device=weight.device, dtype=weight.dtype)).last_hidden_state
