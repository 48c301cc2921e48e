"""Perception on real and made-up pictures: labels, faces, colours, light, text and EXIF."""

import functools
import random
import signal
import subprocess
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy
import pytest
from PIL import Image, ImageDraw, ImageOps
from PIL.TiffImagePlugin import IFDRational

from bus import blobs, connection
from contracts.messages import ExtractFrames, FramesExtracted, MediaKind
from frame_service import config, ocr, service
from frame_service.cancellation import Cancelled, CancelToken
from frame_service.capture import Capture, read_capture
from frame_service.ocr import ocr_available
from frame_service.perception import Facts, Perceiver
from frame_service.service import FrameExtractor
from tests import media

CAT_LABELS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}
LIGHTS = {"bright daylight", "daylight/indoor light", "dim", "night/dark"}
Describe = Callable[[str], Facts]
NO_CAPTURE = Capture(taken_at=None, latitude=None, longitude=None, place=None, camera=None)
LATIN_FONT = media.find_font("DejaVuSans-Bold.ttf", "LiberationSans-Bold.ttf")
THAI_FONT = media.find_font("Garuda.ttf", "Garuda.otf", "Loma.ttf", "Loma.otf", "Norasi.ttf")

needs_ocr = pytest.mark.skipif(not ocr_available(), reason="tesseract is not installed")
needs_latin_font = pytest.mark.skipif(
    LATIN_FONT is None, reason="no DejaVu or Liberation font installed"
)


@pytest.fixture(scope="module")
def perceiver() -> Perceiver:
    return Perceiver()


@pytest.fixture(scope="module")
def described(perceiver: Perceiver) -> Describe:
    """Facts of a sample photo, measured once per module: OCR makes each describe cost ~0.3-1 s."""
    return functools.cache(lambda name: perceiver.describe(photo(name)))


def photo(name: str) -> Image.Image:
    """A scikit-image sample photo as describe receives it: oriented RGB, short side <= 540."""
    with Image.open(media.sample_photo(name)) as img:
        rgb = ImageOps.exif_transpose(img).convert("RGB")
    scale = min(1.0, 540 / min(rgb.size))
    if scale < 1.0:
        rgb = rgb.resize((round(rgb.width * scale), round(rgb.height * scale)))
    return rgb


# --- labels -------------------------------------------------------------------------


def test_chelsea_is_labelled_a_cat_with_confidence(described: Describe) -> None:
    facts = described("chelsea.png")

    assert len(facts.labels) == 3
    confidences = [label.confidence for label in facts.labels]
    assert confidences == sorted(confidences, reverse=True)
    assert all(0.0 <= value <= 1.0 for value in confidences)
    assert facts.labels[0].name in CAT_LABELS
    assert facts.labels[0].confidence > 0.5


def test_coffee_top_label_is_espresso_or_cup(described: Describe) -> None:
    facts = described("coffee.png")

    assert facts.labels[0].name in {"espresso", "cup", "coffee mug"}
    assert facts.labels[0].confidence > 0.5


def test_motorcycle_is_labelled_a_moped_or_scooter(described: Describe) -> None:
    facts = described("motorcycle_left.png")

    assert facts.labels[0].name in {"moped", "motor scooter"}


def test_greyscale_photo_is_described(perceiver: Perceiver) -> None:
    with Image.open(media.sample_photo("camera.png")) as img:
        grey = img.convert("L")

    facts = perceiver.describe(grey)

    assert facts.labels[0].name == "tripod"
    assert set(facts.colors) <= {"black", "dark grey", "grey", "light grey", "white"}


def test_top_k_sets_the_number_of_labels_and_ocr_false_reads_no_text() -> None:
    single = Perceiver(top_k=1, ocr=False)

    facts = single.describe(photo("page.png"))

    assert len(facts.labels) == 1
    assert facts.text is None


