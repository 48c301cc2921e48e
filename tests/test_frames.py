"""Behaviour of frame_service.frames: photo preparation, video frame extraction, frame choice."""

import io
import itertools
from dataclasses import replace
from pathlib import Path

import av
import pytest
from PIL import Image, ImageChops, ImageCms, ImageStat

from frame_service import config
from frame_service.frame_choice import frame_times, pick_scene_frames
from frame_service.frames import (
    VIDEO_FRAME_BOUNDS,
    FrameBounds,
    MediaError,
    Picture,
    UnprocessableMedia,
)
from frame_service.images import prepare_image
from frame_service.video import DecodeStats, extract_video
from tests import media

BOUNDS = FrameBounds()
RED = (220, 30, 30)
GREEN = (30, 200, 60)
BLUE = (30, 60, 220)
YELLOW = (230, 210, 40)
# APP1..APP15 (EXIF, XMP, ICC, MPF, Photoshop...) and COM.
_METADATA_MARKERS = set(range(0xE1, 0xF0)) | {0xFE}


def clean_jpeg(picture: Picture) -> Image.Image:
    """Assert picture is a metadata-free RGB baseline JPEG of its stated size; return it decoded."""
    markers = media.jpeg_markers(picture.jpeg)
    assert 0xC0 in markers, "not a baseline JPEG"
    assert not _METADATA_MARKERS & set(markers)
    img = media.open_jpeg(picture.jpeg)
    assert img.mode == "RGB"
    assert img.size == (picture.width, picture.height)
    assert not img.getexif()
    return img


def mean_color(img: Image.Image, box: tuple[int, int, int, int]) -> tuple[float, ...]:
    return tuple(ImageStat.Stat(img.crop(box)).mean)


def close_to(actual: tuple[float, ...], expected: tuple[int, ...], tolerance: float = 25) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


