"""Reference preparation and video I/O: sizes, errors, nothing half-written."""
from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image
from shared_data import shared_path

from fye_core.errors import FYEInputError
from fye_core.image import load_image, prepare_reference
from fye_core.video import frames_at, iter_video_frames, probe_video, read_video, seek_frames, write_video


def test_keep_mode_crops_the_original_pixels_to_multiples_of_8():
    image = load_image(shared_path("data", "portrait_sculpture_s6.jpg"))  # 725 x 725
    kept = prepare_reference(image, "keep")
    assert kept.shape == (720, 720, 3)
    np.testing.assert_array_equal(kept, image[2:722, 2:722])
    assert prepare_reference(image, "letterbox", 256).shape == (256, 256, 3)


def test_unreadable_or_missing_portrait_is_named(tmp_path):
    bad = tmp_path / "portrait.jpg"
    bad.write_text("not an image")
    with pytest.raises(FYEInputError, match=f"cannot read the portrait image {bad}"):
        load_image(bad)
    with pytest.raises(FYEInputError, match="portrait image not found"):
        load_image(tmp_path / "missing.png")


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :10] = 255
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    Image.fromarray(pixels).save(path, exif=exif, quality=100)
    assert load_image(path).shape == (40, 20, 3)


def test_video_round_trip_keeps_size_count_and_fps(tmp_path):
    frames = np.zeros((5, 33, 47, 3), np.uint8)
    frames[:, 10:20, 10:30] = (200, 60, 20)
    out = tmp_path / "v.mp4"
    assert write_video(out, iter(frames), 12.5) == 5
    info = probe_video(out)
    decoded, fps = read_video(out)
    assert (info.width, info.height, fps, len(decoded)) == (48, 34, 12.5, 5)  # odd sizes padded for yuv420p
    assert np.abs(decoded[:, :33, :47].astype(int) - frames).mean() < 3


def test_failed_write_leaves_nothing(tmp_path):
    def frames():
        yield np.zeros((16, 16, 3), np.uint8)
        raise RuntimeError("cancelled")

    with pytest.raises(RuntimeError, match="cancelled"):
        write_video(tmp_path / "out.mp4", frames(), 25)
    assert list(tmp_path.iterdir()) == []


def test_frames_at_seeks_to_the_frames_decoding_in_order_gives(tmp_path):
    """A variable-frame-rate H.264 file with a keyframe every 8 frames: frames found by seeking to their
    timestamps are those decoded in order at the same places."""
    frames, _ = read_video(shared_path("data", "lp_d0_driving.mp4"), max_frames=60)
    path = tmp_path / "variable_rate.mp4"
    durations = np.random.default_rng(0).integers(30, 50, len(frames))  # ms
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2] // 2, frames.shape[1] // 2, "yuv420p"
        stream.codec_context.gop_size = 8
        stream.codec_context.time_base = Fraction(1, 1000)
        for frame, pts in zip(frames[:, ::2, ::2], np.cumsum(durations) - durations[0], strict=True):
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            picture.pts, picture.time_base = int(pts), Fraction(1, 1000)
            container.mux(stream.encode(picture))
        container.mux(stream.encode())
    with av.open(str(path)) as container:
        assert sum(packet.is_keyframe for packet in container.demux(video=0)) >= 7
    timestamps = []
    in_order = list(iter_video_frames(path, timestamps=timestamps))
    assert len(in_order) == len(frames) and len(set(np.diff(timestamps))) > 1
    wanted = [3, 12, 30, 31, 32, 33, 57]
    sought = seek_frames(path, wanted, np.array(timestamps))
    assert sorted(sought) == wanted  # all found by seeking, none left to decoding from the start
    for found in (sought, frames_at(path, wanted[::-1], np.array(timestamps)), frames_at(path, wanted)):
        assert sorted(found) == wanted and all(np.array_equal(found[i], in_order[i]) for i in wanted)
