"""Motion alignment against the official FaceMeshAlign outputs, from golden inputs."""
import numpy as np
import pytest
from conftest import golden_track
from shared_data import PORTRAITS, VIDEOS, golden

from fye_core.errors import FYEInputError
from fye_core.landmarks import MotionControls, align_motion, render_expression_landmarks, smooth_poses
from fye_core.landmarks.align import driving_poses, neutral_frame

PAIRS = [(p, v) for p in PORTRAITS for v in VIDEOS]


@pytest.mark.parametrize("portrait,video", PAIRS)
def test_alignment_matches_official(portrait, video):
    expected = golden(f"align_{portrait}__{video}")
    reference, driving = golden_track(f"portrait_{portrait}"), golden_track(f"driving_{video}")
    assert neutral_frame(driving.blendshapes) == expected["min_bs_idx"]
    poses = driving_poses(driving.transforms, reference.transforms[0])
    # README: scipy 1.17.1 vs 1.10.1 differ by <= 2.8e-6 deg (from_matrix orthonormalises differently)
    np.testing.assert_allclose(poses[:, :3], expected["pose_arr"][:, :3], rtol=0, atol=1e-5)
    np.testing.assert_allclose(poses[:, 3:], expected["pose_arr"][:, 3:], rtol=0, atol=1e-9)

    motion = align_motion(reference, driving)
    assert len(motion) == len(driving) and motion.points.shape == (len(driving), 478, 2)
    # README: verts2d to <= 1e-5 px with scipy 1.17.1 (7.9e-6 measured)
    np.testing.assert_allclose(motion.points, expected["verts2d"], rtol=0, atol=1e-5)
    official = align_motion(reference, driving, drop_first_frame=True)
    np.testing.assert_array_equal(official.frame_index, np.arange(1, len(driving)))
    images = render_expression_landmarks(official.points, motion.width, motion.height)
    np.testing.assert_array_equal(images, expected["motions"])


def test_first_frame_is_kept_and_agrees_with_the_rest():
    """Our fix of the dropped frame: frame 0 is aligned like every other frame (the translation anchor)."""
    reference, driving = golden_track("portrait_cartoon_s7"), golden_track("driving_lp_d0")
    full = align_motion(reference, driving)
    dropped = align_motion(reference, driving, drop_first_frame=True)
    assert len(full) == len(driving) and len(dropped) == len(driving) - 1
    np.testing.assert_array_equal(full.points[1:], dropped.points)
    # frame 0's translation is the reference's own: its head sits where the reference's is
    np.testing.assert_allclose(driving_poses(driving.transforms, reference.transforms[0])[0, 3:],
                               reference.transforms[0, :3, 3])


def test_smoothing_is_off_by_default_and_a_centred_mean_when_on():
    poses = np.arange(20, dtype=np.float64).reshape(10, 2) ** 2
    np.testing.assert_array_equal(smooth_poses(poses, 1), poses)
    smoothed = smooth_poses(poses, 3)
    np.testing.assert_allclose(smoothed[4], poses[3:6].mean(axis=0))
    np.testing.assert_allclose(smoothed[0], poses[:2].mean(axis=0))
    reference, driving = golden_track("portrait_cartoon_s7"), golden_track("driving_fye_temple")
    jitter = lambda m: np.abs(np.diff(m.points[:, :468], n=2, axis=0)).mean()  # noqa: E731
    smoothed = align_motion(reference, driving, MotionControls(smooth_window=5))
    assert jitter(smoothed) < jitter(align_motion(reference, driving))


def test_reference_without_face_is_refused():
    reference, driving = golden_track("portrait_cartoon_s7"), golden_track("driving_lp_d0")
    reference.detected[:] = False
    with pytest.raises(FYEInputError, match="no face was found in the reference"):
        align_motion(reference, driving)