def picture_color(picture: Picture) -> tuple[float, ...]:
    """Mean colour of the bottom-right quarter, away from write_video's drifting square."""
    img = media.open_jpeg(picture.jpeg)
    return mean_color(img, (img.width // 2, img.height // 2, img.width, img.height))


def seconds(picture: Picture) -> float:
    """The timestamp of a video picture; extract_video gives every picture one."""
    assert picture.timestamp is not None, "a video picture without a timestamp"
    return picture.timestamp


def without_durations(path: Path) -> Path:
    """Zero the durations an MP4's movie, track and media headers state, as some writers leave them."""
    data = bytearray(path.read_bytes())
    # Version-0 boxes: the duration follows version/flags, two times and the timescale
    # (in tkhd, the track id and a reserved word).
    for box, offset in ((b"mvhd", 16), (b"tkhd", 20), (b"mdhd", 16)):
        start = data.index(box) + len(box) + offset
        data[start : start + 4] = bytes(4)
    path.write_bytes(bytes(data))
    return path


# Photos


@pytest.mark.parametrize(
    ("size", "expected"),
    [((4000, 3000), (720, 540)), ((3000, 4000), (540, 720)), ((10000, 800), (960, 77))],
)
def test_big_jpeg_is_shrunk_to_the_bounds(tmp_path, size, expected):
    picture = prepare_image(media.write_jpeg(tmp_path / "big.jpg", size), BOUNDS)
    assert (picture.width, picture.height) == expected
    assert close_to(mean_color(clean_jpeg(picture), (0, 0, *expected)), (200, 40, 40), 8)


def test_a_1080p_photo_is_sent_within_a_third_of_its_full_image_tokens(tmp_path):
    photo = media.write_jpeg(tmp_path / "hd.jpg", (1920, 1080))
    picture = prepare_image(photo, BOUNDS)
    assert (picture.width, picture.height) == (960, 540)
    # gpt-4.1-mini: 1.62 tokens per 32 px patch; sent whole it would be 2,488 (capped).
    patches = -(-picture.width // 32) * -(-picture.height // 32)
    assert patches * 1.62 <= 829
    assert len(picture.jpeg) <= 310_000


def test_photos_and_video_frames_have_their_own_size_bounds():
    defaults = config.load({})
    assert (defaults.bounds.max_side, defaults.bounds.short_side) == (960, 540)
    assert (defaults.video_bounds.max_side, defaults.video_bounds.short_side) == (768, 432)
    chosen = config.load(
        {
            "IMGSTORY_VIDEO_FRAME_MAX_SIDE": "1280",
            "IMGSTORY_VIDEO_FRAME_SHORT_SIDE": "720",
            "IMGSTORY_FRAME_JPEG_QUALITY": "70",
        }
    )
    # Quality and safety limits are shared; only the size is the video's own.
    assert chosen.video_bounds == replace(chosen.bounds, max_side=1280, short_side=720)
    assert chosen.bounds.short_side == 540


def test_big_png_is_shrunk_to_the_bounds(tmp_path):
    picture = prepare_image(media.write_png(tmp_path / "big.png", (4000, 3000), "RGB"), BOUNDS)
    assert (picture.width, picture.height) == (720, 540)
    assert picture.timestamp is None


def test_small_photo_is_not_upscaled(tmp_path):
    picture = prepare_image(media.write_jpeg(tmp_path / "small.jpg", (300, 200)), BOUNDS)
    assert (picture.width, picture.height) == (300, 200)


def test_custom_bounds_are_honoured(tmp_path):
    path = media.write_jpeg(tmp_path / "photo.jpg", (640, 480))
    picture = prepare_image(path, FrameBounds(max_side=100, short_side=1000, jpeg_quality=50))
    assert (picture.width, picture.height) == (100, 75)


@pytest.mark.parametrize(
    "changes", [{"jpeg_quality": 0}, {"jpeg_quality": 96}, {"short_side": 0}, {"max_pixels": -1}]
)
def test_nonsensical_bounds_are_rejected(changes):
    with pytest.raises(ValueError):
        FrameBounds(**changes)


@pytest.mark.parametrize(
    ("orientation", "size", "band_side"),
    [
        (1, (400, 300), "top"),
        (3, (400, 300), "bottom"),
        (6, (300, 400), "right"),
        (8, (300, 400), "left"),
    ],
)
def test_exif_orientation_is_applied(tmp_path, orientation, size, band_side):
    path = media.write_jpeg(
        tmp_path / "turned.jpg", (400, 300), exif_orientation=orientation, band=BLUE
    )
    img = clean_jpeg(prepare_image(path, BOUNDS))
    assert img.size == size
    width, height = img.size
    edges = {
        "top": (0, 0, width, 10),
        "bottom": (0, height - 10, width, height),
        "left": (0, 0, 10, height),
        "right": (width - 10, 0, width, height),
    }
    opposite = {"top": "bottom", "bottom": "top", "left": "right", "right": "left"}[band_side]
    assert close_to(mean_color(img, edges[band_side]), BLUE)
    assert close_to(mean_color(img, edges[opposite]), (200, 40, 40))


def test_gps_and_all_other_metadata_are_stripped_from_photos(tmp_path):
    path = media.write_jpeg(tmp_path / "holiday.jpg", (800, 600), exif_orientation=6, gps=True)
    assert media.SECRET_PLACE in path.read_bytes()
    picture = prepare_image(path, BOUNDS)
    img = clean_jpeg(picture)
    assert not img.getexif().get_ifd(0x8825)
    assert not {"icc_profile", "xmp", "comment", "exif"} & set(img.info)
    for leak in (media.SECRET_PLACE, b"Exif", b"TestCam", b"http://ns.adobe.com"):
        assert leak not in picture.jpeg


@pytest.mark.parametrize(
    ("mode", "opaque"), [("RGBA", (20, 40, 200)), ("P", (20, 40, 200)), ("LA", (52, 52, 52))]
)
def test_transparent_png_is_flattened_onto_white(tmp_path, mode, opaque):
    picture = prepare_image(media.write_png(tmp_path / "alpha.png", (64, 48), mode), BOUNDS)
    img = clean_jpeg(picture)
    assert close_to(mean_color(img, (2, 2, 28, 46)), (255, 255, 255), 6)
    assert close_to(mean_color(img, (36, 2, 62, 46)), opaque, 10)


@pytest.mark.parametrize("mode", ["L", "I;16"])
def test_greyscale_png_keeps_its_tone(tmp_path, mode):
    img = clean_jpeg(prepare_image(media.write_png(tmp_path / "grey.png", (64, 48), mode), BOUNDS))
    assert close_to(mean_color(img, (0, 0, 64, 48)), (52, 52, 52), 4)


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = media.write_jpeg(tmp_path / "print.jpg", (200, 100), color=RED, mode="CMYK")
    img = clean_jpeg(prepare_image(path, BOUNDS))
    assert close_to(mean_color(img, (0, 0, 200, 100)), RED, 30)


def test_multi_picture_camera_jpeg_is_accepted(tmp_path):
    picture = prepare_image(media.write_mpo(tmp_path / "camera.jpg"), BOUNDS)
    assert close_to(mean_color(clean_jpeg(picture), (0, 0, 320, 240)), (30, 160, 60), 8)


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("astronaut.png", (512, 512)),
        ("chelsea.png", (451, 300)),
        ("coffee.png", (600, 400)),
        ("motorcycle_left.png", (741, 500)),
        ("camera.png", (512, 512)),
        ("rocket.jpg", (640, 427)),
        ("hubble_deep_field.jpg", (619, 540)),
        ("retina.jpg", (540, 540)),
    ],
)
def test_real_photos_come_out_clean_and_faithful(name, size):
    picture = prepare_image(media.sample_photo(name), BOUNDS)
    img = clean_jpeg(picture)
    assert img.size == size
    with Image.open(media.sample_photo(name)) as source:
        reference = source.convert("RGB")
        if icc := source.info.get("icc_profile"):
            # rocket.jpg is Adobe RGB (1998): it is seen, and sent on, in sRGB.
            srgb = ImageCms.createProfile("sRGB")
            converted = ImageCms.profileToProfile(reference, io.BytesIO(icc), srgb)
            assert converted is not None
            reference = converted
        reference = reference.resize(size, Image.Resampling.LANCZOS)
    difference = ImageStat.Stat(ImageChops.difference(img, reference)).mean
    assert max(difference) < 6


@pytest.mark.parametrize(
    "write",
    [
        lambda path: media.write_garbage(path),
        lambda path: path.write_bytes(b""),
        lambda path: path.write_text("just some text, not a picture\n"),
        lambda path: media.write_garbage(path, prefix=b"\xff\xd8\xff\xe0"),
        lambda path: media.write_garbage(path, prefix=b"\x89PNG\r\n\x1a\n"),
    ],
    ids=["random-bytes", "empty", "text", "jpeg-magic-then-noise", "png-magic-then-noise"],
)
def test_non_image_file_is_a_media_error(tmp_path, write):
    path = tmp_path / "upload.jpg"
    write(path)
    with pytest.raises(MediaError):
        prepare_image(path, BOUNDS)


@pytest.mark.parametrize("image_format", ["BMP", "TIFF", "PPM", "ICO"])
def test_images_of_no_accepted_format_are_refused(tmp_path, image_format):
    path = media.write_other_image(tmp_path / "upload.jpg", image_format)
    with pytest.raises(MediaError, match="JPEG, PNG, HEIC, HEIF, AVIF, WebP or GIF"):
        prepare_image(path, BOUNDS)


def test_a_real_animated_gif_is_told_by_its_first_frame():
    # Animated GIFs are photos for now: its first frame, not yet a short video.
    path = media.sample_photo("no_time_for_that_tiny.gif")
    with Image.open(path) as gif:
        assert getattr(gif, "n_frames", 1) > 1
        size = gif.size
    picture = prepare_image(path, BOUNDS)
    assert (picture.width, picture.height) == size


@pytest.mark.parametrize("keep", [0.5, 0.1])
def test_truncated_jpeg_is_a_media_error(tmp_path, keep):
    full = media.write_jpeg(tmp_path / "full.jpg", (640, 480), band=BLUE)
    with pytest.raises(MediaError):
        prepare_image(media.write_truncated(full, tmp_path / "cut.jpg", keep), BOUNDS)


def test_truncated_real_photo_is_a_media_error(tmp_path):
    path = media.write_truncated(media.sample_photo("astronaut.png"), tmp_path / "cut.png", 0.6)
    with pytest.raises(MediaError, match="corrupt or truncated"):
        prepare_image(path, BOUNDS)


def test_png_with_corrupt_pixel_data_is_a_media_error(tmp_path):
    data = bytearray(media.sample_photo("coffee.png").read_bytes())
    start = data.index(b"IDAT") + 8
    data[start : start + 64] = bytes(64)
    path = tmp_path / "broken.png"
    path.write_bytes(bytes(data))
    with pytest.raises(MediaError):
        prepare_image(path, BOUNDS)


def test_decompression_bomb_beyond_pillows_limit_is_a_media_error(tmp_path):
    path = media.write_bomb_png(tmp_path / "bomb.png", 100_000, 100_000)
    with pytest.raises(MediaError, match="too large") as caught:
        prepare_image(path, BOUNDS)
    assert isinstance(caught.value.__cause__, Image.DecompressionBombError)


def test_image_over_max_pixels_is_refused_before_decoding(tmp_path):
    path = media.write_bomb_png(tmp_path / "bomb.png", 7000, 7000)
    assert path.stat().st_size < 200
    with pytest.raises(MediaError, match="49000000 pixels"):
        prepare_image(path, BOUNDS)


def test_max_pixels_applies_to_real_photos():
    with pytest.raises(MediaError, match="allowed"):
        prepare_image(media.sample_photo("rocket.jpg"), FrameBounds(max_pixels=100_000))


def test_missing_photo_is_not_blamed_on_the_upload(tmp_path):
    with pytest.raises(FileNotFoundError):
        prepare_image(tmp_path / "gone.jpg", BOUNDS)


# Videos


@pytest.fixture(scope="module")
def bunny() -> tuple:
    stats = DecodeStats()
    meta, pictures = extract_video(
        media.sample_video("bigbuckbunny.mp4"), 8, VIDEO_FRAME_BOUNDS, stats
    )
    return meta, pictures, stats


def test_big_buck_bunny_metadata(bunny):
    meta, _, _ = bunny
    assert meta.duration == pytest.approx(5.3, abs=0.1)
    assert (meta.width, meta.height) == (1280, 720)
    assert meta.fps == pytest.approx(25)
    assert meta.has_audio is True


def test_big_buck_bunny_gives_eight_frames_in_time_order(bunny):
    meta, pictures, _ = bunny
    assert len(pictures) == 8
    times = [picture.timestamp for picture in pictures]
    assert all(isinstance(time, float) for time in times)
    assert times == sorted(set(times))
    assert 0 <= times[0] < meta.duration / 4
    assert 3 * meta.duration / 4 < times[-1] < meta.duration
    assert len({picture.jpeg for picture in pictures}) == 8
    for picture in pictures:
        # Video frames fit 768x432: 544 image tokens each (a 1080p photo costs 826).
        assert (picture.width, picture.height) == (768, 432)
        clean_jpeg(picture)


def test_single_keyframe_video_is_decoded_at_most_once(bunny):
    _, _, stats = bunny
    with av.open(str(media.sample_video("bigbuckbunny.mp4"))) as container:
        total = container.streams.video[0].frames
    # The clip has one keyframe, so every seek would restart at frame 0; continuing
    # forward instead keeps the work to a single pass.
    assert stats.candidates == 24
    assert stats.frames_decoded <= total
    assert stats.seeks == 1
    assert not stats.keyframes_only


def test_video_without_audio_says_so():
    meta, pictures = extract_video(media.sample_video("bikes.mp4"), 8, BOUNDS)
    assert meta.has_audio is False
    assert (meta.width, meta.height) == (640, 272)
    assert meta.duration == pytest.approx(10.0, abs=0.1)
    assert len(pictures) == 8


@pytest.fixture(scope="module")
def minute_video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("video") / "minute.mp4"
    return media.write_video(path, 60, fps=25, keyframe_interval=25)


def test_long_video_decodes_only_a_fraction_of_its_frames(minute_video):
    stats = DecodeStats()
    meta, pictures = extract_video(minute_video, 8, BOUNDS, stats)
    assert meta.duration == pytest.approx(60)
    assert len(pictures) == 8
    assert seconds(pictures[0]) < 8 and seconds(pictures[-1]) > 52
    assert stats.seeks >= 8
    assert stats.frames_decoded < 1500 / 3


def test_frequent_keyframes_are_decoded_alone_and_nothing_between(minute_video):
    stats = DecodeStats()
    _, pictures = extract_video(minute_video, 8, VIDEO_FRAME_BOUNDS, stats)
    assert stats.keyframes_only
    # One keyframe for each of the 24 candidates, instead of decoding up to each.
    assert stats.candidates == 24
    assert stats.frames_decoded <= 24
    assert len(pictures) == 8
    times = [seconds(picture) for picture in pictures]
    assert times == sorted(set(times))
    # Keyframes come every 25 frames, once a second: every picture is on a whole second,
    # and each stays within its slice of the minute, so they still cover it.
    assert times == [pytest.approx(round(time)) for time in times]
    assert times[0] < 8 and times[-1] > 52
    assert min(later - earlier for earlier, later in itertools.pairwise(times)) >= 1.25
    for picture in pictures:
        assert (picture.width, picture.height) == (64, 48)
        clean_jpeg(picture)


def test_every_scene_gets_a_frame_from_keyframes_alone(tmp_path):
    scenes = [(0.0, RED), (6.0, GREEN), (21.0, BLUE), (28.2, YELLOW)]
    path = media.write_video(tmp_path / "scenes.mp4", 36, scenes=scenes, keyframe_interval=5)
    stats = DecodeStats()
    _, pictures = extract_video(path, 4, VIDEO_FRAME_BOUNDS, stats)
    assert stats.keyframes_only
    assert len(pictures) == 4
    for picture, color in zip(pictures, [RED, GREEN, BLUE, YELLOW], strict=True):
        assert close_to(picture_color(picture), color), picture.timestamp
        assert media.scene_color(scenes, seconds(picture)) == color


def test_keyframes_decoded_alone_follow_the_display_rotation(tmp_path):
    path = media.write_video(
        tmp_path / "phone.mp4",
        4,
        size=(64, 48),
        band=BLUE,
        scenes=[(0.0, RED)],
        rotation=90,
        keyframe_interval=2,
    )
    stats = DecodeStats()
    meta, pictures = extract_video(path, 2, BOUNDS, stats)
    assert stats.keyframes_only
    assert (meta.width, meta.height) == (48, 64)
    for picture in pictures:
        img = clean_jpeg(picture)
        assert img.size == (48, 64)
        assert close_to(mean_color(img, (0, 0, 6, 64)), BLUE, 40)


def test_every_scene_gets_a_frame(tmp_path):
    # Uneven scenes: segment-wise "highest change wins" would drop the 2 s opening.
    scenes = [(0.0, RED), (2.0, GREEN), (7.0, BLUE), (9.4, YELLOW)]
    path = media.write_video(tmp_path / "scenes.mp4", 12, scenes=scenes)
    _, pictures = extract_video(path, 4, BOUNDS)
    assert len(pictures) == 4
    for picture, color in zip(pictures, [RED, GREEN, BLUE, YELLOW], strict=True):
        assert close_to(picture_color(picture), color), picture.timestamp
        assert media.scene_color(scenes, seconds(picture)) == color


def test_short_scene_is_preferred_over_even_spacing(tmp_path):
    # Evenly spaced samples (2 s, 6 s, 10 s) would never see the one-second red scene.
    scenes = [(0.0, BLUE), (4.5, RED), (5.5, GREEN)]
    path = media.write_video(tmp_path / "flash.mp4", 12, scenes=scenes)
    _, pictures = extract_video(path, 3, BOUNDS)
    colors = [media.scene_color(scenes, seconds(picture)) for picture in pictures]
    assert colors == [BLUE, RED, GREEN]
    assert close_to(picture_color(pictures[1]), RED)


def test_made_video_with_audio_reports_its_metadata(tmp_path):
    path = media.write_video(tmp_path / "clip.mp4", 3, fps=10, size=(96, 64), audio=True)
    meta, pictures = extract_video(path, 8, BOUNDS)
    assert (meta.width, meta.height, meta.fps, meta.has_audio) == (96, 64, 10.0, True)
    assert meta.duration == pytest.approx(3.0, abs=0.05)
    assert len(pictures) == 8


@pytest.mark.parametrize(("rotation", "band_side"), [(90, "left"), (-90, "right"), (180, "bottom")])
def test_video_frames_follow_the_display_rotation(tmp_path, rotation, band_side):
    path = media.write_video(
        tmp_path / "phone.mp4", 1, size=(64, 48), band=BLUE, scenes=[(0.0, RED)], rotation=rotation
    )
    meta, pictures = extract_video(path, 2, BOUNDS)
    expected = (64, 48) if rotation == 180 else (48, 64)
    assert (meta.width, meta.height) == expected
    img = clean_jpeg(pictures[0])
    assert img.size == expected
    width, height = img.size
    edges = {
        "left": (0, 0, 6, height),
        "right": (width - 6, 0, width, height),
        "bottom": (0, height - 6, width, height),
    }
    assert close_to(mean_color(img, edges[band_side]), BLUE, 40)


def test_big_video_frames_are_shrunk_to_the_bounds(tmp_path):
    path = media.write_video(tmp_path / "wide.mp4", 0.3, size=(1600, 900))
    _, pictures = extract_video(path, 1, FrameBounds(short_side=300))
    assert (pictures[0].width, pictures[0].height) == (533, 300)


def test_one_frame_video_gives_one_picture(tmp_path):
    path = media.write_video(tmp_path / "blink.mp4", 0.1, scenes=[(0.0, GREEN)])
    meta, pictures = extract_video(path, 8, BOUNDS)
    assert meta.duration == pytest.approx(0.1)
    assert len(pictures) == 1
    assert pictures[0].timestamp == 0.0
    assert close_to(picture_color(pictures[0]), GREEN)


def test_short_video_gives_each_frame_once(tmp_path):
    path = media.write_video(tmp_path / "five.mp4", 0.5, fps=10)
    _, pictures = extract_video(path, 8, BOUNDS)
    assert [picture.timestamp for picture in pictures] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


def test_video_whose_headers_state_no_duration_is_measured(tmp_path):
    path = without_durations(media.write_video(tmp_path / "recorded.mp4", 2))
    with av.open(str(path)) as container:
        assert container.duration is None
    meta, pictures = extract_video(path, 4, BOUNDS)
    assert meta.duration == pytest.approx(2.0, abs=0.15)
    assert len(pictures) == 4
    assert seconds(pictures[-1]) > 1.0


def test_audio_only_mp4_is_unprocessable(tmp_path):
    with pytest.raises(UnprocessableMedia, match="no video stream"):
        extract_video(media.write_audio_only_mp4(tmp_path / "voice.mp4"), 8, BOUNDS)


def test_video_whose_frames_cannot_be_decoded_is_unprocessable(tmp_path):
    with pytest.raises(UnprocessableMedia, match="decoded"):
        extract_video(media.write_undecodable_mp4(tmp_path / "noise.mp4"), 8, BOUNDS)


@pytest.mark.parametrize(
    "write",
    [
        lambda path: media.write_garbage(path),
        lambda path: path.write_bytes(b""),
        lambda path: media.write_garbage(path, prefix=media.fake_mp4_header()),
        lambda path: media.write_jpeg(path, (64, 48)),
    ],
    ids=["random-bytes", "empty", "ftyp-then-noise", "jpeg-named-mp4"],
)
def test_non_video_file_is_a_media_error(tmp_path, write):
    path = tmp_path / "upload.mp4"
    write(path)
    with pytest.raises(MediaError):
        extract_video(path, 8, BOUNDS)


def test_video_over_max_pixels_is_refused(tmp_path):
    path = media.write_video(tmp_path / "big.mp4", 0.2, size=(640, 480))
    with pytest.raises(MediaError, match="allowed"):
        extract_video(path, 8, FrameBounds(max_pixels=100_000))


def test_max_frames_below_one_is_a_value_error():
    with pytest.raises(ValueError):
        extract_video(media.sample_video("bikes.mp4"), 0, BOUNDS)


def test_missing_video_is_not_blamed_on_the_upload(tmp_path):
    with pytest.raises(FileNotFoundError):
        extract_video(tmp_path / "gone.mp4", 8, BOUNDS)


# Pure frame choice


def test_frame_times_are_slice_centres():
    assert frame_times(12.0, 4) == pytest.approx([1.5, 4.5, 7.5, 10.5])


def test_frame_times_never_reach_the_end():
    times = frame_times(5.3, 24)
    assert len(times) == 24
    assert times == sorted(times)
    assert times[0] > 0 and times[-1] < 5.3


@pytest.mark.parametrize("duration", [0.0, -1.0, float("nan"), float("inf")])
def test_frame_times_without_a_usable_duration_start_at_zero(duration):
    assert frame_times(duration, 5) == [0.0]


def test_frame_times_for_no_frames_is_empty():
    assert frame_times(10.0, 0) == []


def test_scene_picks_without_cuts_are_evenly_spread():
    assert pick_scene_frames([0.0] * 24, 8) == [1, 4, 7, 10, 13, 16, 19, 22]


def test_steady_motion_is_not_mistaken_for_cuts():
    assert pick_scene_frames([0.0] + [0.2] * 23, 8) == pick_scene_frames([0.0] * 24, 8)


def test_each_side_of_a_cut_gets_a_pick():
    scores = [0.0] * 12
    scores[9] = 0.5
    picks = pick_scene_frames(scores, 2)
    assert picks[0] < 9 <= picks[1]


def test_a_one_candidate_scene_is_picked():
    scores = [0.0, 0.01, 0.0, 0.4, 0.4, 0.02, 0.0, 0.01, 0.0]
    assert 3 in pick_scene_frames(scores, 3)


def test_small_changes_are_not_cuts():
    scores = [0.0] * 12
    scores[9] = 0.05
    assert pick_scene_frames(scores, 2) == [3, 9]
    assert pick_scene_frames(scores, 2, min_cut=0.04) == [4, 10]


def test_strongest_cuts_win_when_scenes_outnumber_picks():
    scores = [0.0, 0.0, 0.3, 0.0, 0.0, 0.9, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0]
    # Cuts at 5 and 8 split the candidates into [0, 5), [5, 8), [8, 12).
    assert pick_scene_frames(scores, 3) == [2, 6, 10]


def test_spare_picks_go_to_the_longest_scenes():
    scores = [0.0] * 20
    scores[4] = 0.6
    picks = pick_scene_frames(scores, 5)
    assert sum(pick < 4 for pick in picks) == 1
    assert sum(pick >= 4 for pick in picks) == 4


def test_asking_for_more_picks_than_candidates_returns_all():
    assert pick_scene_frames([0.0, 0.5, 0.1], 8) == [0, 1, 2]


@pytest.mark.parametrize("count", [0, -3])
def test_no_picks_requested_gives_none(count):
    assert pick_scene_frames([0.0, 0.5], count) == []


@pytest.mark.parametrize("count", range(1, 30))
def test_picks_are_unique_ascending_and_exactly_count(count):
    scores = [((index * 37) % 11) / 20 for index in range(29)]
    picks = pick_scene_frames(scores, count)
    assert len(picks) == count
    assert picks == sorted(set(picks))
    assert all(0 <= pick < 29 for pick in picks)
