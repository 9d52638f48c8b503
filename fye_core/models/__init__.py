"""Follow-Your-Emoji networks on pip diffusers, and their checkpoints."""
from .checkpoints import (
    FYEModels,
    build_models,
    default_config,
    load_fye,
    load_motion_modules,
    load_official,
    load_official_dir,
    read_tensors,
    save_fye,
)
from .guider import LandmarkGuider
from .referencenet import ReferenceNet
from .unet3d import MotionUNet

__all__ = [
    "FYEModels", "LandmarkGuider", "MotionUNet", "ReferenceNet", "build_models", "default_config", "load_fye",
    "load_motion_modules", "load_official", "load_official_dir", "read_tensors", "save_fye",
]
