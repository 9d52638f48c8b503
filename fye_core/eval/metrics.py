"""Self-reenactment image metrics on uint8 RGB frames: L1, PSNR and SSIM, per frame and for a video.

SSIM is Wang et al. 2004 as scikit-image computes it with ``gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=255``: an 11x11 Gaussian window (sigma 1.5, mirrored edges),
population covariances, the mean over the image less the window's radius at each edge, then over channels.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..errors import FYEInputError

DATA_RANGE = 255.0
SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # int(3.5 * sigma + 0.5): the 11-tap window of Wang et al.
SSIM_K1, SSIM_K2 = 0.01, 0.03


def check_same_frames(pred: np.ndarray, gt: np.ndarray, pred_name: str = "the prediction",
                      gt_name: str = "the ground truth") -> None:
    """Both are (N, H, W, 3) with the same N, H and W; otherwise an error saying which differs."""
    if pred.shape[1:] != gt.shape[1:]:
        raise FYEInputError(f"{pred_name} has {pred.shape[2]}x{pred.shape[1]} frames but {gt_name} has "
                            f"{gt.shape[2]}x{gt.shape[1]}; compare videos of one size")
    if len(pred) != len(gt):
        raise FYEInputError(f"{pred_name} has {len(pred)} frames but {gt_name} has {len(gt)}; compare videos "
                            "of one length (a video made with --drop-first-frame: pass --drop-first-frame to eval)")


def gaussian_window(sigma: float = SSIM_SIGMA, radius: int = SSIM_RADIUS) -> np.ndarray:
    """The normalised 1D Gaussian taps; the 2D window is their outer product (applied separably)."""
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    taps = np.exp(-0.5 * (x / sigma) ** 2)
    return taps / taps.sum()


def _local_mean(image: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Gaussian-weighted local mean of each channel, edges mirrored (dcba|abcd, scikit-image's ``reflect``)."""
    return cv2.sepFilter2D(image, cv2.CV_64F, taps, taps, borderType=cv2.BORDER_REFLECT)


def ssim_frame(pred: np.ndarray, gt: np.ndarray) -> float:
    """SSIM of two (H, W, 3) uint8 frames, averaged over channels."""
    x, y = pred.astype(np.float64), gt.astype(np.float64)
    taps = gaussian_window()
    mx, my = _local_mean(x, taps), _local_mean(y, taps)
    vx = _local_mean(x * x, taps) - mx * mx
    vy = _local_mean(y * y, taps) - my * my
    cxy = _local_mean(x * y, taps) - mx * my
    c1, c2 = (SSIM_K1 * DATA_RANGE) ** 2, (SSIM_K2 * DATA_RANGE) ** 2
    ssim_map = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    r = SSIM_RADIUS  # the border the window does not fully cover is left out, as Wang et al. do
    return float(ssim_map[r:-r, r:-r].mean(axis=(0, 1)).mean())


def psnr(pred: np.ndarray, gt: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB (peak 255) of two frames or videos; identical ones give infinity."""
    mse = np.mean((pred.astype(np.float64) - gt.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(DATA_RANGE ** 2 / mse))


def l1(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean absolute difference with pixel values in 0..1, of two frames or videos."""
    return float(np.mean(np.abs(pred.astype(np.float64) - gt.astype(np.float64))) / DATA_RANGE)


def video_metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """``l1``, ``ssim`` (the mean of the frames') and ``psnr`` of two (N, H, W, 3) uint8 videos of one size and
    length. PSNR is the whole video's, from its mean squared error over all frames: a mean of per-frame PSNRs
    would be infinite as soon as one frame matched exactly."""
    check_same_frames(pred, gt)
    return {"l1": l1(pred, gt), "ssim": float(np.mean([ssim_frame(p, g) for p, g in zip(pred, gt, strict=True)])),
            "psnr": psnr(pred, gt)}
