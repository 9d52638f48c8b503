"""The ReferenceNet: a pip SD-1.5 UNet2DConditionModel that returns the reference features.

Its features are the ``norm1`` outputs of the 16 spatial transformer blocks (the input of their
self-attention), in forward order: down blocks, mid block, up blocks. It runs once per video at timestep 0.
"""
from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel
from torch import nn

from .compute_dtype import ComputeDtype
from .configs import CLIP_TOKEN_DIM


class _FeaturesComplete(Exception):
    """Raised by the last feature hook: nothing after it is needed."""


def transformer_blocks_in_forward_order(unet: nn.Module) -> list[nn.Module]:
    """The spatial BasicTransformerBlocks of a (2D or motion) UNet in forward order: down, mid, up.

    ``named_modules()`` lists the up blocks before the mid block, so it cannot be used for this.
    """
    levels = [*unet.down_blocks, unet.mid_block, *unet.up_blocks]
    return [block for level in levels for attention in getattr(level, "attentions", None) or []
            for block in attention.transformer_blocks]


class ReferenceNet(ComputeDtype, UNet2DConditionModel):
    """SD-1.5 UNet plus the official ``clip_fc`` (CLIP ViT-L tokens 1024 -> 768).

    The parts the official network never computes are removed, so loading needs no weights for them:
    ``conv_norm_out``, ``conv_out`` and the last transformer block's attention and feed-forward.
    """

    def __init__(self, **config):
        super().__init__(**config)
        self.clip_fc = nn.Linear(CLIP_TOKEN_DIM, config["cross_attention_dim"])
        self.conv_norm_out = self.conv_act = self.conv_out = None
        last = transformer_blocks_in_forward_order(self)[-1]
        last.attn1 = last.attn2 = last.norm2 = last.norm3 = last.ff = None

    @property
    def feature_norms(self) -> list[nn.Module]:
        return [block.norm1 for block in transformer_blocks_in_forward_order(self)]

    def encode_context(self, clip_tokens: torch.Tensor) -> torch.Tensor:
        """Cross-attention context from CLIP last_hidden_state tokens (zeros for the unconditional half)."""
        return self.clip_fc(clip_tokens.to(self.dtype))

    def reference_features(self, latents: torch.Tensor, context: torch.Tensor,
                           timestep: float | torch.Tensor = 0) -> list[torch.Tensor]:
        """The 16 reference features (B, h*w, C) of reference latents (B, 4, h, w), stopping after the last."""
        features: list[torch.Tensor] = []
        norms = self.feature_norms

        def capture(module, args, output):
            features.append(output)
            if len(features) == len(norms):
                raise _FeaturesComplete

        handles = [norm.register_forward_hook(capture) for norm in norms]
        try:
            super().forward(latents.to(self.dtype), timestep, encoder_hidden_states=context)
        except _FeaturesComplete:
            pass
        finally:
            for handle in handles:
                handle.remove()
        return features
