"""Faces MediaPipe misses: the canonical face fitted to a face box or five points, and the enlarged-crop pass."""
import numpy as np
import pytest
import skimage.data
from conftest import golden_track
from PIL import Image
from shared_data import shared_path
from test_cli import run_fye

from fye_core.crop import detect_face_crop
from fye_core.errors import FYEInputError
from fye_core.image import load_image
from fye_core.landmarks import (
    FacePlacement,
    align_motion,
    detect_reference,
    five_points,
    load_canonical_face_model,
    metric_face_geometry,
    save_template,
)
from fye_core.landmarks.align import LEFT_EYE_CONTOUR, RIGHT_EYE_CONTOUR
from fye_core.video import read_video

CAT_BOX = (70, 10, 320, 290)  # x, y, width, height in skimage's chelsea (451x300)
CAT_POINTS = [[170, 113], [317, 135], [262, 243], [232, 272], [292, 270]]
EYES_AND_MOUTH = np.concatenate([RIGHT_EYE_CONTOUR, LEFT_EYE_CONTOUR, [61, 291]])


@pytest.fixture(scope="module")
def cat():
    return skimage.data.chelsea()


def pixels(track):
    return track.landmarks[0, :, :2] * [track.width, track.height]


def test_the_cat_has_no_face_for_mediapipe_and_the_error_says_how_to_place_it(cat, detector):
    with pytest.raises(FYEInputError, match="no face was found in the cat") as error:
        detect_reference(cat, name="the cat", detector=detector)
    assert "--face-box X,Y,W,H" in str(error.value) and "--face-points" in str(error.value)
    assert "FYE Place Face" in str(error.value)


@pytest.mark.parametrize("placement", [FacePlacement(box=CAT_BOX), FacePlacement(points=CAT_POINTS)],
                         ids=["box", "points"])
def test_the_fitted_track_is_one_the_geometry_step_recovers(cat, detector, placement):
    track = detect_reference(cat, detector=detector, placement=placement)
    assert track.source == placement.kind and track.detected.all() and len(track) == 1
    assert track.landmarks.shape == (1, 478, 3) and not track.blendshapes.any()  # a neutral face
    model = load_canonical_face_model(str(detector.model_path))
    mesh, transform = metric_face_geometry(track.landmarks, track.width, track.height, model)
    np.testing.assert_allclose(mesh, track.mesh, atol=5e-3)  # cm
    np.testing.assert_allclose(transform, track.transforms, atol=5e-3)
    points = pixels(track)
    if placement.points is None:
        x, y, width, height = CAT_BOX
        low, high = points[:468].min(axis=0), points[:468].max(axis=0)
        np.testing.assert_allclose((low + high) / 2, [x + width / 2, y + height / 2], atol=0.5)
        assert np.isclose(high - low, [width, height], atol=0.5).any()  # touches the limiting sides
        assert (low >= np.subtract([x, y], 0.5)).all() and (high <= np.add([x + width, y + height], 0.5)).all()
    else:
        fitted = five_points(points)
        np.testing.assert_allclose(fitted.mean(axis=0), np.mean(CAT_POINTS, axis=0), atol=2.0)
        eye_distance = np.linalg.norm(np.subtract(CAT_POINTS[1], CAT_POINTS[0]))
        assert np.linalg.norm(fitted - CAT_POINTS, axis=1).mean() < 0.15 * eye_distance  # a human face on a cat


@pytest.mark.parametrize("portrait", ["portrait_painting_s9.jpg", "portrait_sculpture_s6.jpg"])
def test_five_points_of_a_detected_face_give_back_its_eyes_and_mouth(detector, portrait):
    image = load_image(shared_path("data", portrait))
    detected = pixels(detect_reference(image, detector=detector))
    fitted = pixels(detect_reference(image, detector=detector, placement=FacePlacement(points=five_points(detected))))
    distance = np.linalg.norm(fitted[EYES_AND_MOUTH] - detected[EYES_AND_MOUTH], axis=1)
    eye_distance = np.linalg.norm(five_points(detected)[1] - five_points(detected)[0])
    print(f"{portrait}: eye and mouth landmarks {distance.mean():.2f} px from the detected ones on average, "
          f"{distance.max():.2f} px at most (eyes {eye_distance:.0f} px apart)")
    assert distance.mean() < 4.0 and distance.max() < 10.0


