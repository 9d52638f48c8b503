"""Driving frames without a face are filled and flagged; a reference without a face is a clear error."""
import numpy as np
import pytest
from shared_data import golden

from fye_core.errors import FYEInputError
from fye_core.landmarks import align_motion, detect_face_track, detect_reference
from fye_core.landmarks.pipeline import describe_missing

HIDDEN = [0, 3, 4, 8]  # frames blacked out among the 9 stored temple frames (first, a run, last)


@pytest.fixture(scope="module")
def frames():
    frames = golden("driving_fye_temple")["frames_sample"].copy()
    frames[HIDDEN] = 0
    return frames


@pytest.fixture(scope="module")
def held(detector, frames):
    return detect_face_track(frames, detector=detector, fill="hold")


def test_hidden_frames_are_flagged_and_held(held, frames):
    assert len(held) == len(frames)
    np.testing.assert_array_equal(~held.detected, np.isin(np.arange(len(frames)), HIDDEN))
    assert held.missing_frames == HIDDEN
    for hidden, source in {0: 1, 3: 2, 4: 5, 8: 7}.items():  # nearest detected frame, earlier on ties
        np.testing.assert_array_equal(held.landmarks[hidden], held.landmarks[source])
        np.testing.assert_array_equal(held.transforms[hidden], held.transforms[source])
    assert "no face in 4 of 9 frames" in describe_missing(held)


def test_interpolation_blends_the_detected_neighbours(detector, frames, held):
    track = detect_face_track(frames, detector=detector, fill="interpolate")
    np.testing.assert_array_equal(track.detected, held.detected)
    # frames 3 and 4 lie between detected frames 2 and 5
    for hidden, weight in ((3, 1 / 3), (4, 2 / 3)):
        expected = (1 - weight) * track.landmarks[2] + weight * track.landmarks[5]
        np.testing.assert_allclose(track.landmarks[hidden], expected, atol=1e-12)
        rotation = track.transforms[hidden, :3, :3]
        scale = np.linalg.norm(rotation[:, 0])
        np.testing.assert_allclose(rotation.T @ rotation / scale**2, np.eye(3), atol=1e-9)
    np.testing.assert_array_equal(track.landmarks[0], track.landmarks[1])  # ends are held


def test_alignment_gives_one_motion_frame_per_driving_frame(detector, held):
    reference = detect_reference(golden("portrait_cartoon_s7")["image"], detector=detector)
    motion = align_motion(reference, held)
    assert len(motion) == len(held)
    np.testing.assert_array_equal(motion.detected, held.detected)
    assert np.isfinite(motion.points).all()


def test_neutral_frame_ignores_filled_frames(detector, frames):
    track = detect_face_track(frames, detector=detector)
    track.blendshapes[~track.detected] = -1.0  # a filled frame must never be picked as neutral
    reference = detect_reference(golden("portrait_cartoon_s7")["image"], detector=detector)
    expected = align_motion(reference, track.select(np.flatnonzero(track.detected)))
    motion = align_motion(reference, track)
    np.testing.assert_allclose(motion.points[track.detected][1:], expected.points[1:], atol=1e-9)


def test_reference_without_face_names_the_image(detector):
    with pytest.raises(FYEInputError, match="no face was found in the portrait cat.png"):
        detect_reference(np.zeros((512, 512, 3), np.uint8), name="the portrait cat.png", detector=detector)


def test_video_without_any_face_is_a_clear_error(detector):
    track = detect_face_track(np.zeros((3, 64, 64, 3), np.uint8), detector=detector)
    assert not track.detected.any()
    reference = detect_reference(golden("portrait_cartoon_s7")["image"], detector=detector)
    with pytest.raises(FYEInputError, match="no face was found in any frame of the driving video"):
        align_motion(reference, track)


def test_frames_of_different_sizes_are_refused(detector):
    frames = [np.zeros((64, 64, 3), np.uint8), np.zeros((32, 64, 3), np.uint8)]
    with pytest.raises(FYEInputError, match="frame 1 is 64x32"):
        detect_face_track(frames, detector=detector)
