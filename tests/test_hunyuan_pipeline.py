"""The HunyuanPortrait pipeline from uint8 inputs against the official code (golden/hunyuanportrait: the motion
path from the driving frames, run d1 end to end, the chunked decode), and the optional ArcFace model."""
import sys

import numpy as np
import pytest
import torch
from hunyuan_models_fixtures import calls, fixtures, golden_path, load_tiny_hunyuan, tiny_config, tolerance
from models_fixtures import write_arcface_stand_in
from test_hunyuan_models import ROTATION, released_folder

from fye_core.errors import FYEInputError
from fye_core.hunyuan.arcface import ArcFace
from fye_core.hunyuan.face import DrivingFaces
from fye_core.hunyuan.pipeline import (
    HunyuanOptions,
    animate_frames,
    appearance_tokens,
    decode_frames,
    encode_driving,
    load_hunyuan_portrait,
    pad_motion,
    prepare_conditioning,
    sample,
    truncated_uint8,
)


@pytest.fixture(scope="module")
def tiny():
    return load_tiny_hunyuan()


@pytest.fixture(scope="module")
def golden():
    return fixtures()


@pytest.fixture(scope="module")
def images():
    with np.load(golden_path("inputs_u8.npz"), allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def driving_tokens(tiny, golden, images):
    """Motion tokens of the five golden driving frames and their stand-in detections, 4-frame chunks (the
    a_* settings)."""
    faces = DrivingFaces(golden["pre_drv_kps"].numpy(), golden["pre_drv_box_xywh"].numpy(), np.ones(5, bool))
    events = []
    tokens = encode_driving(tiny, iter(images["driving_frames_u8"]), faces, calls()["motion"]["n_sample_frames"],
                            events.append)
    return tokens, events


def assert_motion_close(ours, expected, name):
    """The rotation channels (degrees) at the file's atol, the others at 2e-5 (tolerances.json's note)."""
    torch.testing.assert_close(ours[..., ROTATION], expected[..., ROTATION], rtol=0, atol=tolerance(name))
    others = torch.ones(ours.shape[-1], dtype=torch.bool)
    others[ROTATION] = False
    torch.testing.assert_close(ours[..., others], expected[..., others], rtol=0, atol=2e-5)


def test_motion_tokens_from_the_driving_frames_match_official(golden, driving_tokens):
    tokens, events = driving_tokens
    assert tokens.shape == golden["a_motion_tokens"].shape[1:]
    assert_motion_close(tokens, golden["a_motion_tokens"][0], "a_motion_tokens(e2e)")
    assert [(e["done"], e["total"]) for e in events] == [(4, 5), (5, 5)]
    padded = pad_motion(tokens, calls()["motion"]["pad_frames"])
    assert_motion_close(padded, golden["a_motion_tokens_padded"], "a_motion_tokens_padded(e2e)")


def test_fewer_driving_frames_than_faces_is_an_input_error(tiny, golden, images):
    faces = DrivingFaces(golden["pre_drv_kps"].numpy(), golden["pre_drv_box_xywh"].numpy(), np.ones(5, bool))
    with pytest.raises(FYEInputError, match="5 driving faces but only 3 driving frames"):
        encode_driving(tiny, iter(images["driving_frames_u8"][:3]), faces, 4)


def d1_options() -> HunyuanOptions:
    run = calls()["d1"]
    return HunyuanOptions(steps=run["num_inference_steps"],
                          appearance_guidance=(run["min_guidance_scale1"], run["max_guidance_scale1"]),
                          motion_guidance=(run["min_guidance_scale2"], run["max_guidance_scale2"]),
                          window=run["frames_per_batch"], overlap=run["overlap"], shift_offset=run["shift_offset"],
                          pad_frames=calls()["motion"]["pad_frames"])


def test_run_d1_end_to_end_from_the_uint8_inputs_matches_official(tiny, golden, images, driving_tokens):
    image_tokens = appearance_tokens(tiny, images["src_crop_u8"], golden["b_arcface_embedding"])
    torch.testing.assert_close(image_tokens, golden["b_image_tokens"], rtol=0,
                               atol=tolerance("b_image_tokens(e2e from u8)"))
    options = d1_options()
    cond, start = prepare_conditioning(tiny, images["ref_small_u8"], image_tokens, driving_tokens[0], options)
    latents = sample(tiny, cond, start, golden["d1_noise"], options)
    torch.testing.assert_close(latents, golden["d1_final_latents"], rtol=0,
                               atol=tolerance("d1_final_latents(e2e from u8)"))


def test_chunked_decode_matches_official_and_keeps_its_chunks_when_trimming(tiny, golden, images):
    latents = golden["d2_final_latents"]
    frames = torch.cat(list(decode_frames(tiny, latents, range(3), chunk=2)))
    expected = (golden["d2_decoded_chunk2"][0].permute(1, 2, 3, 0) * 0.5 + 0.5).clamp(0, 1)
    torch.testing.assert_close(frames, expected, rtol=0, atol=tolerance("d2_decoded_chunk2"))
    written = truncated_uint8(frames).astype(int)
    assert np.abs(written - images["d2_decoded_u8"]).max() <= tolerance("d2_decoded_u8")
    # the pads are dropped after decoding chunks aligned to the clip's first frame: frame 1 of chunk [0, 2)
    (middle,) = decode_frames(tiny, latents, range(1, 2), chunk=2)
    assert torch.equal(middle, frames[1:2])


def test_one_frame_out_per_driving_frame_in_zero_to_one(tiny, golden, driving_tokens):
    options = HunyuanOptions(steps=2, window=4, overlap=1, shift_offset=1, pad_frames=2, decode_chunk=3)
    reference = np.full((64, 128, 3), 120, np.uint8)
    events = []
    chunks = list(animate_frames(tiny, reference, golden["b_image_tokens"], driving_tokens[0], options,
                                 events.append))
    assert [len(chunk) for chunk in chunks] == [1, 3, 1]  # chunks of the padded clip [0, 3), [3, 6), [6, 9)
    frames = torch.cat(chunks)
    assert frames.shape == (5, 64, 128, 3) and frames.dtype == torch.float32
    assert 0 <= frames.min() and frames.max() <= 1 and frames.std() > 0
    assert [e["event"] for e in events].count("step") == 2
    with pytest.raises(FYEInputError, match="the reference is 100x64; HunyuanPortrait needs both sides to be "
                                            "multiples of 64"):
        next(animate_frames(tiny, reference[:, :100], golden["b_image_tokens"], driving_tokens[0], options))


def test_options_are_checked():
    with pytest.raises(FYEInputError, match=r"the window overlap must be in \[0, 25\), got 25"):
        HunyuanOptions(overlap=25)


def test_arcface_gets_the_official_input_and_is_normalised(tmp_path, golden):
    network = write_arcface_stand_in(tmp_path / "arcface.onnx")
    aligned = golden["pre_arcface_image_f64"].numpy()
    embedding = ArcFace(tmp_path / "arcface.onnx")(aligned)
    with torch.no_grad():
        expected = network(torch.from_numpy(aligned).float().permute(2, 0, 1)[None])  # [0, 1], no mean/std
    torch.testing.assert_close(embedding, expected / expected.norm(), rtol=1e-4, atol=1e-6)
    assert embedding.shape == (1, 512)


def test_arcface_is_used_when_the_models_folder_has_it(tmp_path, monkeypatch):
    folder = released_folder(tmp_path / "models")
    assert load_hunyuan_portrait(folder, torch.float32, config=tiny_config()).arcface is None
    write_arcface_stand_in(folder / "arcface.onnx")
    assert load_hunyuan_portrait(folder, torch.float32, config=tiny_config()).arcface is not None
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as where it is not installed
    with pytest.raises(FYEInputError, match=r"arcface\.onnx needs onnxruntime: pip install "
                                            r"'follow-your-emoji\[arcface\]'"):
        load_hunyuan_portrait(folder, torch.float32, config=tiny_config())
