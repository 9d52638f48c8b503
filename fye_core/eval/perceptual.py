"""LPIPS (Zhang et al. 2018, v0.1, AlexNet trunk) from user-supplied weights.

Two files make the network: the LPIPS linear layers (the ``lpips`` package's ``weights/v0.1/alex.pth``) and
the ImageNet AlexNet trunk (torchvision's ``alexnet-owt-7be5be79.pth``, which torch keeps in its hub cache).
A full ``lpips.LPIPS().state_dict()`` saved to one file holds both.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import FYEInputError
from .weights import find_weights

LIN_NAMES = ("lpips_alex.pth", "lpips_alex.safetensors")
BACKBONE_NAMES = ("alexnet-owt-7be5be79.pth",)
CHANNELS = (64, 192, 384, 256, 256)
TAPPED = (1, 4, 7, 9, 11)  # the ReLUs of torchvision's AlexNet.features whose outputs LPIPS compares
SHIFT = (-0.030, -0.088, -0.188)  # LPIPS v0.1's ScalingLayer: inputs in -1..1 to ImageNet statistics
SCALE = (0.458, 0.448, 0.450)
FEATURE_EPS = 1e-10
BATCH = 8


def alexnet_trunk() -> nn.Sequential:
    """torchvision's ``AlexNet.features`` up to its fifth ReLU, with the same layer indices."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),
    )


class LPIPS(nn.Module):
    """Distance of two image batches (B, 3, H, W) in -1..1: unit-normalised trunk features, squared
    differences weighted per channel by the linear layers, averaged over space and summed over layers."""

    def __init__(self):
        super().__init__()
        self.features = alexnet_trunk()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in CHANNELS)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)

    def _tapped(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in TAPPED:
                taps.append(x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + FEATURE_EPS))
        return taps

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        taps_a = self._tapped((a - self.shift) / self.scale)
        taps_b = self._tapped((b - self.shift) / self.scale)
        return sum(lin((fa - fb) ** 2).mean(dim=(2, 3)) for lin, fa, fb in zip(self.lins, taps_a, taps_b,
                                                                                 strict=True)).flatten()


def lpips_key(key: str) -> str | None:
    """Our name for a key of the ``lpips`` package's or torchvision's files; None for keys LPIPS does not use."""
    if match := re.fullmatch(r"lin(\d)\.model\.1\.weight", key):
        return f"lins.{match[1]}.weight"
    if match := re.fullmatch(r"(?:features|net\.slice\d)\.(\d+)\.(weight|bias)", key):
        return f"features.{match[1]}.{match[2]}" if int(match[1]) <= TAPPED[-1] else None
    return None


def _our_keys(state: dict) -> dict:
    return {ours: tensor for key, tensor in state.items() if (ours := lpips_key(key)) is not None}


def load_lpips(weights: str | os.PathLike | None = None, backbone: str | os.PathLike | None = None,
               device: str = "cpu") -> LPIPS:
    """LPIPS from the linear-layer file (``weights`` or the eval cache) and the AlexNet trunk (in that file,
    or ``backbone``, the eval cache or torch's hub cache). Raises ``MetricUnavailable`` when one is missing."""
    lin_path = find_weights(weights, LIN_NAMES, "--lpips-weights", "LPIPS weights (the lpips package's "
                            "weights/v0.1/alex.pth)")
    from ..models.checkpoints import assign_weights, read_tensors  # diffusers: only once weights are found

    state = _our_keys(read_tensors(lin_path))
    sources = [lin_path]
    if not any(key.startswith("features.") for key in state):
        trunk = find_weights(backbone, BACKBONE_NAMES, "--lpips-backbone", "AlexNet weights for LPIPS "
                             "(torchvision's alexnet-owt-7be5be79.pth)", (Path(torch.hub.get_dir()) / "checkpoints",))
        state.update(_our_keys(read_tensors(trunk)))
        sources.append(trunk)
    model = LPIPS()
    assign_weights(model, {key: value.float() for key, value in state.items()},
                   " + ".join(map(str, sources)), "the LPIPS AlexNet trunk and linear layers")
    return model.eval().to(device)


def _to_input(frames: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(frames).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1.0


@torch.no_grad()
def lpips_distances(model: LPIPS, pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-frame LPIPS of two (N, H, W, 3) uint8 videos of one size and length."""
    if pred.shape != gt.shape:
        raise FYEInputError(f"LPIPS needs videos of one shape, got {pred.shape} and {gt.shape}")
    device = model.shift.device
    return np.concatenate([model(_to_input(pred[i:i + BATCH], device), _to_input(gt[i:i + BATCH], device)).cpu()
                           .numpy() for i in range(0, len(pred), BATCH)]).astype(np.float64)
