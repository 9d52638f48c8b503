"""ComfyUI tensors <-> the numpy arrays of fye_core, and progress/interrupt plumbing."""
import time

import comfy.model_management
import comfy.utils
import numpy as np
import torch
from PIL import Image

PREVIEW_INTERVAL_S = 0.25


def uint8_to_images(frames: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> IMAGE on ComfyUI's intermediate device."""
    tensor = torch.tensor(frames).float() / 255.0  # a copy: PIL arrays are read-only
    return tensor.to(comfy.model_management.intermediate_device())


def flags_to_mask(flags: np.ndarray, height: int, width: int) -> torch.Tensor:
    """Per-frame booleans -> MASK [B, H, W], 1 on frames where the flag is set."""
    mask = torch.from_numpy(np.asarray(flags, np.float32))[:, None, None].expand(-1, height, width)
    return mask.contiguous().to(comfy.model_management.intermediate_device())


class FrameProgress:
    """A ComfyUI ProgressBar that checks for interruption on every frame and sends a preview now and then."""

    def __init__(self, total: int):
        self.bar = comfy.utils.ProgressBar(total)
        self.last_preview = 0.0

    def __call__(self, done: int, total, preview=None) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        now = time.monotonic()
        image = None
        if preview is not None and now - self.last_preview >= PREVIEW_INTERVAL_S:
            self.last_preview = now
            image = ("JPEG", Image.fromarray(preview() if callable(preview) else preview), 512)
        self.bar.update_absolute(done, total, image)