def test_bad_placements_are_clear_errors(cat, detector):
    with pytest.raises(FYEInputError, match="positive size"):
        FacePlacement(box=(0, 0, 0, 10))
    with pytest.raises(FYEInputError, match="five"):
        FacePlacement(points=[[1, 2]] * 4)
    with pytest.raises(FYEInputError, match="eye on the image's left"):
        FacePlacement(points=[CAT_POINTS[1], CAT_POINTS[0], *CAT_POINTS[2:]])
    with pytest.raises(FYEInputError, match="is not inside the cat"):
        detect_reference(cat, name="the cat", detector=detector, placement=FacePlacement(box=(500, 0, 50, 50)))


def test_a_small_face_is_found_on_an_enlarged_crop(detector):
    sculpture = load_image(shared_path("data", "portrait_sculpture_s6.jpg"))
    scale = 160 / sculpture.shape[1]
    small = np.asarray(Image.fromarray(sculpture).resize((160, 160), Image.BICUBIC))
    canvas = np.full((1024, 1024, 3), 128, np.uint8)
    canvas[600:760, 700:860] = small
    assert not detector.detect(canvas)  # too small for MediaPipe's face detector in the whole image
    track = detect_reference(canvas, detector=detector)
    assert track.source == "mediapipe-enlarged-crop"
    expected = (pixels(detect_reference(sculpture, detector=detector)) + 0.5) * scale - 0.5 + [700, 600]
    assert np.linalg.norm(five_points(pixels(track)) - five_points(expected), axis=1).max() < 3.0


def test_fye_landmarks_animates_the_cat_inside_its_face_box(tmp_path, cat):
    portrait = tmp_path / "cat.png"
    Image.fromarray(cat).save(portrait)
    driving = save_template(golden_track("driving_lp_d0").select(np.arange(12)), tmp_path / "driving.npz")
    out = tmp_path / "cat.mp4"
    refused = run_fye("landmarks", "--portrait", portrait, "--driving", driving, "--out", out)
    assert refused.returncode == 1 and "--face-box" in refused.stderr
    assert not out.exists() and not out.with_suffix(".face.png").exists()
    for option in (["--face-box", ",".join(map(str, CAT_BOX))], ["--face-points", str(CAT_POINTS)]):
        done = run_fye("landmarks", "--portrait", portrait, "--driving", driving, "--out", out, "--no-template",
                       "--reference-mode", "keep", *option)
        assert done.returncode == 0, done.stderr
        assert "reference face: the canonical face fitted to the" in done.stderr
        frames = read_video(out)[0]
        assert frames.shape == (12, 296, 448, 3)  # keep mode: 451x300 centre-cropped to multiples of 8
        drawn = np.argwhere(frames.max(axis=(0, 3)) > 60)  # (row, column) of landmark strokes in any frame
        x, y, width, height = CAT_BOX
        top_left = np.array([y, x]) - [2, 1] - 0.1 * np.array([height, width])  # head motion moves the face a bit
        bottom_right = np.array([y + height, x + width]) - [2, 1] + 0.1 * np.array([height, width])
        assert len(drawn) > 500 and (drawn >= top_left).all() and (drawn <= bottom_right).all()
        preview = np.asarray(Image.open(out.with_suffix(".face.png")))  # the fitted face over the portrait
        assert preview.shape == (296, 448, 3) and (preview != cat[2:298, 1:449]).any(axis=2).sum() > 500


def test_aligned_motion_of_a_placed_face_stays_in_the_box(cat, detector):
    track = detect_reference(cat, detector=detector, placement=FacePlacement(box=CAT_BOX))
    motion = align_motion(track, golden_track("driving_lp_d0"))
    x, y, width, height = CAT_BOX
    centre = motion.points.mean(axis=1)
    assert len(motion) == len(golden_track("driving_lp_d0"))
    assert (np.abs(centre - [x + width / 2, y + height / 2]) < 0.1 * np.array([width, height])).all()
    inside = ((motion.points >= [x, y]) & (motion.points <= [x + width, y + height])).all(axis=2)
    assert inside.mean() > 0.95


def test_a_placed_face_is_cropped_and_fitted_again_on_the_crop(detector):
    painting = load_image(shared_path("data", "portrait_painting_s9.jpg"))
    placement = FacePlacement(points=five_points(pixels(detect_reference(painting, detector=detector))))
    found = detect_face_crop(painting, detector=detector, placement=placement)
    fitted = pixels(detect_reference(painting, detector=detector, placement=placement))
    np.testing.assert_array_equal(found.box_points, fitted)
    assert not found.crop.letterboxed and found.track.source == "face-points"
    mapped = found.crop.from_source(placement.points)  # the crop's own camera: fitted again, not mapped
    assert np.linalg.norm(five_points(pixels(found.track)) - mapped, axis=1).mean() < 4.0
