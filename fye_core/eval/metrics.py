"""Self-reenactment image metrics on uint8 RGB frames: L1, PSNR and SSIM, per frame and for a video.

SSIM and PSNR are scikit-image's (``pip install 'follow-your-emoji[eval]'``, imported when first used). SSIM is
Wang et al. 2004 with ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255``: an
11x11 Gaussian window (sigma 1.5, mirrored edges), population covariances, the mean over the image less the
window's radius at each edge, then over channels.
"""
from __future__ import annotations

import numpy as np

from ..errors import FYEInputError
from .weights import MetricUnavailable

DATA_RANGE = 255.0
SSIM_SIGMA = 1.5
INSTALL_HINT = "pip install 'follow-your-emoji[eval]', or pip install scikit-image"


def check_same_frames(pred: np.ndarray, gt: np.ndarray, pred_name: str = "the prediction",
                      gt_name: str = "the ground truth") -> None:
    """Both are (N, H, W, 3) with the same N, H and W; otherwise an error saying which differs."""
    if pred.shape[1:] != gt.shape[1:]:
        raise FYEInputError(f"{pred_name} has {pred.shape[2]}x{pred.shape[1]} frames but {gt_name} has "
                            f"{gt.shape[2]}x{gt.shape[1]}; compare videos of one size")
    if len(pred) != len(gt):
        raise FYEInputError(f"{pred_name} has {len(pred)} frames but {gt_name} has {len(gt)}; compare videos "
                            "of one length (a video made with --drop-first-frame: pass --drop-first-frame to eval)")


def _skimage_metrics():
    """``skimage.metrics``, or ``MetricUnavailable`` saying how to install it."""
    try:
        import skimage.metrics
    except ImportError:
        raise MetricUnavailable(f"SSIM and PSNR need scikit-image, which is not installed: {INSTALL_HINT}") from None
    return skimage.metrics


def ssim_frame(pred: np.ndarray, gt: np.ndarray) -> float:
    """SSIM of two (H, W, 3) uint8 frames, averaged over channels."""
    return float(_skimage_metrics().structural_similarity(
        pred, gt, gaussian_weights=True, sigma=SSIM_SIGMA, use_sample_covariance=False, data_range=DATA_RANGE,
        channel_axis=-1))


def psnr(pred: np.ndarray, gt: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB (peak 255) of two frames or videos, from the mean squared error over all
    their pixels; identical ones give infinity."""
    metrics = _skimage_metrics()
    with np.errstate(divide="ignore"):  # a zero error: infinity
        return float(metrics.peak_signal_noise_ratio(gt, pred, data_range=DATA_RANGE))


def l1(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean absolute difference with pixel values in 0..1, of two frames or videos."""
    return float(np.mean(np.abs(pred.astype(np.float64) - gt.astype(np.float64))) / DATA_RANGE)


def video_ssim(pred: np.ndarray, gt: np.ndarray) -> float:
    """The mean SSIM of the frames of two (N, H, W, 3) uint8 videos."""
    return float(np.mean([ssim_frame(p, g) for p, g in zip(pred, gt, strict=True)]))


def video_metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """``l1``, ``ssim`` (the mean of the frames') and ``psnr`` of two (N, H, W, 3) uint8 videos of one size and
    length. PSNR is the whole video's, from its mean squared error over all frames: a mean of per-frame PSNRs
    would be infinite as soon as one frame matched exactly. Without scikit-image, ``MetricUnavailable``."""
    check_same_frames(pred, gt)
    return {"l1": l1(pred, gt), "ssim": video_ssim(pred, gt), "psnr": psnr(pred, gt)}
