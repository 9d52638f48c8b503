"""Attention processors and norms that give pip diffusers modules the official FYE behaviour.

The processors handle the plain SD-1.5 attention layout (no group/spatial norm, no residual inside the
attention, no attention mask), which is what the spatial transformer blocks of these UNets use.
"""
from __future__ import annotations

import torch
from diffusers.models.attention_processor import Attention
from torch import nn
from torch.nn import functional as F


def _split_heads(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    return x.unflatten(-1, (attn.heads, -1)).transpose(1, 2)


def attend(attn: Attention, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
           chunk: int = 0) -> torch.Tensor:
    """Multi-head SDPA on projected (B, T, inner) query/key/value, then ``to_out``; ``chunk`` > 0 attends that
    many query tokens at a time, so that a kernel that writes out the attention matrix (SDPA's math path) holds
    a slice of it, not the whole."""
    query, key, value = _split_heads(attn, query), _split_heads(attn, key), _split_heads(attn, value)
    if 0 < chunk < query.shape[2]:
        out = torch.cat([F.scaled_dot_product_attention(part, key, value) for part in query.split(chunk, dim=2)], 2)
    else:
        out = F.scaled_dot_product_attention(query, key, value)
    return attn.to_out[1](attn.to_out[0](out.transpose(1, 2).flatten(2).to(query.dtype)))


class _ProjectionCache:
    """``to_k``/``to_v`` of one conditioning tensor, kept while the sampler passes that same tensor."""

    def __init__(self):
        self.source: torch.Tensor | None = None
        self.keys_values: tuple[torch.Tensor, torch.Tensor] | None = None

    def get(self, attn: Attention, source: torch.Tensor, enabled: bool,
            dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        if enabled and self.source is source:
            return self.keys_values
        source_in = source.to(dtype)  # the compute dtype: stored weights may be cast only inside their forward
        keys_values = attn.to_k(source_in), attn.to_v(source_in)
        self.source, self.keys_values = (source, keys_values) if enabled else (None, None)
        return keys_values


class ReferenceAttnProcessor:
    """Spatial self-attention whose keys/values also see the ReferenceNet tokens of the same block.

    Official ``SpatialAtten``: ``attn1(q=n, kv=cat([n, ref], tokens))`` where ``n`` is the block's own
    ``norm1`` output and ``ref`` the ReferenceNet's ``norm1`` output, used as is. The first
    ``plain_rows`` rows of the batch (the unconditional half of CFG) attend to themselves only, which is
    what the official code keeps after overwriting them. The reference's keys/values are projected once
    and reused for every step and window while ``cache`` is on (they are linear in the reference).
    """

    def __init__(self):
        self.reference: torch.Tensor | None = None  # (items, tokens, C): one item or one per referenced item
        self.plain_rows = 0
        self.num_frames = 1
        self.cache = True
        self.chunk = 0  # query tokens per attention call (0: all), the low-memory mode's
        self._projections = _ProjectionCache()

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, *args, **kwargs) -> torch.Tensor:
        query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        if self.reference is None:
            return attend(attn, query, key, value, self.chunk)
        rows = len(hidden_states) - self.plain_rows
        ref_key, ref_value = self._projections.get(attn, self.reference, self.cache, hidden_states.dtype)

        def per_row(x: torch.Tensor) -> torch.Tensor:
            x = x.to(query.dtype)
            if len(x) == 1:
                return x.expand(rows, -1, -1)
            return x.repeat_interleave(self.num_frames, dim=0)

        p = self.plain_rows
        out = attend(attn, query[p:], torch.cat([key[p:], per_row(ref_key)], 1),
                     torch.cat([value[p:], per_row(ref_value)], 1), self.chunk)
        if p:
            out = torch.cat([attend(attn, query[:p], key[:p], value[:p], self.chunk), out])
        return out


class ContextAttnProcessor:
    """Cross-attention to the CLIP context, whose keys/values are projected once per video.

    The context is the same for every frame of a batch item, so it is projected per item (not per
    frame) and the projections are reused for every step and window while ``cache`` is on.
    """

    def __init__(self):
        self.context: torch.Tensor | None = None  # (B, N, C), one per batch item
        self.num_frames = 1
        self.cache = True
        self.chunk = 0
        self._projections = _ProjectionCache()

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, *args, **kwargs) -> torch.Tensor:
        query = attn.to_q(hidden_states)
        if self.context is None:
            return attend(attn, query, attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states), self.chunk)
        key, value = self._projections.get(attn, self.context, self.cache, hidden_states.dtype)
        key, value = (x.to(query.dtype).repeat_interleave(self.num_frames, dim=0) for x in (key, value))
        return attend(attn, query, key, value, self.chunk)


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
