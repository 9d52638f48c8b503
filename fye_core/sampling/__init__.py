"""The FYE sampler: official DDIM schedule, diffusers' few-step solvers and a distilled student's consistency
sampler, context windows, Gaussian
tiling, progressive long video, guidance plans, the cross-step feature cache and the speed presets."""
from .cache import CachePlan, FeatureCache, feature_cache
from .presets import PRESETS, SpeedSettings, describe_presets, describe_speed, speed_settings
from .progressive import (
    KEYFRAME_CHOICES,
    ClipStore,
    KnownFrames,
    Progressive,
    even_keyframes,
    expression_keyframes,
    keyframe_count,
    sample_clip,
)
from .sampler import (
    FULL_RUN,
    Conditioning,
    Guidance,
    WindowedModel,
    guided_v,
    predictions,
    sample_gaussian_tiles,
    sample_windows,
)
from .schedule import OFFICIAL_SCHEDULER, Schedule, ddim_step, predicted_x0
from .solvers import (
    CONSISTENCY,
    SOLVERS,
    TEACHER_STEPS,
    Callback,
    ConsistencySolver,
    DDIMSolver,
    DiffusersSolver,
    Solver,
    make_solver,
    sample,
)
from .windows import (
    FUSE_METHODS,
    fuse_weights,
    gaussian_tile_offsets,
    gaussian_tile_weights,
    official_windows,
    overlapping_windows,
)

__all__ = [
    "KEYFRAME_CHOICES", "ClipStore", "KnownFrames", "Progressive", "even_keyframes",
    "expression_keyframes", "keyframe_count", "sample_clip",
    "CachePlan", "FeatureCache", "feature_cache", "PRESETS", "SpeedSettings", "describe_presets", "describe_speed",
    "speed_settings",
    "FULL_RUN", "SOLVERS", "CONSISTENCY", "TEACHER_STEPS", "ConsistencySolver", "DDIMSolver", "DiffusersSolver",
    "Solver", "make_solver", "sample", "Guidance",
    "WindowedModel", "predictions",
    "FUSE_METHODS", "OFFICIAL_SCHEDULER", "Callback", "Conditioning", "Schedule", "ddim_step", "fuse_weights",
    "gaussian_tile_offsets", "gaussian_tile_weights", "guided_v", "official_windows", "overlapping_windows",
    "predicted_x0", "sample_gaussian_tiles", "sample_windows",
]
