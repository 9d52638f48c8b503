"""HunyuanPortrait's pose guider: FYE's landmark guider architecture (same layers and key names)."""
from __future__ import annotations

import torch

from ...models.guider import LandmarkGuider


class PoseGuider(LandmarkGuider):
    def constant_feature(self, height: int, width: int) -> torch.Tensor:
        """The feature of an all-black pose map, (1, C, height/8, width/8), added to every frame's ``conv_in`` output.

        The released preprocessing draws no pose (its DWPose stand-in returns a black image), so this one map,
        zero-padding borders included, is what the UNet was conditioned with.
        """
        parameter = self.conv_in.weight
        black = torch.zeros(1, self.config.conditioning_channels, 1, height, width, dtype=parameter.dtype,
                            device=parameter.device)
        return self(black)[:, :, 0]
