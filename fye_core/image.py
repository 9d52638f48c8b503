"""Reference-image preparation (the official 512 letterbox, or the original size snapped to multiples of 8)
and float <-> uint8 image conversion."""
from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import FYEInputError

REFERENCE_MODES = ("letterbox", "keep")


def images_to_uint8(images: torch.Tensor) -> np.ndarray:
    """Float images (B, H, W, C) in 0..1 -> uint8 RGB (B, H, W, 3); exact for images that came from uint8."""
    return (images[..., :3].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def load_image(path: str | os.PathLike) -> np.ndarray:
    """An RGB uint8 image, EXIF orientation applied (as ComfyUI's LoadImage does)."""
    try:
        with Image.open(path) as img:
            return np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    except FileNotFoundError:
        raise FYEInputError(f"portrait image not found: {path}") from None
    except (UnidentifiedImageError, OSError) as err:
        raise FYEInputError(f"cannot read the portrait image {path}: {err}; use a PNG, JPEG or WebP file") from None


def letterbox(image: np.ndarray, size: int = 512) -> np.ndarray:
    """The official ``ValDataset`` preprocessing: fit inside ``size`` (PIL bicubic, truncating sizes), then
    a centred ``size`` x ``size`` crop whose area outside the image is black."""
    img = Image.fromarray(image)
    scale = min(size / img.width, size / img.height)
    img = img.resize((int(img.width * scale), int(img.height * scale)))
    half = size // 2
    cx, cy = img.width // 2, img.height // 2
    return np.array(img.crop((cx - half, cy - half, cx - half + size, cy - half + size)))


def snap_to_multiple_of_8(image: np.ndarray) -> np.ndarray:
    """Keeps the original pixels, centre-cropping each side down to a multiple of 8 (the VAE's stride)."""
    height, width = image.shape[:2]
    new_h, new_w = height - height % 8, width - width % 8
    if new_h == 0 or new_w == 0:
        raise FYEInputError(f"the portrait is {width}x{height}; it must be at least 8x8 pixels")
    top, left = (height - new_h) // 2, (width - new_w) // 2
    return image[top:top + new_h, left:left + new_w]


def prepare_reference(image: np.ndarray, mode: str = "letterbox", size: int = 512) -> np.ndarray:
    """``letterbox``: the official 512x512 input (default); ``keep``: original size, multiple of 8."""
    if mode == "letterbox":
        return letterbox(image, size)
    if mode == "keep":
        return snap_to_multiple_of_8(image)
    raise ValueError(f"reference mode must be one of {REFERENCE_MODES}, got {mode!r}")
