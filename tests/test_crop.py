"""Face crop at the model's resolution and feathered paste-back, on the shared 720x1280 painting."""
import numpy as np
import pytest
from shared_data import shared_path

from fye_core.crop import crop_face, detect_face_crop, face_crop_box, paste_back, paste_mask
from fye_core.errors import FYEInputError
from fye_core.image import letterbox, load_image
from fye_core.landmarks import detect_reference


@pytest.fixture(scope="module")
def painting():
    image = load_image(shared_path("data", "portrait_painting_s9.jpg"))
    track = detect_reference(image)
    points = track.landmarks[0, :, :2] * [image.shape[1], image.shape[0]]
    return image, points


def test_the_crop_holds_every_landmark_with_the_margin(painting):
    image, points = painting
    assert image.shape[:2] == (1280, 720)
    crop = face_crop_box(points, 720, 1280, margin=0.5)
    assert (crop.out_width, crop.out_height) == (512, 512) and not crop.letterboxed
    inside = crop.from_source(points)
    face = inside.max(axis=0) - inside.min(axis=0)
    assert (inside.min(axis=0) > 0.2 * face.max()).all() and (inside.max(axis=0) < 512 - 0.2 * face.max()).all()
    np.testing.assert_allclose(crop.to_source(crop.from_source(points)), points, atol=1e-9)
    assert crop_face(image, crop).shape == (512, 512, 3)


def test_the_crop_box_is_stable(painting):
    image, points = painting

    def drift(crop, box_points):
        """Landmarks found again on the crop, against the ones the box was made from mapped into it (crop px)."""
        again = detect_reference(crop_face(image, crop)).landmarks[0, :, :2] * [crop.out_width, crop.out_height]
        return np.linalg.norm(again - crop.from_source(box_points), axis=1)

    first = face_crop_box(points, 720, 1280)
    assert drift(first, points).mean() > 1.0  # why the box is refined: full-image landmarks are off on the crop
    found = detect_face_crop(image)
    assert found.crop == face_crop_box(found.box_points, 720, 1280)  # the box is the one of those landmarks
    distances = drift(found.crop, found.box_points)
    assert distances.mean() <= 1.0 and np.median(distances) <= 1.0
    assert distances.mean() == pytest.approx(found.drift)
    np.testing.assert_array_equal(found.track.landmarks, detect_reference(crop_face(image, found.crop)).landmarks)


def test_paste_back_of_the_unanimated_crop_restores_the_portrait(painting):
    image, points = painting
    crop = face_crop_box(points, 720, 1280)
    feather = 24
    restored = paste_back(crop_face(image, crop)[None], image, crop, feather)[0]
    unblended = paste_back(crop_face(image, crop)[None], image, crop, feather=0)[0]
    mask = paste_mask(crop, feather)
    outside = mask == 0
    assert outside.mean() > 0.5 and (mask == 1).any()
    np.testing.assert_array_equal(restored[outside], image[outside])  # exactly, outside the box
    band = (mask > 0) & (mask < 1)
    low = np.minimum(image, unblended).astype(int) - 1
    high = np.maximum(image, unblended).astype(int) + 1
    assert ((restored[band] >= low[band]) & (restored[band] <= high[band])).all()  # a blend of the two
    np.testing.assert_array_equal(restored[mask == 1], unblended[mask == 1])


def test_a_box_as_large_as_the_image_is_the_official_letterbox(painting):
    image, points = painting
    crop = face_crop_box(points, 720, 1280, margin=10)
    assert crop.letterboxed
    np.testing.assert_array_equal(crop_face(image, crop), letterbox(image))
    corners = crop.from_source(np.array([[-0.5, -0.5], [719.5, 1279.5]]))
    np.testing.assert_allclose(corners, [[256 - 144 - 0.5, -0.5], [256 + 144 - 0.5, 511.5]])
    full = paste_back(crop_face(image, crop)[None], image, crop)[0]
    assert full.shape == image.shape and np.abs(full.astype(int) - image).mean() < 8


def test_bad_boxes_and_sizes_are_clear_errors(painting):
    image, points = painting
    with pytest.raises(FYEInputError, match="larger than the 720x1280 portrait; lower the margin"):
        face_crop_box(points, 720, 1280, margin=1.0, aspect=2.0)
    crop = face_crop_box(points, 720, 1280)
    with pytest.raises(FYEInputError, match="animated frames are 256x256 but the crop is 512x512"):
        paste_back(np.zeros((1, 256, 256, 3), np.uint8), image, crop)
    with pytest.raises(FYEInputError, match="the crop was made for 720x1280"):
        crop_face(image[:100], crop)
