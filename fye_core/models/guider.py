"""The landmark guider: expression-aware landmark frames -> features added after the UNet's conv_in."""
from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from torch.nn import functional as F


class LandmarkGuider(ModelMixin, ConfigMixin):
    """Eight 3x3 convolutions with SiLU between them, applied to every frame; /8 resolution out.

    Official ``Guider`` (key names ``conv_in``, ``blocks.0-5``, ``conv_out``); its ``InflatedConv3d``
    layers are ordinary Conv2d run per frame.
    """

    @register_to_config
    def __init__(self, conditioning_embedding_channels: int = 320, conditioning_channels: int = 3,
                 block_out_channels: tuple[int, ...] = (16, 32, 96, 256)):
        super().__init__()
        self.conv_in = nn.Conv2d(conditioning_channels, block_out_channels[0], 3, padding=1)
        blocks = []
        for c_in, c_out in zip(block_out_channels[:-1], block_out_channels[1:], strict=True):
            blocks += [nn.Conv2d(c_in, c_in, 3, padding=1), nn.Conv2d(c_in, c_out, 3, padding=1, stride=2)]
        self.blocks = nn.ModuleList(blocks)
        self.conv_out = nn.Conv2d(block_out_channels[-1], conditioning_embedding_channels, 3, padding=1)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """``frames``: (B, 3, F, H, W) RGB in [0, 1] -> (B, C, F, H/8, W/8)."""
        batch, _, num_frames = frames.shape[:3]
        x = frames.transpose(1, 2).flatten(0, 1)
        x = F.silu(self.conv_in(x))
        for block in self.blocks:
            x = F.silu(block(x))
        x = self.conv_out(x)
        return x.unflatten(0, (batch, num_frames)).transpose(1, 2)
