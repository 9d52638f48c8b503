"""Real MediaPipe (1.2.x) on the real inputs against the official outputs (mediapipe 0.10.14).

Tolerances are the ones ``golden/landmarks/README.md`` measured between the two versions.
"""
import hashlib
import os

import numpy as np
import pytest
from shared_data import PORTRAITS, VIDEOS, golden, shared_path

from fye_core.image import load_image, prepare_reference
from fye_core.landmarks import (
    align_motion,
    detect_face_track,
    detect_reference,
    render_expression_landmarks,
)
from fye_core.video import iter_video_frames, probe_video

LMK_XY, LMK_Z, ROTATION, TRANSLATION, BLENDSHAPES, MESH = 1e-4, 5e-4, 2e-4, 5e-3, 3e-3, 2e-3


def assert_track_matches(track, data):
    lmks = data["lmks"].reshape(track.landmarks.shape)
    np.testing.assert_allclose(track.landmarks[..., :2], lmks[..., :2], rtol=0, atol=LMK_XY)
    np.testing.assert_allclose(track.landmarks[..., 2], lmks[..., 2], rtol=0, atol=LMK_Z)
    trans = data["trans_mat"].reshape(track.transforms.shape)
    np.testing.assert_allclose(track.transforms[:, :3, :3], trans[:, :3, :3], rtol=0, atol=ROTATION)
    np.testing.assert_allclose(track.transforms[:, :3, 3], trans[:, :3, 3], rtol=0, atol=TRANSLATION)
    np.testing.assert_allclose(track.blendshapes, data["bs"].reshape(track.blendshapes.shape), rtol=0, atol=BLENDSHAPES)
    np.testing.assert_allclose(track.mesh, data["lmks3d"].reshape(track.mesh.shape), rtol=0, atol=MESH)


@pytest.mark.parametrize("case", list(PORTRAITS))
def test_portrait_detection_matches_official(detector, case):
    data = golden(f"portrait_{case}")
    if PORTRAITS[case] is not None:
        prepared = prepare_reference(load_image(shared_path("data", PORTRAITS[case])))
        np.testing.assert_array_equal(prepared, data["image"])
    track = detect_reference(data["image"], detector=detector)
    assert track.detected.all() and (track.width, track.height) == (512, 512)
    assert_track_matches(track, data)


@pytest.mark.parametrize("video", list(VIDEOS))
def test_stored_driving_frames_match_official(detector, video):
    data = golden(f"driving_{video}")
    index = data["frames_sample_index"]
    track = detect_face_track(data["frames_sample"], detector=detector)
    subset = {key: data[key][index] for key in ("lmks", "trans_mat", "bs", "lmks3d")}
    assert_track_matches(track, subset)


def test_end_to_end_on_lp_d0(detector):
    """Decode, detect, align and render lp_d0 onto the painting, against the official chain."""
    data = golden("driving_lp_d0")
    path = shared_path("data", VIDEOS["lp_d0"])
    frames = list(iter_video_frames(path))
    assert [hashlib.sha256(f.tobytes()).hexdigest() for f in frames] == list(data["frames_sha256"])
    info = probe_video(path)
    assert (info.width, info.height, info.fps, len(frames)) == (512, 512, 25.0, 78)

    driving = detect_face_track(frames, detector=detector, fps=info.fps)
    assert_track_matches(driving, data)
    reference = detect_reference(golden("portrait_painting_s9")["image"], detector=detector)
    expected = golden("align_painting_s9__lp_d0")
    motion = align_motion(reference, driving)
    assert len(motion) == 78 and motion.fps == 25.0
    # README: verts2d over the full chain on 1.2.2 detections within 0.05 px
    np.testing.assert_allclose(motion.points, expected["verts2d"], rtol=0, atol=0.05)
    images = render_expression_landmarks(motion.points[1:], 512, 512)
    drawn = images.any(-1) | expected["motions"].any(-1)
    mismatched = (images != expected["motions"]).any(-1)
    assert mismatched.sum() / drawn.sum() <= 0.01  # README: mismatched / drawn-pixel fraction <= 1 %


def test_temple_video_decodes_like_the_golden_decoder():
    """The HDR temple video's RGB depends on the FFmpeg build (README); ours must be the golden PyAV's."""
    data = golden("driving_fye_temple")
    frames = iter_video_frames(shared_path("data", VIDEOS["fye_temple"]))
    digests = [hashlib.sha256(f.tobytes()).hexdigest() for f in frames]
    assert digests == list(data["frames_sha256"])


def test_video_mode_tracks_close_to_image_mode(detector):
    frames = golden("driving_lp_d0")["frames_sample"]
    image_mode = detect_face_track(frames, detector=detector)
    video_mode = detect_face_track(frames, mode="video")
    assert video_mode.source == "mediapipe-video" and video_mode.detected.all()
    assert np.abs(video_mode.landmarks[..., :2] - image_mode.landmarks[..., :2]).mean() < 0.01


def test_starting_a_detector_is_quiet_but_errors_still_show(capfd, face_landmarker_model):
    """MediaPipe's native start-up log (glog info and warnings, TensorFlow Lite notes) is held back; an error
    line, or anything else written meanwhile, still reaches stderr."""
    from fye_core.landmarks import FaceLandmarkDetector
    from fye_core.landmarks.detect import _quiet_native_start

    capfd.readouterr()
    FaceLandmarkDetector(mode="image").close()
    assert capfd.readouterr().err == ""
    with _quiet_native_start():
        os.write(2, b"W0000 00:00:1.0 1 x.cc:1] noise\nINFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
                    b"E0000 00:00:1.0 1 x.cc:2] a real error\nsomething else\n")
    assert capfd.readouterr().err == "E0000 00:00:1.0 1 x.cc:2] a real error\nsomething else\n"
