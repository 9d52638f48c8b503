"""Our networks on pip diffusers against the official code (tiny seeded models) and the official key sets."""
import json

import pytest
import torch
from diffusers import UNet2DConditionModel
from models_fixtures import landmark_input, load_tiny_models, tolerance
from shared_data import shared_path

from fye_core.models import build_models
from fye_core.models.checkpoints import official_to_ours
from fye_core.models.configs import SD15_UNET

NETWORKS = {"lmk_guider": "guider", "referencenet": "referencenet", "unet3d": "unet"}
REFERENCENET_UNUSED = ["conv_norm_out.weight", "conv_norm_out.bias", "conv_out.weight", "conv_out.bias"] + [
    f"up_blocks.3.attentions.2.transformer_blocks.0.{name}" for name in (
        "attn1.to_q.weight", "attn1.to_k.weight", "attn1.to_v.weight", "attn1.to_out.0.weight", "attn1.to_out.0.bias",
        "attn2.to_q.weight", "attn2.to_k.weight", "attn2.to_v.weight", "attn2.to_out.0.weight", "attn2.to_out.0.bias",
        "norm2.weight", "norm2.bias", "norm3.weight", "norm3.bias", "ff.net.0.proj.weight", "ff.net.0.proj.bias",
        "ff.net.2.weight", "ff.net.2.bias")]


@pytest.fixture(scope="module")
def full_size():
    return build_models()  # meta device: shapes only


@pytest.mark.parametrize("manifest", list(NETWORKS))
def test_every_official_key_maps_to_one_of_ours(full_size, manifest):
    official = json.loads(shared_path("reference", "manifests", f"{manifest}.json").read_text())
    network = NETWORKS[manifest]
    ours = {key: list(t.shape) for key, t in full_size.networks()[network].state_dict().items()}
    mapped = {}
    for key, shape in official.items():
        target = official_to_ours(network, key)
        if target is None:  # AnimateDiff's per-attention positional encodings: deterministic sinusoids
            assert key.endswith("pos_encoder.pe") and shape[:2] == [1, 32]
            continue
        assert target in ours, f"{key} -> {target} is not a parameter of ours"
        assert ours[target] == shape, f"{key}: official {shape}, ours {ours[target]}"
        assert target not in mapped, f"{key} and {mapped.get(target)} both map to {target}"
        mapped[target] = key
    uncovered = sorted(set(ours) - set(mapped))
    if network == "unet":
        # pip keeps one positional-encoding table per motion block (42 official copies -> 21), computed on load
        assert uncovered and all(key.endswith("pos_embed.pe") for key in uncovered) and len(uncovered) == 21
    else:
        assert uncovered == []
    if network == "referencenet":  # the official class lacks 22 keys of pip's UNet that it never uses; so do we
        with torch.device("meta"):
            pip = UNet2DConditionModel(**SD15_UNET)
        assert set(pip.state_dict()) - set(ours) == set(REFERENCENET_UNUSED)


def test_guider_matches_official(tiny, golden_tensors):
    with torch.no_grad():
        features = tiny.guider(landmark_input())
    torch.testing.assert_close(features, golden_tensors["a_lmk_fea"], rtol=0, atol=tolerance("a_lmk_fea"))


def reference_features(tiny, golden_tensors, batch_tokens):
    with torch.no_grad():
        context = tiny.referencenet.encode_context(batch_tokens)
        latents = golden_tensors["ref_latents"].expand(len(batch_tokens), -1, -1, -1)
        return tiny.referencenet.reference_features(latents, context, 0)


def test_referencenet_features_match_official(tiny, golden_tensors):
    tokens = golden_tensors["clip_tokens"]
    features = reference_features(tiny, golden_tensors, torch.cat([torch.zeros_like(tokens), tokens]))
    assert len(features) == 16
    for index, feature in enumerate(features):
        torch.testing.assert_close(feature, golden_tensors[f"b_ref_feat_{index:02d}"], rtol=0,
                                   atol=tolerance("b_ref_feat_00..15"))


def test_unet_cfg_forward_matches_official(tiny, golden_tensors):
    tokens = golden_tensors["clip_tokens"]
    uncond_cond = torch.cat([torch.zeros_like(tokens), tokens])
    cond_reference = [f[1:] for f in reference_features(tiny, golden_tensors, uncond_cond)]
    sample, timestep = golden_tensors["c_sample"], golden_tensors["c_timestep"]
    with torch.no_grad():
        landmarks = tiny.guider(landmark_input())[:, :, :8]
        context = tiny.unet.encode_context(uncond_cond)
        cfg = tiny.unet(sample.repeat(2, 1, 1, 1, 1), timestep, context, landmarks.repeat(2, 1, 1, 1, 1),
                        cond_reference, plain_items=1)
        no_reference = tiny.unet(sample.repeat(2, 1, 1, 1, 1), timestep, context, landmarks.repeat(2, 1, 1, 1, 1))
        cond_only = tiny.unet(sample, timestep, tiny.unet.encode_context(tokens), landmarks,
                              reference_features(tiny, golden_tensors, tokens))
    torch.testing.assert_close(cfg, golden_tensors["c_pred_cfg"], rtol=0, atol=tolerance("c_pred_cfg"))
    torch.testing.assert_close(no_reference, golden_tensors["c_pred_noref"], rtol=0, atol=tolerance("c_pred_noref"))
    torch.testing.assert_close(cond_only, golden_tensors["c_pred_nocfg_cond"], rtol=0,
                               atol=tolerance("c_pred_nocfg_cond"))


def test_too_many_frames_for_the_motion_modules_is_refused(tiny):
    sample = torch.zeros(1, 4, 33, 2, 2)
    with pytest.raises(ValueError, match="at most 32"):
        tiny.unet(sample, 0, torch.zeros(1, 1, 768))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights_and_compute_track_fp32(golden_tensors, dtype):
    models = load_tiny_models().to(dtype=dtype)
    tokens = golden_tensors["clip_tokens"]
    uncond_cond = torch.cat([torch.zeros_like(tokens), tokens])
    with torch.no_grad():
        reference_context, context = models.encode_context(uncond_cond)
        latents = golden_tensors["ref_latents"].repeat(2, 1, 1, 1)
        reference = [f[1:] for f in models.referencenet.reference_features(latents, reference_context, 0)]
        landmarks = models.guider(landmark_input().to(dtype))[:, :, :8]
        out = models.unet(golden_tensors["c_sample"].repeat(2, 1, 1, 1, 1), golden_tensors["c_timestep"], context,
                          landmarks.repeat(2, 1, 1, 1, 1), reference, plain_items=1)
    assert out.dtype == dtype and reference[0].dtype == dtype
    error = (out.float() - golden_tensors["c_pred_cfg"]).abs().max().item()
    assert error < 0.05 * golden_tensors["c_pred_cfg"].abs().max().item(), error


def test_clip_vision_manifest_is_the_image_encoder_we_build():
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from fye_core.models.image_encoder import SD_IMAGE_VARIATIONS_ENCODER_CONFIG

    official = json.loads(shared_path("reference", "manifests", "clip_vision.json").read_text())
    with torch.device("meta"):
        encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**SD_IMAGE_VARIATIONS_ENCODER_CONFIG))
    ours = {key: list(t.shape) for key, t in encoder.state_dict().items()}
    assert ours == official
