"""Temporal filters for motion: the official centred mean of head poses and a One-Euro filter on landmarks."""
from __future__ import annotations

import numpy as np

# One-Euro defaults, tuned on the shared driving videos (see the README's motion controls): landmarks in
# face sizes, so the parameters do not depend on the image size.
ONE_EURO_MIN_CUTOFF = 0.5  # Hz: the cutoff of a still face
ONE_EURO_BETA = 5.0  # how fast the cutoff rises with speed, per face size per second
ONE_EURO_DERIVATIVE_CUTOFF = 1.0  # Hz: the low-pass of the speed estimate, as Casiez et al.


def smooth_poses(poses: np.ndarray, window: int = 1) -> np.ndarray:
    """The official ``smooth_pose_seq``: a centred moving average, shrinking at the ends (1 = off)."""
    if window <= 1:
        return poses
    half = window // 2
    cumulative = np.concatenate([np.zeros((1, poses.shape[1])), np.cumsum(poses, axis=0)])
    start = np.maximum(np.arange(len(poses)) - half, 0)
    stop = np.minimum(np.arange(len(poses)) + half + 1, len(poses))
    return (cumulative[stop] - cumulative[start]) / (stop - start)[:, None]


def _smoothing(cutoff: np.ndarray | float, rate: float) -> np.ndarray | float:
    """The exponential smoothing factor of a first-order low-pass at ``cutoff`` Hz sampled at ``rate`` Hz."""
    return 1.0 / (1.0 + rate / (2.0 * np.pi * cutoff))


def one_euro(points: np.ndarray, rate: float, min_cutoff: float = ONE_EURO_MIN_CUTOFF, beta: float = ONE_EURO_BETA,
             derivative_cutoff: float = ONE_EURO_DERIVATIVE_CUTOFF) -> np.ndarray:
    """The One-Euro filter (Casiez, Roussel and Vogel, CHI 2012) over the first axis of ``points`` (N, ..., D).

    Each point is low-passed with a cutoff that rises with its own speed (the norm over the last axis of the
    low-passed derivative): ``min_cutoff + beta * speed``. A still point is smoothed hard, a fast one barely,
    so jitter goes without lagging motion. ``rate``: frames per second.
    """
    points = np.asarray(points, np.float64)
    filtered = np.empty_like(points)
    filtered[0] = points[0]
    speed_estimate = np.zeros_like(points[0])
    derivative_smoothing = _smoothing(derivative_cutoff, rate)
    for t in range(1, len(points)):
        derivative = (points[t] - filtered[t - 1]) * rate
        speed_estimate += derivative_smoothing * (derivative - speed_estimate)
        cutoff = min_cutoff + beta * np.linalg.norm(speed_estimate, axis=-1, keepdims=True)
        filtered[t] = filtered[t - 1] + _smoothing(cutoff, rate) * (points[t] - filtered[t - 1])
    return filtered
