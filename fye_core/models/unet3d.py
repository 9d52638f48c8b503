"""The denoising UNet: pip UNetMotionModel with the official Follow-Your-Emoji conditioning.

Additions over pip: ``clip_fc`` for the CLIP context, landmark features added to the ``conv_in`` output,
ReferenceNet tokens in every spatial self-attention (``ReferenceAttnProcessor``) and per-frame GroupNorm
in the motion modules (``PerFrameGroupNorm``).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from diffusers import UNetMotionModel
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D
from torch import nn

from .attention import ContextAttnProcessor, PerFrameGroupNorm, ReferenceAttnProcessor
from .compute_dtype import ComputeDtype
from .configs import CLIP_TOKEN_DIM, LATENT_CHANNELS
from .referencenet import transformer_blocks_in_forward_order


class MotionUNet(ComputeDtype, UNetMotionModel):
    def __init__(self, **config):
        super().__init__(**config)
        self.clip_fc = nn.Linear(CLIP_TOKEN_DIM, config["cross_attention_dim"])
        for module in list(self.modules()):
            if isinstance(module, AnimateDiffTransformer3D):
                norm = module.norm
                module.norm = PerFrameGroupNorm(norm.num_groups, norm.num_channels, eps=norm.eps, affine=norm.affine)
        blocks = transformer_blocks_in_forward_order(self)
        self.reference_processors = [ReferenceAttnProcessor() for _ in blocks]
        self.context_processors = [ContextAttnProcessor() for _ in blocks]
        for block, reference, context in zip(blocks, self.reference_processors, self.context_processors, strict=True):
            block.attn1.set_processor(reference)
            block.attn2.set_processor(context)
        self._landmark_features: torch.Tensor | None = None
        self._keep_conditioning = False
        self.conv_in.register_forward_hook(self._add_landmark_features)

    def set_conditioning_cache(self, enabled: bool) -> None:
        """Reuse the projections of the reference tokens and CLIP context across calls (on by default)."""
        for processor in [*self.reference_processors, *self.context_processors]:
            processor.cache = enabled

    @contextmanager
    def conditioning_kept(self) -> Iterator[None]:
        """Keeps what ``forward`` hands the processors until the block ends: a backward pass through
        gradient-checkpointed blocks runs them again and needs the same reference and context."""
        self._keep_conditioning = True
        try:
            yield
        finally:
            self._keep_conditioning = False
            self._clear_conditioning()

    def _clear_conditioning(self) -> None:
        self._landmark_features = None
        for processor in self.reference_processors:
            processor.reference = None
        for processor in self.context_processors:
            processor.context = None

    @property
    def takes_masked_latents(self) -> bool:
        """Trained with the paper's masked latents: 4 noisy + 4 known latent channels + 1 mask channel."""
        return self.config.in_channels == 2 * LATENT_CHANNELS + 1

    @property
    def max_frames(self) -> int:
        """Longest clip one forward pass can take (the motion modules' positional encoding)."""
        return self.config.motion_max_seq_length

    def encode_context(self, clip_tokens: torch.Tensor) -> torch.Tensor:
        """Cross-attention context from CLIP last_hidden_state tokens (zeros for the unconditional half)."""
        return self.clip_fc(clip_tokens.to(self.dtype))

    def _add_landmark_features(self, module, args, output):
        if self._landmark_features is None:
            return output
        return output + self._landmark_features.to(output.dtype)

    def forward(self, sample: torch.Tensor, timestep, context: torch.Tensor,
                landmark_features: torch.Tensor | None = None, reference: list[torch.Tensor] | None = None,
                plain_items: int = 0, masked_latents: torch.Tensor | None = None) -> torch.Tensor:
        """Predicts v for ``sample`` (B, 4, F, h, w).

        ``context``: (B, N, 768) from ``encode_context``; ``landmark_features``: (B, 320, F, h, w) from the
        guider, added for every batch item; ``reference``: the 16 ReferenceNet features (R, h*w, C) of
        the items that use the reference, R = 1 (shared) or ``B - plain_items``; the first
        ``plain_items`` items (CFG's unconditional half) attend without the reference. ``masked_latents``
        (B, 5, F, h, w): the known latents (zero where unknown) and a mask (1 where known), for models with
        ``takes_masked_latents`` (none known when omitted).
        """
        batch, _, frames = sample.shape[:3]
        if self.takes_masked_latents:
            if masked_latents is None:
                masked_latents = sample.new_zeros(batch, LATENT_CHANNELS + 1, *sample.shape[2:])
            sample = torch.cat([sample, masked_latents.to(sample)], dim=1)
        elif masked_latents is not None:
            raise ValueError("this UNet has 4 input channels; masked latents need a model trained with them")
        if frames > self.max_frames:
            raise ValueError(f"{frames} frames in one pass, but the motion modules take at most {self.max_frames}")
        if landmark_features is not None:
            self._landmark_features = landmark_features.transpose(1, 2).flatten(0, 1)
        for index, processor in enumerate(self.reference_processors):
            processor.reference = None if reference is None else reference[index]
            processor.plain_rows = plain_items * frames
            processor.num_frames = frames
        context = context.to(self.dtype)
        for processor in self.context_processors:
            processor.context, processor.num_frames = context, frames
        try:
            # the processors take the context per item; the blocks only pass this on
            per_frame = context.repeat_interleave(frames, dim=0)
            return super().forward(sample.to(self.dtype), timestep, encoder_hidden_states=per_frame).sample
        finally:
            if not self._keep_conditioning:
                self._clear_conditioning()
