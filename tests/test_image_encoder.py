"""CLIP image tokens: the official preprocessing, the headless encoder, and ComfyUI's CLIP_VISION giving the same.

The encoder is a full-size sd-image-variations ViT-L/14 with random (seeded) weights. Its file is fp16, like
kijai's sd-image-variations-encoder-fp16.safetensors: ComfyUI keeps CLIP vision weights in fp16, so fp16-exact
weights let both sides compute in fp32 from identical numbers and any difference left is the code's.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers
from comfy_host import COMFYUI_DIR, REPO_ROOT
from safetensors.torch import save_file
from shared_data import PORTRAITS, shared_path

from fye_core.errors import FYEInputError
from fye_core.image import load_image, prepare_reference
from fye_core.models.image_encoder import (
    CLIP_STD,
    SD_IMAGE_VARIATIONS_ENCODER_CONFIG,
    clip_pixel_values,
    encode_clip_tokens,
    load_clip_image_encoder,
)

# The official code ran transformers 4.x, whose CLIPImageProcessor is PIL-based; transformers 5 renamed that one
# CLIPImageProcessorPil and made the torchvision one the default.
OfficialProcessor = getattr(transformers, "CLIPImageProcessorPil", transformers.CLIPImageProcessor)

SCRIPT = r"""
import importlib.util, json, os, sys
repo, weights, images_path, tokens_path = sys.argv[1:5]
sys.argv = [sys.argv[0], "--cpu"]
sys.path.insert(0, os.getcwd())
import comfy.options
comfy.options.enable_args_parsing()
import utils.extra_config  # before `nodes`/comfy.utils shadow the `utils` package
import comfy.clip_vision
import numpy as np

clip_vision = comfy.clip_vision.load(weights)
spec = importlib.util.spec_from_file_location("fye_pack", os.path.join(repo, "__init__.py"),
                                              submodule_search_locations=[repo])
pack = importlib.util.module_from_spec(spec)
sys.modules["fye_pack"] = pack
spec.loader.exec_module(pack)
from fye_pack.nodes.clip_vision import clip_tokens_from_comfy

tokens = clip_tokens_from_comfy(clip_vision, np.load(images_path))
np.save(tokens_path, tokens.numpy())
weight = clip_vision.model.vision_model.encoder.layers[0].mlp.fc1.weight
print("RESULT " + json.dumps({"dtype": str(tokens.dtype), "device": str(tokens.device),
                              "weight_dtype": str(weight.dtype)}))
