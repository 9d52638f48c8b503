"""Architectures of the Follow-Your-Emoji networks, as plain config dicts.

The official checkpoints are SD-1.5 (sd-image-variations) UNets, so one 2D UNet config describes both the
ReferenceNet and the spatial part of the denoising UNet; the motion modules are AnimateDiff v2's.
"""
from __future__ import annotations

# sd-image-variations-diffusers/unet/config.json: the architecture keys pip UNet2DConditionModel takes.
SD15_UNET = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "center_input_sample": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "only_cross_attention": False,
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "dual_cross_attention": False,
    "use_linear_projection": False,
    "upcast_attention": False,
}
# AnimateDiff mm_sd_v15_v2 as configured by the official infer.yaml.
MOTION = {"motion_num_attention_heads": 8, "motion_max_seq_length": 32, "use_motion_mid_block": True}
GUIDER = {"conditioning_embedding_channels": 320, "conditioning_channels": 3, "block_out_channels": [16, 32, 96, 256]}
CLIP_TOKEN_DIM = 1024  # width of the CLIP ViT-L/14 last_hidden_state that clip_fc projects
LATENT_CHANNELS = 4  # SD-1.5 VAE latents


def unet2d_config(official: dict) -> dict:
    """The pip UNet2DConditionModel kwargs of an official ReferenceNet or UNet3D config (2D or 3D names)."""
    config = {key: official[key] for key in SD15_UNET if key in official}
    config["down_block_types"] = [name.replace("3D", "2D") for name in config["down_block_types"]]
    config["up_block_types"] = [name.replace("3D", "2D") for name in config["up_block_types"]]
    return {**SD15_UNET, **config}


def unet3d_config(unet2d: dict, motion: dict = MOTION) -> dict:
    """pip UNetMotionModel kwargs for a 2D UNet config plus motion modules at every level and the mid block."""
    config = {key: value for key, value in unet2d.items()
              if key not in ("center_input_sample", "flip_sin_to_cos", "freq_shift", "only_cross_attention",
                             "attention_head_dim", "dual_cross_attention", "upcast_attention")}
    config["down_block_types"] = ["CrossAttnDownBlockMotion" if "CrossAttn" in name else "DownBlockMotion"
                                  for name in unet2d["down_block_types"]]
    config["up_block_types"] = ["CrossAttnUpBlockMotion" if "CrossAttn" in name else "UpBlockMotion"
                                for name in unet2d["up_block_types"]]
    config["num_attention_heads"] = unet2d["attention_head_dim"]  # SD-1.5's legacy name for the head count
    return {**config, **motion}
