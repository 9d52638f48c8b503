"""HunyuanPortrait's denoising UNet: pip diffusers' SVD UNet with IP-Adapter attention on every ``attn2``.

What differs from stock diffusers, and how it is done here:

- the pose feature is added to the ``conv_in`` output (a forward hook);
- the cross-attention context is a pair of token sets per frame, image tokens for ``to_k``/``to_v`` and motion
  tokens for ``to_k_ip``/``to_v_ip`` (diffusers' ``IPAdapterAttnProcessor2_0``), not one CLIP token repeated per
  frame. The processors receive the pair from ``HunyuanUNet.forward``; diffusers' blocks, which know only one
  tensor context, are handed a tiny stand-in they pass along unused;
- the temporal layers attend to the frame mean of each window's tokens, where stock diffusers takes the first
  frame's.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers import UNetSpatioTemporalConditionModel
from diffusers.models.attention_processor import Attention, IPAdapterAttnProcessor2_0

from ..config import IP_MOTION_SCALE

CFG_BRANCHES = ("uncond", "drop", "cond")  # batch order of every official UNet call


class TokenPairAttnProcessor(IPAdapterAttnProcessor2_0):
    """diffusers' IP-Adapter attention (one IP branch: the motion tokens) on the context set in ``context``:
    ``(image_tokens, [motion_tokens])``, each (B*F, N, C)."""

    def __init__(self, attn: Attention, scale: float):
        super().__init__(attn.to_k.out_features, attn.to_k.in_features, scale=scale)
        self.context: tuple[torch.Tensor, list[torch.Tensor]] | None = None

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return super().__call__(attn, hidden_states, self.context)


class TemporalTokenPairAttnProcessor(TokenPairAttnProcessor):
    """The same attention for a temporal layer, whose query rows are ordered (item, position) and whose context
    is one window mean per item, (B, N, C).

    ``fold`` (the default) moves the positions of an item into the query's sequence axis so that every query
    attends to its item's context without copies; otherwise the context is repeated for each position as the
    official code does (H*W copies of the tokens: about 1.6 GB in fp16 per context for a three-branch batch at
    64x64 latents).
    """

    def __init__(self, attn: Attention, scale: float):
        super().__init__(attn, scale)
        self.fold = True

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        image, (motion,) = self.context
        items = len(image)
        if self.fold:
            folded = hidden_states.reshape(items, -1, hidden_states.shape[-1])
            return IPAdapterAttnProcessor2_0.__call__(self, attn, folded, self.context).reshape(hidden_states.shape)
        positions = len(hidden_states) // items
        repeated = image.repeat_interleave(positions, dim=0), [motion.repeat_interleave(positions, dim=0)]
        return IPAdapterAttnProcessor2_0.__call__(self, attn, hidden_states, repeated)


class HunyuanUNet(UNetSpatioTemporalConditionModel):
    """``UNetSpatioTemporalConditionModel`` whose 32 ``attn2`` layers carry ``processor.to_{k,v}_ip`` (the keys of
    ``unet.pth``) and take image and motion tokens; see the module docstring."""

    def __init__(self, **config):
        super().__init__(**config)
        self.spatial_processors: list[TokenPairAttnProcessor] = []
        self.temporal_processors: list[TemporalTokenPairAttnProcessor] = []
        for name, module in list(self.named_modules()):
            if isinstance(module, Attention) and name.endswith(".attn2"):
                temporal = ".temporal_transformer_blocks." in name
                processor = (TemporalTokenPairAttnProcessor if temporal else TokenPairAttnProcessor)(
                    module, IP_MOTION_SCALE)
                module.set_processor(processor)
                (self.temporal_processors if temporal else self.spatial_processors).append(processor)
        self._pose_feature: torch.Tensor | None = None
        self.conv_in.register_forward_hook(self._add_pose_feature)

    def set_motion_scale(self, scale: float) -> None:
        """Weight of the motion-token branch in every ``attn2`` (the official ``ip_motion_scale``, 1.0)."""
        for processor in [*self.spatial_processors, *self.temporal_processors]:
            processor.scale = [scale]

    def set_temporal_context_folding(self, enabled: bool) -> None:
        """Folded (default) or repeated temporal contexts: the same result, the repeated form as the official code
        computes it, for comparison."""
        for processor in self.temporal_processors:
            processor.fold = enabled

    def _add_pose_feature(self, module, args, output):
        if self._pose_feature is None:
            return output
        return output + self._pose_feature.to(output.dtype)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | float, image_tokens: torch.Tensor,
                motion_tokens: torch.Tensor, added_time_ids: torch.Tensor,
                pose_feature: torch.Tensor | None = None) -> torch.Tensor:
        """Predicts v for ``sample`` (B, F, 8, h, w): the scaled noisy latents and the condition latents.

        ``image_tokens``, ``motion_tokens``: (B*F, N, C), one set per frame (row = item * F + frame);
        ``added_time_ids``: (B, 3) fps, motion bucket id, noise augmentation, raw; ``pose_feature``: added to the
        ``conv_in`` output of every frame, (1 or B*F, C, h, w). Returns (B, F, 4, h, w).
        """
        batch, frames = sample.shape[:2]
        image_tokens, motion_tokens = image_tokens.to(self.dtype), motion_tokens.to(self.dtype)
        window_mean = [tokens.unflatten(0, (batch, frames)).mean(1) for tokens in (image_tokens, motion_tokens)]
        for processor in self.spatial_processors:
            processor.context = image_tokens, [motion_tokens]
        for processor in self.temporal_processors:
            processor.context = window_mean[0], [window_mean[1]]
        self._pose_feature = pose_feature
        try:
            stand_in = sample.new_zeros(batch, 1, 1, dtype=self.dtype)
            return super().forward(sample.to(self.dtype), timestep, stand_in, added_time_ids, return_dict=False)[0]
        finally:
            self._pose_feature = None
            for processor in [*self.spatial_processors, *self.temporal_processors]:
                processor.context = None

    def predict_branches(self, latents: torch.Tensor, timestep: torch.Tensor | float, cond_latent: torch.Tensor,
                         image_tokens: torch.Tensor, motion_tokens: torch.Tensor, added_time_ids: torch.Tensor,
                         pose_feature: torch.Tensor | None = None,
                         branches: Sequence[str] = CFG_BRANCHES) -> torch.Tensor:
        """The official three-branch CFG call for one window; returns v (B, F, 4, h, w), one row per branch.

        ``latents`` (1, F, 4, h, w): the noisy latents already divided by sqrt(sigma^2 + 1); ``cond_latent``
        (1, 4, h, w): the reference's VAE mode, unscaled; ``image_tokens`` (1, N, C); ``motion_tokens``
        (1, F, N, C); ``added_time_ids`` (1, 3) (see ``time_ids``). ``branches``: which of ``CFG_BRANCHES`` to
        run, in that order (all three by default, the official call; ("cond",) alone where guidance is skipped).
        """
        sample, image, motion = cfg_inputs(latents, cond_latent, image_tokens, motion_tokens)
        branches = tuple(branches)
        if branches != CFG_BRANCHES:
            rows = [CFG_BRANCHES.index(branch) for branch in branches if branch in CFG_BRANCHES]
            if not rows or len(rows) != len(branches) or rows != sorted(set(rows)):
                raise ValueError(f"branches must be some of {CFG_BRANCHES} in that order, got {branches}")
            frames = latents.shape[1]
            sample = sample[rows]
            image, motion = (tokens.unflatten(0, (len(CFG_BRANCHES), frames))[rows].flatten(0, 1)
                             for tokens in (image, motion))
        return self(sample, timestep, image, motion, added_time_ids.expand(len(branches), -1), pose_feature)


def cfg_inputs(latents: torch.Tensor, cond_latent: torch.Tensor, image_tokens: torch.Tensor,
               motion_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The official batch of three branches: sample (3, F, 8, h, w), image and motion tokens (3*F, N, C).

    uncond: no image tokens, no condition latents, no motion tokens; drop: image tokens and condition latents,
    no motion tokens; cond: everything.
    """
    frames = latents.shape[1]
    condition = cond_latent[:, None].to(latents).expand(-1, frames, -1, -1, -1)
    sample = torch.cat([latents.expand(len(CFG_BRANCHES), -1, -1, -1, -1),
                        torch.cat([torch.zeros_like(condition), condition, condition])], dim=2)
    image = image_tokens.expand(frames, -1, -1)
    motion = motion_tokens[0]
    no_image, no_motion = torch.zeros_like(image), torch.zeros_like(motion)
    return sample, torch.cat([no_image, image, image]), torch.cat([no_motion, no_motion, motion])


def time_ids(fps: float, motion_bucket_id: float, noise_aug_strength: float) -> torch.Tensor:
    """SVD's micro-conditions (1, 3) as HunyuanPortrait passes them: raw, fps not reduced by one."""
    return torch.tensor([[fps, motion_bucket_id, noise_aug_strength]])