def test_without_tesseract_pictures_are_described_without_text(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    ocr.find_tesseract.cache_clear()
    try:
        assert ocr_available() is False
        facts = Perceiver().describe(photo("page.png"))
    finally:
        ocr.find_tesseract.cache_clear()

    assert facts.text is None
    assert facts.labels


@pytest.mark.parametrize("top_k", [0, 1001])
def test_top_k_out_of_range_is_rejected(top_k: int) -> None:
    with pytest.raises(ValueError, match="top_k"):
        Perceiver(top_k=top_k)


def test_empty_image_is_rejected(perceiver: Perceiver) -> None:
    with pytest.raises(ValueError, match="no pixels"):
        perceiver.describe(Image.new("RGB", (0, 0)))


# --- faces and people ---------------------------------------------------------------


def test_astronaut_has_one_face_and_hints_at_people(described: Describe) -> None:
    facts = described("astronaut.png")

    assert facts.faces == 1
    assert facts.people_hint is True


def test_several_faces_are_counted(perceiver: Perceiver) -> None:
    # scikit-image's LFW subset: 25x25 greyscale crops, the first 100 of them faces.
    crops = numpy.load(media.sample_photo("lfw_subset.npy"))[:6]
    group = Image.new("L", (768, 512), 128)
    for index, crop in enumerate(crops):
        face = Image.fromarray((crop * 255).astype(numpy.uint8)).resize(
            (60, 60), Image.Resampling.BICUBIC
        )
        group.paste(face, (100 + (index % 3) * 220, 100 + (index // 3) * 200))

    facts = perceiver.describe(group)

    # Haar cascades miss some faces; these tiny crops lose one.
    assert facts.faces is not None and 4 <= facts.faces <= 6
    assert facts.people_hint is True


@pytest.mark.parametrize("name", ["coffee.png", "chelsea.png", "rocket.jpg", "coins.png"])
def test_photos_without_people_have_no_faces(described: Describe, name: str) -> None:
    facts = described(name)

    assert facts.faces == 0
    assert facts.people_hint is False


# --- colours and light --------------------------------------------------------------


def test_dark_blue_picture_is_blue_and_night(perceiver: Perceiver) -> None:
    facts = perceiver.describe(Image.new("RGB", (640, 480), (20, 30, 100)))

    assert facts.colors == ("dark blue",)
    assert facts.brightness < 0.16
    assert facts.light == "night/dark"


def test_white_picture_is_bright(perceiver: Perceiver) -> None:
    facts = perceiver.describe(Image.new("RGB", (640, 480), (255, 255, 255)))

    assert facts.colors == ("white",)
    assert facts.brightness == pytest.approx(1.0)
    assert facts.light == "bright daylight"
    assert facts.text is None
    assert facts.faces == 0


def test_colours_are_ranked_by_area(perceiver: Perceiver) -> None:
    img = Image.new("RGB", (400, 300), (220, 20, 20))  # red
    ImageDraw.Draw(img).rectangle((0, 0, 399, 89), fill=(40, 150, 50))  # green, 30%
    ImageDraw.Draw(img).rectangle((0, 90, 399, 99), fill=(250, 250, 250))  # white, 3%: too small

    facts = perceiver.describe(img)

    assert facts.colors == ("red", "green")


def test_dusk_rocket_photo_is_dim_under_a_dark_blue_sky(described: Describe) -> None:
    facts = described("rocket.jpg")

    assert facts.colors[0] == "dark blue"
    assert facts.light == "dim"


def test_daylight_photos_get_a_light_bucket_and_three_colours(described: Describe) -> None:
    facts = described("coffee.png")

    assert facts.light == "daylight/indoor light"
    assert facts.light in LIGHTS
    assert len(facts.colors) == 3
    assert len(set(facts.colors)) == 3


# --- text ---------------------------------------------------------------------------


@needs_ocr
@needs_latin_font
def test_ocr_reads_drawn_english_text(perceiver: Perceiver) -> None:
    assert LATIN_FONT is not None
    facts = perceiver.describe(media.text_image(["HELLO WORLD"], LATIN_FONT))

    assert facts.text is not None
    assert "HELLO" in facts.text
    assert "WORLD" in facts.text


@needs_ocr
@needs_latin_font
def test_ocr_reads_a_sign_on_a_photo(perceiver: Perceiver) -> None:
    from PIL import ImageFont

    assert LATIN_FONT is not None
    img = photo("chelsea.png").resize((676, 450))
    draw = ImageDraw.Draw(img)
    draw.rectangle((20, 20, 480, 110), fill=(255, 255, 255))
    draw.text((30, 25), "OPEN CAFE", font=ImageFont.truetype(str(LATIN_FONT), 64), fill=(200, 0, 0))

    facts = perceiver.describe(img)

    assert facts.text is not None
    assert "OPEN" in facts.text and "CAFE" in facts.text
    assert facts.labels[0].name in CAT_LABELS


@needs_ocr
@pytest.mark.skipif(THAI_FONT is None, reason="no Thai font installed (Debian fonts-thai-tlwg)")
def test_ocr_reads_thai_and_english_together(perceiver: Perceiver) -> None:
    assert THAI_FONT is not None
    lines = ["สวัสดีครับ", "วัดพระแก้ว กรุงเทพ", "Floating Market"]

    facts = perceiver.describe(media.text_image(lines, THAI_FONT, size=(900, 420)))

    # Tesseract gives Thai one character per "word"; they must come back as words,
    # with the space between the two Thai words kept.
    assert facts.text == "\n".join(lines)


@needs_ocr
def test_ocr_reads_the_typed_page_photo(described: Describe) -> None:
    facts = described("page.png")

    assert facts.text is not None
    assert "segmentation" in facts.text
    assert len(facts.text) <= 301


@needs_ocr
@pytest.mark.parametrize("name", ["coins.png", "chelsea.png", "astronaut.png", "text.png"])
def test_photos_without_legible_text_have_none(described: Describe, name: str) -> None:
    # coins.png makes tesseract see rows of Thai digit ones; text.png is slanted handwriting.
    assert described(name).text is None


@needs_ocr
def test_cancelling_ocr_kills_tesseract_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    tesseract = ocr.find_tesseract()
    assert tesseract is not None
    started: list[subprocess.Popen[bytes]] = []
    popen = subprocess.Popen

    def recorded(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        started.append(popen(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(ocr.subprocess, "Popen", recorded)
    # Noise keeps tesseract busy for seconds.
    noise = Image.frombytes("L", (3000, 3000), random.Random(5).randbytes(9_000_000))
    cancel = CancelToken()
    threading.Timer(0.3, cancel.cancel).start()
    with pytest.raises(Cancelled):
        ocr.read_text(noise, tesseract, cancel)
    assert len(started) == 1
    assert started[0].returncode == -signal.SIGKILL


# --- capture metadata ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("exif", "expected"),
    [
        pytest.param(
            {
                "taken_at": "2024:03:15 14:30:00",
                "offset": "+07:00",
                "make": "Apple",
                "model": "iPhone 13",
                "gps": media.gps_tags(13.7563, 100.5018),
            },
            Capture(
                "2024-03-15T14:30:00+07:00",
                13.7563,
                100.5018,
                "Bangkok, Thailand",
                "Apple iPhone 13",
            ),
            id="bangkok",
        ),
        pytest.param(
            # Some writers store one rational of decimal degrees instead of degrees/minutes/seconds.
            {
                "taken_at": "2023:12:01 09:05:00",
                "make": "Canon",
                "model": "Canon EOS R5",
                "gps": {1: "N", 2: 18.79, 3: "E", 4: 98.98},
            },
            Capture("2023-12-01T09:05:00", 18.79, 98.98, "Chiang Mai, Thailand", "Canon EOS R5"),
            id="chiang-mai-in-decimal-degrees",
        ),
    ],
)
def test_photo_capture_is_read_from_exif(
    tmp_path: Path, exif: dict[str, Any], expected: Capture
) -> None:
    capture = read_capture(media.write_exif_jpeg(tmp_path / "photo.jpg", **exif))

    assert (capture.taken_at, capture.place, capture.camera) == (
        expected.taken_at,
        expected.place,
        expected.camera,
    )
    assert (capture.latitude, capture.longitude) == pytest.approx(
        (expected.latitude, expected.longitude), abs=1e-5
    )


def test_place_names_the_region_when_it_differs_from_the_town(tmp_path: Path) -> None:
    path = media.write_exif_jpeg(tmp_path / "patong.jpg", gps=media.gps_tags(7.8961, 98.2966))

    assert read_capture(path).place == "Patong, Phuket, Thailand"


def test_southern_and_western_hemispheres_are_negative(tmp_path: Path) -> None:
    path = media.write_exif_jpeg(tmp_path / "rio.jpg", gps=media.gps_tags(-22.9068, -43.1729))

    capture = read_capture(path)

    assert capture.latitude == pytest.approx(-22.9068, abs=1e-5)
    assert capture.longitude == pytest.approx(-43.1729, abs=1e-5)
    assert capture.place is not None and capture.place.endswith("Brazil")


def test_position_far_from_any_town_has_no_place(tmp_path: Path) -> None:
    path = media.write_exif_jpeg(tmp_path / "pacific.jpg", gps=media.gps_tags(-0.5, -140.0))

    capture = read_capture(path)

    assert capture.latitude == pytest.approx(-0.5)
    assert capture.place is None


def test_photos_without_exif_have_an_empty_capture(tmp_path: Path) -> None:
    assert read_capture(media.write_jpeg(tmp_path / "plain.jpg")) == NO_CAPTURE
    assert read_capture(media.write_png(tmp_path / "plain.png")) == NO_CAPTURE
    assert read_capture(media.sample_photo("chelsea.png")) == NO_CAPTURE


def test_decompression_bomb_has_an_empty_capture(tmp_path: Path) -> None:
    bomb = media.write_bomb_png(tmp_path / "bomb.png", 100_000, 100_000)

    assert read_capture(bomb) == NO_CAPTURE


def test_video_file_has_an_empty_capture(tmp_path: Path) -> None:
    video = media.write_video(tmp_path / "clip.mp4", seconds=0.5)

    assert read_capture(video) == NO_CAPTURE


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_dangling_gps_pointer_keeps_the_rest(tmp_path: Path) -> None:
    capture = read_capture(media.write_dangling_gps_jpeg(tmp_path / "dangling.jpg", make="TestCam"))

    assert capture == Capture(
        taken_at=None, latitude=None, longitude=None, place=None, camera="TestCam"
    )


@pytest.mark.parametrize(
    "broken",
    [
        {2: (IFDRational(13, 0), 45.0, 22.0)},  # zero denominator
        {1: "X"},  # no such hemisphere
        {1: ""},  # no hemisphere at all
        {2: (95.0, 0.0, 0.0)},  # beyond the pole
        {4: (100.0, 75.0, 0.0)},  # 75 minutes
        {2: (0.0, 0.0, 0.0), 4: (0.0, 0.0, 0.0)},  # null island, written by broken GPS units
        {2: (13.0, 45.0, 22.68, 1.0)},  # four numbers
    ],
    ids=[
        "zero-denominator",
        "bad-ref",
        "empty-ref",
        "beyond-pole",
        "75-minutes",
        "zero-zero",
        "four-parts",
    ],
)
def test_broken_gps_values_give_no_position(tmp_path: Path, broken: dict[int, object]) -> None:
    gps = media.gps_tags(13.7563, 100.5018) | broken
    path = media.write_exif_jpeg(tmp_path / "broken.jpg", taken_at="2024:03:15 14:30:00", gps=gps)

    capture = read_capture(path)

    assert (capture.latitude, capture.longitude, capture.place) == (None, None, None)
    assert capture.taken_at == "2024-03-15T14:30:00"


@pytest.mark.parametrize(
    ("taken_at", "offset", "expected"),
    [
        ("0000:00:00 00:00:00", None, None),
        ("yesterday", None, None),
        ("2024:03:15 14:30:00", "+99:00", "2024-03-15T14:30:00"),
        ("2024:03:15 14:30:00", "-03:00", "2024-03-15T14:30:00-03:00"),
        ("2024:03:15 14:30:00\x00", None, "2024-03-15T14:30:00"),
    ],
)
def test_capture_time_is_iso_or_none(
    tmp_path: Path, taken_at: str, offset: str | None, expected: str | None
) -> None:
    path = media.write_exif_jpeg(tmp_path / "time.jpg", taken_at=taken_at, offset=offset)

    assert read_capture(path).taken_at == expected


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about each corrupt tag
def test_mangled_exif_never_raises(tmp_path: Path) -> None:
    source = media.write_exif_jpeg(
        tmp_path / "source.jpg",
        taken_at="2024:03:15 14:30:00",
        offset="+07:00",
        make="Apple",
        model="iPhone 13",
        gps=media.gps_tags(13.7563, 100.5018),
    )
    data = source.read_bytes()
    start = data.index(b"Exif\x00\x00")
    end = start + int.from_bytes(data[start - 2 : start], "big")
    rng = random.Random(11)
    for attempt in range(150):
        mangled = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            mangled[rng.randrange(start + 6, end - 2)] = rng.randrange(256)
        path = tmp_path / f"mangled{attempt}.jpg"
        path.write_bytes(bytes(mangled))

        assert isinstance(read_capture(path), Capture)


def test_missing_file_raises_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_capture(tmp_path / "missing.jpg")


# --- scene facts only for a reader ----------------------------------------------------


class CountingPerceiver(Perceiver):
    """Measures nothing: counts the pictures it is asked to describe."""

    def __init__(self) -> None:  # no models: nothing to load
        self.calls = 0

    def describe(self, image: Image.Image, cancel: CancelToken | None = None) -> Facts:
        self.calls += 1
        return Facts(
            labels=(),
            faces=0,
            people_hint=False,
            colors=("green",),
            brightness=0.5,
            light="daylight/indoor light",
            text=None,
        )


async def extract_with(
    nats_url: str, work: Path, upload: Path, kind: MediaKind, perceiver: Perceiver, facts: bool
) -> FramesExtracted:
    """What a frame service with this perceiver (and no transcriber) makes of upload."""
    settings = replace(config.load({}), work_dir=str(work), transcribe=False)
    nc = await connection.connect(nats_url, "test-frames")
    try:
        store = await blobs.open_bucket(nc.jetstream())
        await blobs.put_file(store, "facts/upload-0", upload)
        extractor = FrameExtractor(nc, store, settings, perceiver)
        request = ExtractFrames(
            request_id="facts", upload="facts/upload-0", kind=kind, scene_facts=facts
        )
        done = await extractor.extract(request)
        await blobs.delete_quietly(store, ["facts/upload-0", *(f.object for f in done.frames)])
        return done
    finally:
        await nc.close()


async def test_a_photo_without_scene_facts_is_not_perceived_and_only_its_time_is_read(
    empty_nats_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[bool] = []
    read_capture = service.read_capture

    def time_only(path: object, *, place: bool = True) -> Capture:
        asked.append(place)
        return read_capture(path, place=place)  # type: ignore[arg-type]  # a path

    monkeypatch.setattr(service, "read_capture", time_only)
    perceiver = CountingPerceiver()
    photo = media.write_exif_jpeg(
        tmp_path / "photo.jpg", make="TestCam", taken_at="2024:05:01 08:00:00", size=(640, 480)
    )

    done = await extract_with(empty_nats_url, tmp_path, photo, MediaKind.IMAGE, perceiver, False)

    assert perceiver.calls == 0
    # Its time orders the photos; where it was taken is not even looked up.
    assert asked == [False]
    assert [(f.width, f.height, f.facts, f.taken_at) for f in done.frames] == [
        (640, 480, None, "2024-05-01T08:00:00")
    ]


async def test_a_photo_with_scene_facts_is_perceived_and_its_capture_read(
    empty_nats_url: str, tmp_path: Path
) -> None:
    perceiver = CountingPerceiver()
    photo = media.write_exif_jpeg(tmp_path / "photo.jpg", make="TestCam", size=(640, 480))

    done = await extract_with(empty_nats_url, tmp_path, photo, MediaKind.IMAGE, perceiver, True)

    assert perceiver.calls == 1
    facts = done.frames[0].facts
    assert facts is not None
    assert (facts.colors, facts.camera) == (["green"], "TestCam")


async def test_video_frames_without_scene_facts_are_not_perceived(
    empty_nats_url: str, tmp_path: Path
) -> None:
    perceiver = CountingPerceiver()
    video = media.write_video(tmp_path / "clip.mp4", 3)

    done = await extract_with(empty_nats_url, tmp_path, video, MediaKind.VIDEO, perceiver, False)

    assert perceiver.calls == 0
    assert len(done.frames) == 8
    assert all(frame.facts is None for frame in done.frames)
