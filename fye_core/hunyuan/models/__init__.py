"""HunyuanPortrait's networks with the key names of the released checkpoints."""
from .appearance import AppearanceEncoder, ImageProjector
from .motion import HeadExpression, HeadPose, IntensityAwareMotionRefiner
from .pose_guider import PoseGuider
from .unet import CFG_BRANCHES, HunyuanUNet, cfg_inputs, time_ids

__all__ = [
    "CFG_BRANCHES", "AppearanceEncoder", "HeadExpression", "HeadPose", "HunyuanUNet", "ImageProjector",
    "IntensityAwareMotionRefiner", "PoseGuider", "cfg_inputs", "time_ids",
]
