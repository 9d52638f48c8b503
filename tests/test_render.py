"""Expression-aware rendering against the official FaceMeshVisualizer images (bit-exact)."""
import itertools

import numpy as np
import pytest
from shared_data import PORTRAITS, VIDEOS, golden

from fye_core.landmarks import render_expression_landmarks
from fye_core.landmarks.render import expression_connections


def _groups(edges, colours):
    """Consecutive same-colour runs as (colour, set of edges): drawing order only matters between runs."""
    return [(colour, {tuple(edges[i]) for i, _ in run})
            for colour, run in itertools.groupby(enumerate(map(tuple, colours)), key=lambda item: item[1])]


def test_connections_and_colours_are_the_official_ones():
    constants = golden("constants")
    edges, colours = expression_connections()
    assert _groups(edges, colours) == _groups(constants["draw_connections"], constants["draw_colors"])
    assert (constants["draw_thickness"] == 1).all()


@pytest.mark.parametrize("case", list(PORTRAITS))
def test_portrait_landmark_image_bit_exact(case):
    data = golden(f"portrait_{case}")
    image = render_expression_landmarks(data["lmks"], 512, 512, normalized=True)
    np.testing.assert_array_equal(image, data["lmk_image"])


@pytest.mark.parametrize("video", list(VIDEOS))
def test_driving_landmark_images_bit_exact(video):
    data = golden(f"driving_{video}")
    images = render_expression_landmarks(data["lmks"], 512, 512, normalized=True)
    np.testing.assert_array_equal(images, data["lmk_images"])


@pytest.mark.parametrize("portrait,video", [("painting_s9", "fye_temple"), ("sculpture_s6", "lp_d0")])
def test_aligned_points_render_to_official_motions(portrait, video):
    data = golden(f"align_{portrait}__{video}")
    images = render_expression_landmarks(data["verts2d"][1:], 512, 512)
    np.testing.assert_array_equal(images, data["motions"])


def test_only_expression_colours_are_drawn_and_points_outside_are_skipped():
    points = golden("portrait_astronaut")["lmks"].copy()
    image = render_expression_landmarks(points, 512, 512, normalized=True)
    allowed = {0, 10, 30, 50, 100, 120, 150, 180, 200, 220, 255}
    assert set(np.unique(image)) <= allowed and image.any()
    shifted = points.copy()
    shifted[:, 0] += 2.0  # every point outside the image: no lines, pupils clipped away by slicing
    assert not render_expression_landmarks(shifted, 512, 512, normalized=True).any()


def test_background_overlay_keeps_undrawn_pixels():
    data = golden("portrait_painting_s9")
    drawn = render_expression_landmarks(data["lmks"], 512, 512, normalized=True)
    over = render_expression_landmarks(data["lmks"], 512, 512, normalized=True, background=data["image"])
    mask = drawn.any(-1)
    np.testing.assert_array_equal(over[~mask], data["image"][~mask])
    np.testing.assert_array_equal(over[mask], drawn[mask])
