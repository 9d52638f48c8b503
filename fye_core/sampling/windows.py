"""Which frames each denoising pass sees, and with what weight, for clips longer than one pass."""
from __future__ import annotations

import math

import torch

FUSE_METHODS = ("flat", "pyramid")


def official_windows(num_frames: int, context_frames: int) -> list[list[int]]:
    """The official ``uniform`` schedule as it is called: consecutive, non-overlapping windows whose last
    one wraps around to the start (the context_overlap argument never reaches it)."""
    if num_frames <= context_frames:
        return [list(range(num_frames))]
    starts = range(0, num_frames, context_frames)
    return [[(s + k) % num_frames for k in range(context_frames)] for s in starts]


def overlapping_windows(num_frames: int, context_frames: int, overlap: int) -> list[list[int]]:
    """Windows of ``context_frames`` advancing by ``context_frames - overlap``; the last ends on the last
    frame (ComfyUI's ``standard_static`` layout, without wrapping)."""
    if num_frames <= context_frames:
        return [list(range(num_frames))]
    if not 0 <= overlap < context_frames:
        raise ValueError(f"context overlap must be in [0, {context_frames}), got {overlap}")
    stride = context_frames - overlap
    starts = list(range(0, num_frames - context_frames, stride)) + [num_frames - context_frames]
    return [list(range(s, s + context_frames)) for s in starts]


def fuse_weights(length: int, method: str) -> torch.Tensor:
    """Per-position weights of a window when overlapping windows are averaged."""
    if method == "flat":
        return torch.ones(length, dtype=torch.float64)
    if method == "pyramid":
        positions = torch.arange(length, dtype=torch.float64)
        return torch.minimum(positions + 1, length - positions)
    raise ValueError(f"fuse method must be one of {FUSE_METHODS}, got {method!r}")


def gaussian_tile_offsets(num_frames: int, tile: int, overlap: int) -> list[int]:
    """The official ``forward_long`` tiles: stride ``tile - overlap``, the last one aligned to the end."""
    if num_frames <= tile:
        return [0]
    stride = tile - overlap
    count = 1
    while (count - 1) * stride + tile < num_frames:
        count += 1
    return [min(k * stride, num_frames - tile) for k in range(count)]


def gaussian_tile_weights(tile: int) -> torch.Tensor:
    """The official Gaussian weights over a tile: variance 0.01 on positions scaled by the tile length."""
    mid = (tile - 1) / 2
    var = 0.01
    return torch.tensor([math.exp(-((x - mid) ** 2) / tile**2 / (2 * var)) / math.sqrt(2 * math.pi * var)
                         for x in range(tile)], dtype=torch.float64).float()
