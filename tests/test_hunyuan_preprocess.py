"""HunyuanPortrait preprocessing, faces, window schedule and paste-back against the golden fixtures of the
official code (golden/hunyuanportrait: pre_*, e_*, f_*, calls.json), at the tolerances of tolerances.json."""
import hashlib
import json

import numpy as np
import pytest
import torch
from conftest import golden_track
from PIL import Image
from safetensors.numpy import load_file
from shared_data import PORTRAITS, shared_path

from fye_core.errors import FYEInputError
from fye_core.hunyuan.face import (
    MediaPipeFaces,
    YoloFaces,
    driving_faces,
    faces_from_track,
    held_frames,
    reference_face,
    yolo_input_size,
)
from fye_core.hunyuan.preprocess import (
    arcface_input,
    chunk_intensity_ids,
    dino_input,
    driving_crops,
    intensity_ids,
    motion_face_crop,
    paste_back,
    paste_mask,
    process_bbox,
    source_crop,
)
from fye_core.hunyuan.windows import padded_motion, step_windows


def golden_file(name: str):
    return shared_path("golden", "hunyuanportrait", name)


@pytest.fixture(scope="module")
def fixtures():
    return load_file(golden_file("fixtures.safetensors"))


@pytest.fixture(scope="module")
def images():
    with np.load(golden_file("inputs_u8.npz"), allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def calls():
    return json.loads(golden_file("calls.json").read_text())


@pytest.fixture(scope="module")
def painting(calls):
    """The source portrait as the official code reads it (PIL, RGB, no EXIF transpose)."""
    with Image.open(shared_path("data", PORTRAITS["painting_s9"])) as img:
        pixels = np.asarray(img.convert("RGB"))
    assert hashlib.sha256(pixels.tobytes()).hexdigest() == calls["preprocess"]["source_sha256_rgb"]
    return pixels


def test_process_bbox_cases_are_exact(calls):
    for case in calls["process_bbox_cases"]:
        box = process_bbox(case["bbox"], case["expand_radio"], case["height"], case["width"])
        assert list(box) == case["out"], case


def test_source_crop_is_exact(fixtures, images, calls, painting):
    box, crop = source_crop(painting, fixtures["pre_src_box_xywh"])
    assert list(box) == calls["preprocess"]["crop_bbox_xyxy"]
    np.testing.assert_array_equal(crop, images["src_crop_u8"])


def test_driving_crops_are_exact(fixtures, images):
    faces, poses = driving_crops(images["driving_frames_u8"], fixtures["pre_drv_kps"], fixtures["pre_drv_box_xywh"][0])
    np.testing.assert_array_equal(faces, images["motion_face_u8"])
    np.testing.assert_array_equal(poses, images["motion_pose_u8"])


def test_motion_face_crop_leaving_the_frame_is_zero_padded_exactly(fixtures, images):
    crop = motion_face_crop(images["driving_frames_u8"][0], fixtures["pre_edge_kps"], fixtures["pre_edge_bbox_xyxy"])
    np.testing.assert_array_equal(crop, images["edge_motion_face_u8"])
    assert (crop[:20, :20] == 0).all()


def test_dino_input(fixtures, images):
    found = dino_input(images["src_crop_u8"])
    assert found.dtype == torch.float32 and found.shape == (3, 224, 224)
    assert np.abs(found.numpy() - fixtures["pre_transformed_image"]).max() <= 1e-6


def test_arcface_alignment(fixtures, images):
    found = arcface_input(images["src_crop_u8"], fixtures["pre_crop_kps"])
    assert found.dtype == np.float64 and found.shape == (112, 112, 3)
    assert np.abs(found - fixtures["pre_arcface_image_f64"]).max() <= 1e-9


def test_intensity_ids_are_exact(fixtures, calls):
    landmarks = fixtures["e_lmk_all_78"]
    assert chunk_intensity_ids(landmarks).tolist() == calls["intensity"]["chunk25"]
    assert chunk_intensity_ids(landmarks, 4).tolist() == calls["intensity"]["chunk4"]
    for case in ("static", "big_motion", "single_frame", "translation_only"):
        assert list(intensity_ids(fixtures[f"e_case_{case}"])) == calls["intensity"][f"case_{case}"], case
    sequence = chunk_intensity_ids(fixtures["pre_drv_kps"], calls["motion"]["n_sample_frames"])
    assert sequence[:, :2].tolist() == calls["motion"]["chunks"]
    assert sequence[:, 2:].tolist() == calls["motion"]["intensity_ids_head_exp"]


def test_paste_mask(fixtures, calls):
    assert np.abs(paste_mask(61, 47) - fixtures["f_soft_mask_61x47"]).max() <= 1e-6
    width, height = calls["paste_back"]["mask_size_wh"]
    mask = paste_mask(width, height)
    assert list(mask.shape) == calls["paste_back"]["mask_shape"] and mask.dtype == np.float32
    assert hashlib.sha256(mask.tobytes()).hexdigest() == calls["paste_back"]["mask_sha256_float32"]


def test_paste_back_is_exact(images, calls, painting):
    x1, y1, x2, y2 = calls["paste_back"]["crop_bbox_xyxy"]
    generated = np.stack([images["src_crop_u8"][:, ::-1], images["src_crop_u8"]])
    pasted = paste_back(painting, generated, (x1, y1, x2, y2))
    assert pasted.shape == (2,) + painting.shape
    np.testing.assert_array_equal(pasted[0, y1:y2, x1:x2], images["f_pasted_region_u8"])
    outside = np.ones(painting.shape[:2], bool)
    outside[y1:y2, x1:x2] = False
    assert (pasted[:, outside] == painting[outside]).all()
    # the mask is 0 on the box's border: the generated crop meets the static source there
    np.testing.assert_array_equal(pasted[1, y1, x1:x2], painting[y1, x1:x2])


@pytest.mark.parametrize("run", ["d1", "d2"])
def test_window_schedule_is_exact(calls, run):
    settings = calls[run]
    for step in settings["schedule"]:
        windows = step_windows(settings["num_frames"], step["step"], settings["frames_per_batch"],
                               settings["overlap"], settings["shift_offset"])
        assert windows.tolist() == step["windows"]
        assert windows[:, 0].tolist() == step["index_start_after_shift"]


def test_default_windows_cover_every_frame_and_move_their_seams():
    num_frames = 100 + 2 * 15
    for step in range(25):
        windows = step_windows(num_frames, step)
        assert windows.shape == (-(-num_frames // 22), 25)
        assert set((windows % num_frames).ravel()) == set(range(num_frames))
    assert [step_windows(num_frames, step)[0, 0] for step in (0, 1, 8, 9)] == [0, -3, -24, -2]


def test_fade_pads_match_the_official_motion_tokens(fixtures, calls):
    tokens = fixtures["a_motion_tokens"][0]
    source, weight = padded_motion(len(tokens), calls["motion"]["pad_frames"])
    assert source.tolist() == [0, 0, 0, 1, 2, 3, 4, 4, 4] and weight.tolist() == [0, 0.5, 1, 1, 1, 1, 1, 1, 0.5]
    padded = tokens[source] * weight[:, None, None]
    assert np.abs(padded - fixtures["a_motion_tokens_padded"][0]).max() <= 2e-5


def test_mediapipe_faces_are_the_golden_detections(fixtures, calls):
    """The golden detections were derived from the golden MediaPipe landmarks; ours are the same mapping."""
    faces = faces_from_track(golden_track("driving_lp_d0"))
    assert faces.detected.all()
    assert np.abs(faces.points - fixtures["e_lmk_all_78"]).max() <= 1e-9
    assert np.abs(faces.boxes - fixtures["e_box_all_78_xywh"]).max() <= 1e-9
    assert chunk_intensity_ids(faces.points).tolist() == calls["intensity"]["chunk25"]


def check_on_the_face(points, box):
    """Eyes, nose and mouth inside the face box, in their order, eyes a plausible distance apart."""
    x, y, width, height = box
    assert ((points >= [x, y]) & (points <= [x + width, y + height])).all()
    left_eye, right_eye, nose, mouth_left, mouth_right = points
    assert left_eye[0] < nose[0] < right_eye[0] and mouth_left[0] < mouth_right[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])
    assert 0.3 < np.linalg.norm(right_eye - left_eye) / width < 0.6


def test_live_mediapipe_driving_faces(detector, fixtures, images):
    faces = driving_faces(images["driving_frames_u8"], MediaPipeFaces(detector))
    assert faces.detected.all() and faces.missing_frames == []
    assert np.abs(faces.points - fixtures["pre_drv_kps"]).max() < 0.05
    assert np.abs(faces.boxes - fixtures["pre_drv_box_xywh"]).max() < 0.05
    for points, box in zip(faces.points, faces.boxes, strict=True):
        check_on_the_face(points, box)


def test_reference_face_of_a_full_resolution_portrait(detector, fixtures, calls, painting):
    """The golden source face was found on the 288 x 512 letterbox, ours on the 720 x 1280 original: the crop
    boxes agree to a few pixels, and the face is found again on the crop."""
    reference = reference_face(painting, MediaPipeFaces(detector))
    assert np.abs(np.subtract(reference.crop_box, calls["preprocess"]["crop_bbox_xyxy"])).max() <= 10
    assert reference.crop.shape == (512, 512, 3) and "MediaPipe" in reference.how
    check_on_the_face(reference.source_face.points, reference.source_face.box)
    check_on_the_face(reference.face.points, reference.face.box)
    assert np.abs(reference.face.points - fixtures["pre_crop_kps"]).max() < 5
    aligned = arcface_input(reference.crop, reference.face.points)
    assert np.abs(aligned - fixtures["pre_arcface_image_f64"]).mean() < 0.05


def test_frames_without_a_face_hold_the_previous_face(detector, images):
    blank = np.zeros_like(images["driving_frames_u8"][0])
    frames = [blank, *images["driving_frames_u8"][:2], blank, blank, *images["driving_frames_u8"][2:]]
    faces = driving_faces(frames, MediaPipeFaces(detector))
    assert faces.missing_frames == [0, 3, 4]
    for frame, source in {0: 1, 3: 2, 4: 2}.items():
        np.testing.assert_array_equal(faces.points[frame], faces.points[source])
        np.testing.assert_array_equal(faces.boxes[frame], faces.boxes[source])
    assert "no face in 3 of 8 frames" in faces.report()
    with pytest.raises(FYEInputError, match="no face was found in any of the 2 driving frames"):
        driving_faces([blank, blank], MediaPipeFaces(detector))


def test_held_frames():
    assert held_frames(np.array([0, 0, 1, 0, 1, 1, 0], bool)).tolist() == [2, 2, 2, 2, 4, 5, 5]


def test_reference_without_a_face_names_the_input_and_the_fix(detector):
    with pytest.raises(FYEInputError, match="no face was found in the cat photo.*--face-box"):
        reference_face(np.full((256, 256, 3), 90, np.uint8), MediaPipeFaces(detector), name="the cat photo")


class StandInYoloFace(torch.nn.Module):
    """A TorchScript stand-in with the official detector's call signature. It checks the grids and returns,
    in input pixels, a small face (A), a lower-scoring copy of A (removed by NMS), a larger face (B) whose
    objectness is the input's mean red, and two rows under the confidence threshold; no face on a black input."""

    def forward(self, img: torch.Tensor, grids: list[torch.Tensor]) -> torch.Tensor:
        height, width = img.shape[2], img.shape[3]
        assert len(grids) == 3
        for level, grid in enumerate(grids):
            stride = 8 << level
            assert grid.shape == (1, 1, height // stride, width // stride, 2)
            assert bool(grid[0, 0, 1, 2, 0] == 2.0) and bool(grid[0, 0, 1, 2, 1] == 1.0)
        seen = float(img.max() > 0)
        red = float(img[0, 0].mean())
        faces = [(0.3, 0.3, 0.2, 0.9 * seen, 1.0), (0.31, 0.3, 0.2, 0.6 * seen, 1.0), (0.7, 0.6, 0.3, red, 0.9),
                 (0.5, 0.8, 0.1, 0.4, 1.0), (0.5, 0.5, 0.1, 0.9, 0.5)]
        rows = []
        for cx, cy, side, objectness, score in faces:
            box = torch.tensor([cx * width, cy * height, side * width, side * height])
            offsets = torch.tensor([[-0.2, -0.2], [0.2, -0.2], [0.0, 0.0], [-0.15, 0.25], [0.15, 0.25]])
            points = (torch.tensor([cx, cy]) + offsets * side) * torch.tensor([float(width), float(height)])
            rows.append(torch.cat([box, torch.tensor([objectness]), points.flatten(), torch.tensor([score])]))
        return torch.stack(rows)[None]


TORCHSCRIPT_DEPRECATED = "ignore:`torch.jit.* is deprecated:FutureWarning"  # the official detector's file format


@pytest.fixture(scope="module")
def yolo_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("yolo") / "yoloface_v5m.pt"
    torch.jit.save(torch.jit.script(StandInYoloFace()), str(path))
    return path


@pytest.mark.filterwarnings(TORCHSCRIPT_DEPRECATED)
def test_yolo_needs_explicit_consent_and_checks_its_hash(yolo_file):
    with pytest.raises(FYEInputError, match="TorchScript"):
        YoloFaces(yolo_file)
    with pytest.raises(FYEInputError, match="expected 00"):
        YoloFaces(yolo_file, allow_torchscript=True, expected_sha256="00" * 32)
    with pytest.raises(FYEInputError, match="not found.*LeonJoe13/Sonic"):
        YoloFaces(yolo_file.with_name("missing.pt"), allow_torchscript=True)
    digest = hashlib.sha256(yolo_file.read_bytes()).hexdigest()
    detector = YoloFaces(yolo_file, allow_torchscript=True, expected_sha256=digest.upper())
    assert detector.sha256 == digest and digest in detector.describe()


@pytest.mark.filterwarnings(TORCHSCRIPT_DEPRECATED)
def test_yolo_resize_rule_nms_rescale_and_largest_face(yolo_file):
    assert yolo_input_size(1280, 720) == (768, 416)
    assert yolo_input_size(512, 512) == (416, 416)
    image = np.zeros((1280, 720, 3), np.uint8)
    image[..., 0] = 204  # red: face B's objectness 0.8 only if the input is RGB in [0, 1]
    detector = YoloFaces(yolo_file, allow_torchscript=True)
    points, boxes, scores = detector.detect(image)
    np.testing.assert_allclose(scores, [0.9, 0.8 * 0.9], atol=1e-6)
    # in input pixels: centre (0.3, 0.3) x (416, 768), side 0.2 x (416, 768); rescaled by 720/416, 1280/768
    np.testing.assert_allclose(boxes[0], [0.2 * 720, 0.2 * 1280, 0.2 * 720, 0.2 * 1280], atol=1e-3)
    np.testing.assert_allclose(points[0, 2], [0.3 * 720, 0.3 * 1280], atol=1e-3)
    face = detector.find(image)
    np.testing.assert_allclose(face.box, [0.55 * 720, 0.45 * 1280, 0.3 * 720, 0.3 * 1280], atol=1e-3)
    np.testing.assert_allclose(face.points[0], [(0.7 - 0.06) * 720, (0.6 - 0.06) * 1280], atol=1e-3)
    with pytest.raises(FYEInputError, match="YOLOv5-face detector found no face in the black frame.*MediaPipe"):
        detector.find_reference(np.zeros((256, 256, 3), np.uint8), "the black frame")
