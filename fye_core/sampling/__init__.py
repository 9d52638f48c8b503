"""The FYE sampler: official DDIM schedule, context windows, Gaussian tiling, progressive long video."""
from .progressive import (
    KEYFRAME_CHOICES,
    ClipStore,
    KnownFrames,
    Progressive,
    even_keyframes,
    expression_intensity,
    expression_keyframes,
    keyframe_count,
    sample_clip,
)
from .sampler import Callback, Conditioning, guided_v, sample_gaussian_tiles, sample_windows
from .schedule import OFFICIAL_SCHEDULER, Schedule, ddim_step, predicted_x0
from .windows import (
    FUSE_METHODS,
    fuse_weights,
    gaussian_tile_offsets,
    gaussian_tile_weights,
    official_windows,
    overlapping_windows,
)

__all__ = [
    "KEYFRAME_CHOICES", "ClipStore", "KnownFrames", "Progressive", "even_keyframes", "expression_intensity",
    "expression_keyframes", "keyframe_count", "sample_clip",
    "FUSE_METHODS", "OFFICIAL_SCHEDULER", "Callback", "Conditioning", "Schedule", "ddim_step", "fuse_weights",
    "gaussian_tile_offsets", "gaussian_tile_weights", "guided_v", "official_windows", "overlapping_windows",
    "predicted_x0", "sample_gaussian_tiles", "sample_windows",
]
