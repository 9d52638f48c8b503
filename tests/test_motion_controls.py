"""Motion controls on real faces: expression strength per region, head-pose strengths, relative motion and
the One-Euro filter, all measured on the retargeted landmarks; the defaults stay the official transfer."""
import numpy as np
import pytest
from conftest import golden_track
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation
from shared_data import FACE_LANDMARKER, shared_path

from fye_core.errors import FYEInputError
from fye_core.eval import fastest_turn, lag_frames, landmark_jitter, still_frames
from fye_core.landmarks import (
    EXPRESSION_REGIONS,
    MotionControls,
    align_motion,
    detect_face_track,
    load_canonical_face_model,
    portrait_points,
)
from fye_core.landmarks.align import pose_matrices, project_points
from fye_core.landmarks.regions import partition_mesh
from fye_core.video import iter_video_frames, probe_video

MESH_REGIONS = ("brows", "eyelids", "mouth")
STILL_POSE = {"rotation": 0.0, "translation": 0.0}


@pytest.fixture(scope="module")
def tracks():
    return golden_track("portrait_painting_s9"), golden_track("driving_lp_d0")


@pytest.fixture(scope="module")
def canonical():
    return load_canonical_face_model(str(shared_path(*FACE_LANDMARKER)))


@pytest.fixture(scope="module")
def long_video(detector):
    """The long shared driving video detected frame by frame (real MediaPipe), with the painting's track."""
    path = shared_path("data", "lp_d11_driving_long.mp4")
    driving = detect_face_track(iter_video_frames(path), detector=detector, fps=probe_video(path).fps)
    return golden_track("portrait_painting_s9"), driving


def test_regions_partition_the_mesh_as_the_canonical_face_does(canonical):
    """The public region sets are the nearest-seed partition of MediaPipe's canonical face: every mesh point in
    exactly one region, the ten iris points the pupils."""
    made = partition_mesh(canonical.vertices.astype(np.float64))
    for name in MESH_REGIONS:
        np.testing.assert_array_equal(EXPRESSION_REGIONS[name], made[name])
    mesh = np.sort(np.concatenate([EXPRESSION_REGIONS[name] for name in MESH_REGIONS]))
    np.testing.assert_array_equal(mesh, np.arange(468))
    np.testing.assert_array_equal(EXPRESSION_REGIONS["pupils"], np.arange(468, 478))


def test_the_portrait_as_drawn_is_its_own_face(tracks):
    """``portrait_points`` (the transfer's drawing of the portrait, saved as ``reference``) is MediaPipe's own
    landmarks of the portrait to a hundredth of a pixel."""
    reference, _ = tracks
    own = portrait_points(reference)
    found = reference.landmarks[0, :, :2] * [reference.width, reference.height]
    assert np.abs(own - found).max() < 0.05


@pytest.mark.parametrize("region", ["brows", "eyelids", "pupils", "mouth"])
def test_region_at_zero_keeps_the_portraits_own_and_two_doubles_it(tracks, region):
    reference, driving = tracks
    points = EXPRESSION_REGIONS[region]
    official = align_motion(reference, driving, MotionControls(**STILL_POSE))
    own = official.reference[points]
    kept = align_motion(reference, driving, MotionControls(**STILL_POSE, **{region: 0.0}))
    assert np.abs(kept.points[:, points] - own).max() < 0.5  # px at 512 px, every frame
    # the transfer does move the region, so keeping it is a real change
    offsets = official.points[:, points] - own
    assert np.abs(offsets).max() > 3.0
    doubled = align_motion(reference, driving, MotionControls(**STILL_POSE, **{region: 2.0})).points[:, points] - own
    moving = np.linalg.norm(offsets, axis=(1, 2)) > 1.0
    ratio = np.linalg.norm(doubled, axis=(1, 2))[moving] / np.linalg.norm(offsets, axis=(1, 2))[moving]
    np.testing.assert_allclose(ratio, 2.0, rtol=0.01)
    # the other regions keep the official transfer (the pupils sit in the eyes the eyelids draw)
    others = np.setdiff1d(np.arange(478), np.concatenate([points, EXPRESSION_REGIONS["pupils"]])
                          if region == "eyelids" else points)
    np.testing.assert_array_equal(kept.points[:, others], official.points[:, others])


def test_all_regions_and_the_pose_at_zero_keep_the_portraits_face(tracks):
    reference, driving = tracks
    still = align_motion(reference, driving, MotionControls(expression=0.0, **STILL_POSE))
    assert np.abs(still.points - still.reference).max() < 0.5
    per_region = align_motion(reference, driving, MotionControls(brows=0.0, eyelids=0.0, pupils=0.0, mouth=0.0,
                                                                  **STILL_POSE))
    assert np.abs(per_region.points - still.reference).max() < 0.5


