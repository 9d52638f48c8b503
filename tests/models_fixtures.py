"""The tiny seeded official models of ``golden/models`` loaded through our real loader."""
import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from shared_data import shared_path

from fye_core.models import configs
from fye_core.models.checkpoints import load_official

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))  # the test model's recipe

TINY_FILES = {"guider": "lmk_guider.safetensors", "referencenet": "referencenet.safetensors",
              "unet": "unet.safetensors"}


def golden_models_path(name: str):
    return shared_path("golden", "models", name)


def tiny_config() -> dict:
    official = json.loads(golden_models_path("tiny_referencenet_config.json").read_text())
    guider = json.loads(golden_models_path("tiny_guider_config.json").read_text())
    return {"unet2d": configs.unet2d_config(official), "motion": dict(configs.MOTION),
            "guider": {key: guider[key] for key in configs.GUIDER}}


def load_tiny_models():
    files = {network: golden_models_path(name) for network, name in TINY_FILES.items()}
    return load_official(files, tiny_config()).to(dtype=torch.float32)


def fixtures() -> dict[str, torch.Tensor]:
    return load_file(str(golden_models_path("fixtures.safetensors")))


def tolerance(name: str) -> float:
    return json.loads(golden_models_path("tolerances.json").read_text())[name]["atol"]


def landmark_input() -> torch.Tensor:
    """(1, 3, 16, 128, 192) landmark frames in [0, 1], as the official cond_image_processor gives them."""
    with np.load(golden_models_path("inputs_u8.npz"), allow_pickle=False) as data:
        frames = data["lmk_u8"]
    return torch.from_numpy(frames).float().div(255).permute(3, 0, 1, 2)[None]


def tiny_vae():
    """The golden tiny VAE as a diffusers AutoencoderKL."""
    from diffusers import AutoencoderKL

    config = json.loads(golden_models_path("tiny_vae_config.json").read_text())
    vae = AutoencoderKL(**{key: value for key, value in config.items() if not key.startswith("_")})
    vae.load_state_dict(load_file(str(golden_models_path("tiny_vae.safetensors"))))
    return vae.float().eval()


def tiny_clip_encoder():
    """A seeded one-layer CLIP vision encoder with the real token width (1024) and count (257): the test model's."""
    from test_model import tiny_clip_encoder as seeded_clip_encoder

    return seeded_clip_encoder(7)


def write_tiny_models_dir(folder):
    """A models folder as `fye animate` expects it, with the tiny seeded networks."""
    from fye_core.models import save_fye

    folder.mkdir(parents=True, exist_ok=True)
    save_fye(load_tiny_models(), folder / "fye.safetensors")
    tiny_vae().save_pretrained(folder / "sd-vae-ft-mse")
    tiny_clip_encoder().save_pretrained(folder / "image_encoder")
    return folder


def write_random_sd_vae(path):
    """A full-size SD-1.5 VAE with seeded random weights (diffusers keys): ComfyUI only loads the real shape."""
    from diffusers import AutoencoderKL
    from safetensors.torch import save_file

    torch.manual_seed(11)
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4)
    save_file({key: tensor.half().contiguous() for key, tensor in vae.state_dict().items()}, str(path))
    return path


def write_random_clip_vision(path):
    """A full-size sd-image-variations CLIP image encoder with seeded random weights, fp16 like kijai's file."""
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from fye_core.models.image_encoder import SD_IMAGE_VARIATIONS_ENCODER_CONFIG

    torch.manual_seed(12)
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(**SD_IMAGE_VARIATIONS_ENCODER_CONFIG))
    save_file({key: tensor.half().contiguous() for key, tensor in model.state_dict().items()}, str(path))
    return path


def write_arcface_stand_in(path, features: int = 512, input_name: str = "data"):
    """A tiny seeded network on 112 x 112 faces exported to ONNX (``input_name``: Arc2Face's ``data``,
    insightface's ``input.1``); returns the torch network."""
    import warnings

    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 7, stride=4), torch.nn.ReLU(), torch.nn.Flatten(),
                                  torch.nn.Linear(8 * 27 * 27, features)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(network, (torch.zeros(1, 3, 112, 112),), str(path), dynamo=False,
                          input_names=[input_name])
    return network
