"""Reenactment metrics (EmojiBench style): self-reenactment L1/SSIM/PSNR (+ LPIPS/FVD from user-supplied
weights), cross-reenactment landmark accuracy and identity (ArcFace ONNX), HunyuanPortrait's motion
intensities, the steadiness of landmark streams, and ``fye eval``, which scores one generated video or a
benchmark folder."""
from .landmarks import (
    expression_intensity,
    fastest_turn,
    head_intensity,
    lag_frames,
    landmark_accuracy,
    landmark_jitter,
    motion_intensities,
    still_frames,
)
from .metrics import l1, psnr, ssim_frame, video_metrics, video_ssim
from .run import EvalOptions, EvalPair, PairScore, find_pairs, folder_report, score_pair, score_pairs
from .weights import MetricUnavailable

__all__ = [
    "EvalOptions", "EvalPair", "MetricUnavailable", "PairScore", "expression_intensity", "fastest_turn", "find_pairs",
    "folder_report", "head_intensity", "l1", "lag_frames", "landmark_accuracy", "landmark_jitter",
    "motion_intensities", "psnr", "score_pair", "score_pairs", "ssim_frame", "still_frames", "video_metrics",
    "video_ssim",
]