def _fitted_rotations(points: np.ndarray, reference, canonical) -> np.ndarray:
    """The head rotation (N, 3) Euler degrees that best poses the portrait's rigid face points (MediaPipe's
    Procrustes set) onto each frame's landmarks."""
    rigid = canonical.procrustes_ids
    mesh = reference.mesh[0][rigid]
    start = np.concatenate([Rotation.from_matrix(reference.transforms[0, :3, :3]).as_euler("xyz", degrees=True),
                            reference.transforms[0, :3, 3]])

    def fit(target):
        def residual(pose):
            return (project_points(mesh[None], pose_matrices(pose[None]), reference.width, reference.height)[0]
                    - target[rigid]).ravel()
        return least_squares(residual, start, x_scale=[1, 1, 1, 0.1, 0.1, 1]).x[:3]

    return np.stack([fit(frame) for frame in points])


def test_rotation_strength_zero_holds_the_head_rotation(tracks, canonical):
    """Measured on the drawn landmarks with the expression held (a rigid face, whose rotation a fit recovers to
    hundredths of a degree; a moving mouth would bias it by degrees); with the expression on, the pose each frame
    was drawn with."""
    reference, driving = tracks
    held = align_motion(reference, driving, MotionControls(rotation=0.0, expression=0.0))
    rotations = _fitted_rotations(held.points, reference, canonical)
    assert np.abs(rotations - rotations[0]).max() < 0.1  # degrees
    assert np.abs(held.points - held.reference).max() > 2.0  # while the head still moves across the frame
    followed = align_motion(reference, driving, MotionControls(expression=0.0))
    turning = _fitted_rotations(followed.points, reference, canonical)
    assert np.abs(turning - turning[0]).max() > 1.0
    np.testing.assert_allclose(turning, followed.poses[:, :3], atol=0.05)
    expressive = align_motion(reference, driving, MotionControls(rotation=0.0))
    assert np.abs(expressive.poses[:, :3] - expressive.poses[0, :3]).max() < 1e-9


def test_translation_strength_zero_holds_place_and_size(tracks):
    reference, driving = tracks
    held = align_motion(reference, driving, MotionControls(translation=0.0, expression=0.0, rotation=0.0))
    assert np.abs(held.points - held.reference).max() < 0.5
    moved = align_motion(reference, driving, MotionControls(expression=0.0, rotation=0.0))
    assert np.abs(moved.points - moved.reference).max() > 2.0


@pytest.mark.parametrize("relative", ["first", "neutral", 7])
def test_relative_motion_starts_from_the_portraits_own_face(tracks, relative):
    reference, driving = tracks
    motion = align_motion(reference, driving, MotionControls(relative=relative))
    frame = {"first": 0, "neutral": int(np.argmin(driving.blendshapes.sum(axis=1)))}.get(relative, relative)
    np.testing.assert_allclose(motion.points[frame], motion.reference, atol=1e-6)
    assert np.abs(motion.points - motion.reference).max() > 3.0  # and the other frames move


def test_relative_frame_out_of_the_clip_is_refused(tracks):
    reference, driving = tracks
    with pytest.raises(FYEInputError, match=f"driving frame {len(driving)}.*0 to {len(driving) - 1}"):
        align_motion(reference, driving, MotionControls(relative=len(driving)))


def test_defaults_are_the_official_transfer(tracks):
    reference, driving = tracks
    np.testing.assert_array_equal(align_motion(reference, driving, MotionControls()).points,
                                  align_motion(reference, driving).points)


@pytest.mark.parametrize("bad, message", [({"mouth": -1.0}, "mouth strength"), ({"relative": "last"}, "relative"),
                                          ({"filter": "kalman"}, "filter"),
                                          ({"filter": "one-euro", "smooth_window": 5}, "mean filter")])
def test_bad_controls_are_refused(bad, message):
    with pytest.raises(FYEInputError, match=message):
        MotionControls(**bad)


def test_one_euro_steadies_still_faces_without_lagging_fast_turns(long_video):
    reference, driving = long_video
    raw = align_motion(reference, driving)
    filtered = align_motion(reference, driving, MotionControls(filter="one-euro"))
    still = still_frames(raw.points, np.linalg.norm(np.ptp(raw.reference, axis=0)))
    assert len(still) >= 5
    assert landmark_jitter(filtered.points, still) <= 0.5 * landmark_jitter(raw.points, still)
    fastest = fastest_turn(driving.transforms)
    centre_x = raw.points[:, :468, 0].mean(axis=1)
    assert abs(lag_frames(centre_x, filtered.points[:, :468, 0].mean(axis=1), fastest)) <= 1
    # a plain low-pass as strong on the still face does lag there, so the measure can tell
    slow = align_motion(reference, driving, MotionControls(filter="one-euro", beta=0.0))
    assert abs(lag_frames(centre_x, slow.points[:, :468, 0].mean(axis=1), fastest)) >= 2
