"""Our port of MediaPipe's face-geometry step against the official (patched mediapipe 0.10.14) outputs."""
import numpy as np
import pytest
from conftest import golden_track
from shared_data import PORTRAITS, VIDEOS, golden

from fye_core.landmarks import load_canonical_face_model, metric_face_geometry


@pytest.fixture(scope="module")
def model(face_landmarker_model):
    return load_canonical_face_model(str(face_landmarker_model))


def test_canonical_model_read_from_task_bundle(model):
    constants = golden("constants")
    np.testing.assert_array_equal(model.vertices, constants["canonical_vertices"])
    np.testing.assert_array_equal(model.uv, constants["canonical_uv"])
    np.testing.assert_array_equal(model.triangles + 1, constants["mesh_faces_1based"])
    np.testing.assert_array_equal(model.procrustes_ids, constants["procrustes_landmark_ids"])
    np.testing.assert_array_equal(model.procrustes_weights, constants["procrustes_weights"])
    assert model.input_source == int(constants["geometry_input_source"])


@pytest.mark.parametrize("name", [f"portrait_{p}" for p in PORTRAITS] + [f"driving_{v}" for v in VIDEOS])
def test_metric_mesh_and_pose_match_official(model, name):
    track = golden_track(name)
    mesh, transforms = metric_face_geometry(track.landmarks, track.width, track.height, model)
    # README: a port fed golden lmks reproduces lmks3d (<= 3.4e-5 cm measured) and trans_mat to <= 1e-4,
    # the translation (|t| up to ~70 cm, float32 in MediaPipe) to <= 1.4e-4 cm.
    np.testing.assert_allclose(mesh, track.mesh, rtol=0, atol=1e-4)
    np.testing.assert_allclose(transforms[:, :3, :3], track.transforms[:, :3, :3], rtol=0, atol=1e-4)
    np.testing.assert_allclose(transforms[:, :3, 3], track.transforms[:, :3, 3], rtol=0, atol=1.4e-4)
    # the pose is a similarity whose linear part maps the mesh back to the metric landmarks
    assert np.allclose(transforms[:, 3], [0, 0, 0, 1])
