"""Attention processors and norms that give pip diffusers modules the official FYE behaviour."""
from __future__ import annotations

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import nn


class ReferenceAttnProcessor:
    """Spatial self-attention whose keys/values also see the ReferenceNet tokens of the same block.

    Official ``SpatialAtten``: ``attn1(q=n, kv=cat([n, ref], tokens))`` where ``n`` is the block's own
    ``norm1`` output and ``ref`` the ReferenceNet's ``norm1`` output, used as is. The first
    ``plain_rows`` rows of the batch (the unconditional half of CFG) attend to themselves only, which is
    what the official code keeps after overwriting them.
    """

    def __init__(self):
        self.base = AttnProcessor2_0()
        self.reference: torch.Tensor | None = None  # (items, tokens, C), one item or one per referenced item
        self.plain_rows = 0
        self.num_frames = 1

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, *args, **kwargs) -> torch.Tensor:
        if self.reference is None or encoder_hidden_states is not None:
            return self.base(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        plain, referenced = hidden_states[:self.plain_rows], hidden_states[self.plain_rows:]
        reference = self.reference.to(referenced.dtype)
        if len(reference) == 1:
            reference = reference.expand(len(referenced) // self.num_frames, -1, -1)
        reference = reference.repeat_interleave(self.num_frames, dim=0)
        out = self.base(attn, referenced, torch.cat([referenced, reference], dim=1), attention_mask, temb)
        if len(plain):
            out = torch.cat([self.base(attn, plain, None, attention_mask, temb), out])
        return out


class PerFrameGroupNorm(nn.GroupNorm):
    """GroupNorm of a (B, C, F, H, W) tensor with statistics per frame, as AnimateDiff's motion modules.

    pip's ``AnimateDiffTransformer3D`` normalises across all frames; the official weights were trained
    with per-frame statistics (max |diff| 0.185 in one module otherwise).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, frames = x.shape[:3]
        per_frame = x.transpose(1, 2).reshape(batch * frames, channels, *x.shape[3:])
        out = super().forward(per_frame)
        return out.reshape(batch, frames, channels, *x.shape[3:]).transpose(1, 2)
