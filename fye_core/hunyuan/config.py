"""HunyuanPortrait architectures and inference defaults.

The SVD-xt ``unet/config.json``, ``vae/config.json`` and ``scheduler/scheduler_config.json`` are embedded (only
their VAE weights are used, so nothing else of that repository is needed); the other networks are HunyuanPortrait's
own, at the sizes of the released checkpoints.
"""
from __future__ import annotations

from dataclasses import dataclass

# stabilityai/stable-video-diffusion-img2vid-xt unet/config.json
SVD_UNET = {
    "sample_size": 96,
    "in_channels": 8,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlockSpatioTemporal", "CrossAttnDownBlockSpatioTemporal",
                         "CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"],
    "up_block_types": ["UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal",
                       "CrossAttnUpBlockSpatioTemporal"],
    "block_out_channels": [320, 640, 1280, 1280],
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 768,
    "layers_per_block": 2,
    "cross_attention_dim": 1024,
    "transformer_layers_per_block": 1,
    "num_attention_heads": [5, 10, 20, 20],
    "num_frames": 25,
}
# stabilityai/stable-video-diffusion-img2vid-xt vae/config.json
SVD_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "latent_channels": 4,
    "sample_size": 768,
    "scaling_factor": 0.18215,
    "force_upcast": True,
}
# stabilityai/stable-video-diffusion-img2vid-xt scheduler/scheduler_config.json; stock diffusers
# EulerDiscreteScheduler.from_config gives HunyuanPortrait's sigmas and timesteps (its own subclass fails on new
# diffusers)
SVD_SCHEDULER = {
    "_class_name": "EulerDiscreteScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "set_alpha_to_one": False,
    "sigma_max": 700.0,
    "sigma_min": 0.002,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "timestep_type": "continuous",
    "trained_betas": None,
    "use_karras_sigmas": True,
}
# vit_large(patch_size=14, num_register_tokens=4, img_size=526, init_values=1.0,
# add_adapter_layer=[3, 7, 11, 15, 19, 23], visual_adapter_dim=384)
DINO = {
    "image_size": 526,
    "patch_size": 14,
    "embed_dim": 1024,
    "depth": 24,
    "num_heads": 16,
    "num_register_tokens": 4,
    "adapter_layers": [3, 7, 11, 15, 19, 23],
    "adapter_dim": 384,
}
IMAGE_PROJECTOR = {"in_features": 261, "out_features": 64}  # DINO tokens (cls, 4 registers, 16x16 patches) -> 64
POSE_GUIDER = {"conditioning_embedding_channels": 320, "conditioning_channels": 3,
               "block_out_channels": [16, 32, 96, 256]}
EXPRESSION = {"stem_channels": 64, "planes": [64, 128, 256, 512], "out_features": 512}
HEAD_POSE = {"stem_channels": 64, "planes": [64, 128, 256, 512]}
MOTION_REFINER = {"input_dim": 512, "output_dim": 1018, "num_queries": 64, "intensity_embed_dim": 768,
                  "width": 768, "layers": 6, "heads": 8}
IP_MOTION_SCALE = 1.0  # weight of the motion-token branch of every attn2


def default_config() -> dict:
    """The full-size architecture of the released checkpoints, one entry per network."""
    return {"unet": dict(SVD_UNET), "vae": dict(SVD_VAE), "dino": dict(DINO), "image_proj": dict(IMAGE_PROJECTOR),
            "pose_guider": dict(POSE_GUIDER), "expression": dict(EXPRESSION), "headpose": dict(HEAD_POSE),
            "motion_proj": dict(MOTION_REFINER)}


@dataclass(frozen=True)
class InferenceDefaults:
    """``config/hunyuan-portrait.yaml`` of the official release."""

    image_size: int = 512
    num_inference_steps: int = 25
    frames_per_window: int = 25  # n_sample_frames: also the chunk length of the intensity buckets
    overlap: int = 3
    shift_offset: int = 3
    pad_frames: int = 15
    fps: float = 12.5  # the micro-condition, passed as is (no fps - 1)
    motion_bucket_id: int = 0
    noise_aug_strength: float = 0.0
    i2i_noise_strength: float = 1.0
    ip_motion_scale: float = IP_MOTION_SCALE
    decode_chunk_size: int = 8
    appearance_guidance: float = 2.0  # g1: drop branch against uncond
    motion_guidance: float = 2.0  # g2: cond branch against drop
    seed: int = 72580


INFERENCE = InferenceDefaults()
