"""FYE's CLIP image tokens from ComfyUI's native CLIP_VISION model (core ``CLIPVisionLoader``).

ComfyUI's ``encode_image`` resizes with torch bicubic, which does not give the official pixels; so the official
preprocessing from ``fye_core`` feeds ComfyUI's own model, which ComfyUI loads, offloads and casts as usual.
"""
import comfy.model_management
import numpy as np
import torch

from ..fye_core.errors import FYEInputError
from ..fye_core.models.configs import CLIP_TOKEN_DIM
from ..fye_core.models.image_encoder import CLIP_IMAGE_SIZE, CLIP_TOKENS, clip_pixel_values


def clip_tokens_from_comfy(clip_vision, images_uint8: np.ndarray) -> torch.Tensor:
    """(B,257,1024) float32 ``last_hidden_state`` on the intermediate device, as the official pipeline takes it."""
    if clip_vision.image_size != CLIP_IMAGE_SIZE:
        raise FYEInputError(f"the CLIP vision model takes {clip_vision.image_size} px images; Follow-Your-Emoji "
                            "needs the 224 px ViT-L/14 sd-image-variations encoder")
    comfy.model_management.load_model_gpu(clip_vision.patcher)
    # float32 input as in encode_image: comfy's manual_cast ops then compute in float32 with the stored weights
    pixel_values = clip_pixel_values(images_uint8).to(device=clip_vision.load_device, dtype=torch.float32)
    with torch.no_grad():
        # CLIPVisionModelProjection returns (tokens, intermediate, image_embeds, projected); for CLIP (not SigLIP)
        # the tokens are the encoder output before post_layernorm, which only the pooled CLS token goes through
        tokens = clip_vision.model(pixel_values=pixel_values)[0]
    if tuple(tokens.shape[1:]) != (CLIP_TOKENS, CLIP_TOKEN_DIM):
        raise FYEInputError(f"the CLIP vision model gives tokens of shape {tuple(tokens.shape[1:])}; "
                            f"Follow-Your-Emoji needs ({CLIP_TOKENS}, {CLIP_TOKEN_DIM}) from the ViT-L/14 "
                            "sd-image-variations encoder (sd-image-variations-encoder-fp16.safetensors)")
    return tokens.float().to(comfy.model_management.intermediate_device())