"""


def _portraits() -> list[np.ndarray]:
    return [load_image(shared_path("data", name)) for name in PORTRAITS.values() if name]


@pytest.mark.filterwarnings("ignore:The given NumPy array is not writable")  # inside transformers' torchvision path
def test_pixel_values_match_the_official_processor():
    prepared = [prepare_reference(image) for image in _portraits()]
    non_square = _portraits()[1][13:500, 7:311]  # odd 487x304 crop of the 1280x720 painting
    for image in [*prepared, non_square]:
        ours = clip_pixel_values(image)
        assert ours.shape == (1, 3, 224, 224) and ours.dtype == torch.float32
        assert torch.equal(ours, OfficialProcessor()(images=image, return_tensors="pt").pixel_values)
        # transformers 5's torchvision default rounds a few pixels to the next grey level
        default = transformers.CLIPImageProcessor()(images=image, return_tensors="pt").pixel_values
        assert (ours - default).abs().max() <= 1.01 / 255 / min(CLIP_STD)
    batch = clip_pixel_values(np.stack(prepared))
    assert torch.equal(batch, OfficialProcessor()(images=prepared, return_tensors="pt").pixel_values)


def test_pixel_values_reject_non_uint8_rgb():
    with pytest.raises(ValueError, match="uint8 RGB"):
        clip_pixel_values(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="uint8 RGB"):
        clip_pixel_values(np.zeros((64, 64, 4), np.uint8))


@pytest.fixture(scope="module")
def random_encoder(tmp_path_factory):
    """A seeded full-size encoder saved as one fp16 safetensors file, and its tokens of the painting portrait."""
    torch.manual_seed(0)
    config = transformers.CLIPVisionConfig(**SD_IMAGE_VARIATIONS_ENCODER_CONFIG)
    model = transformers.CLIPVisionModelWithProjection(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:  # LayerNorms away from the identity, so taking the wrong one shows
                param.add_(torch.randn_like(param) * 0.1)
    state = {key: tensor.half().contiguous() for key, tensor in model.state_dict().items()}
    # files saved by transformers < 4.31 hold the derivable position_ids; both loaders must cope
    state["vision_model.embeddings.position_ids"] = torch.arange(257).unsqueeze(0)
    path = tmp_path_factory.mktemp("clip") / "sd-image-variations-encoder-fp16.safetensors"
    save_file(state, str(path))
    image = prepare_reference(load_image(shared_path("data", PORTRAITS["painting_s9"])))
    with torch.no_grad():
        model.half().float()
        expected = model(pixel_values=clip_pixel_values(image)).last_hidden_state
    del model, state
    return path, image, expected


def test_headless_tokens_from_a_single_file(random_encoder):
    path, image, expected = random_encoder
    encoder = load_clip_image_encoder(path)
    assert encoder.dtype == torch.float32 and not encoder.training
    tokens = encode_clip_tokens(encoder, clip_pixel_values(image))
    assert tokens.shape == (1, 257, 1024) and tokens.dtype == torch.float32
    torch.testing.assert_close(tokens, expected, rtol=0, atol=1e-6)


@pytest.mark.comfyui
def test_comfyui_clip_vision_gives_the_headless_tokens(random_encoder, tmp_path):
    path, image, expected = random_encoder
    encoder = load_clip_image_encoder(path)
    headless = encode_clip_tokens(encoder, clip_pixel_values(image))
    with torch.no_grad():
        post_layernorm = encoder.vision_model.post_layernorm(headless)
    del encoder
    images_path, tokens_path = tmp_path / "image.npy", tmp_path / "tokens.npy"
    np.save(images_path, image)
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(REPO_ROOT), str(path), str(images_path),
                           str(tokens_path)], cwd=COMFYUI_DIR, capture_output=True, text=True,
                          env=os.environ.copy(), timeout=300)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(line[len("RESULT "):])
    # ComfyUI stores the weights in fp16 and computes in fp32; the tokens come back fp32 on the CPU
    assert result == {"dtype": "torch.float32", "device": "cpu", "weight_dtype": "torch.float16"}
    comfy_tokens = torch.from_numpy(np.load(tokens_path))
    assert comfy_tokens.shape == (1, 257, 1024)
    torch.testing.assert_close(comfy_tokens, headless, rtol=0, atol=1e-4)
    assert (comfy_tokens - post_layernorm).abs().max() > 0.1  # the tokens before post_layernorm, not after


def test_missing_encoder_file_is_named(tmp_path):
    missing = tmp_path / "sd-image-variations-encoder-fp16.safetensors"
    with pytest.raises(FYEInputError, match="not found.*sd-image-variations-encoder-fp16.safetensors.*ViT-L/14"):
        load_clip_image_encoder(missing)


def test_wrong_weights_file_is_named(tmp_path):
    wrong = tmp_path / "vae.safetensors"
    save_file({"encoder.conv_in.weight": torch.zeros(128, 3, 3, 3)}, str(wrong))
    with pytest.raises(FYEInputError, match=r"vae\.safetensors does not hold the sd-image-variations CLIP image "
                                            r"encoder.*392 missing.*unexpected: encoder\.conv_in\.weight"):
        load_clip_image_encoder(wrong)


def test_transformers_folder_loads(tmp_path):
    torch.manual_seed(0)
    tiny = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64, projection_dim=16, num_hidden_layers=2,
                                         num_attention_heads=4, image_size=224, patch_size=14, hidden_act="quick_gelu")
    model = transformers.CLIPVisionModelWithProjection(tiny).eval()
    model.save_pretrained(tmp_path)
    pixels = clip_pixel_values(prepare_reference(_portraits()[0]))
    with torch.no_grad():
        expected = model(pixel_values=pixels).last_hidden_state.double()
    encoder = load_clip_image_encoder(tmp_path, dtype=torch.float64)
    torch.testing.assert_close(encode_clip_tokens(encoder, pixels), expected, rtol=0, atol=1e-5)


def test_folder_without_config_is_named(tmp_path):
    with pytest.raises(FYEInputError, match="(?s)not a transformers folder of the sd-image-variations.*config.json"):
        load_clip_image_encoder(tmp_path)
