"""Templates: ours round-trips without pickle; an official make_temple .npy needs explicit consent."""
import numpy as np
import pytest
from conftest import golden_track, write_official_template

from fye_core.errors import FYEInputError
from fye_core.landmarks import load_template, save_template


@pytest.fixture
def official_npy(tmp_path):
    return write_official_template(tmp_path / "lp_d0_mppose.npy")


def test_our_template_round_trips_without_pickle(tmp_path):
    track = golden_track("driving_lp_d0")
    track.detected[5] = False
    track.fps = 25.0
    path = save_template(track, tmp_path / "t.npz")
    with np.load(path, allow_pickle=False) as data:  # plain arrays only
        assert all(data[k].dtype != object for k in data.files)
    loaded = load_template(path)
    for name in ("landmarks", "mesh", "transforms", "blendshapes", "detected"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(track, name))
    assert (loaded.width, loaded.height, loaded.fps) == (512, 512, 25.0)


def test_official_npy_is_refused_without_consent(official_npy):
    with pytest.raises(FYEInputError, match="pickled object array.*allow"):
        load_template(official_npy)


def test_official_npy_loads_with_consent(official_npy):
    track = load_template(official_npy, allow_pickle=True)
    expected = golden_track("driving_lp_d0")
    assert len(track) == 78 and track.source == "official-template" and track.detected.all()
    np.testing.assert_array_equal(track.landmarks, expected.landmarks)
    np.testing.assert_array_equal(track.blendshapes, expected.blendshapes)


def test_foreign_files_are_clear_errors(tmp_path):
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(FYEInputError, match="is not an FYE template"):
        load_template(other)
    with pytest.raises(FYEInputError, match="template not found"):
        load_template(tmp_path / "missing.npz")
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip")
    with pytest.raises(FYEInputError, match="cannot read the template"):
        load_template(broken)
