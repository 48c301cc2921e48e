"""Test media: paths to real sample photos and videos, and writers for synthetic ones."""

import io
import os
import random
import struct
import subprocess
import tempfile
import zlib
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
from av.audio.stream import AudioStream
from av.container import OutputContainer
from PIL import ExifTags, Image, ImageCms

# Shared with the benchmarks; `as` names them this module's too, for `media.sample_photo`.
from devstack.media import REPEATABLE, tool
from devstack.media import sample_photo as sample_photo
from devstack.media import sample_video as sample_video
from devstack.media import write_speech_video as write_speech_video

RGB = tuple[int, int, int]
Scene = tuple[float, RGB]

# Written into the XMP packet and comment of GPS photos so tests can search for it.
SECRET_PLACE = b"Secret Beach 13.7563N 100.5018E"
_GPS_LATITUDE = (13.0, 45.0, 22.68)
_GPS_LONGITUDE = (100.0, 30.0, 6.48)
_WHITE: RGB = (255, 255, 255)
_AUDIO_RATE = 16_000
_AUDIO_SAMPLES = 1024


def banded_image(size: tuple[int, int], color: RGB, band: RGB | None = None) -> Image.Image:
    """Return an RGB image of one colour, optionally with its top quarter in a band colour."""
    img = Image.new("RGB", size, color)
    if band is not None:
        img.paste(band, (0, 0, size[0], max(1, size[1] // 4)))
    return img


def write_jpeg(
    path: str | os.PathLike[str],
    size: tuple[int, int] = (640, 480),
    exif_orientation: int | None = None,
    gps: bool = False,
    color: RGB = (200, 40, 40),
    band: RGB | None = None,
    mode: str = "RGB",
) -> Path:
    """Write a Pillow JPEG, optionally with an EXIF Orientation tag and location metadata.

    gps=True adds a GPS IFD, a camera make, an XMP packet and a JPEG comment that
    mention SECRET_PLACE, and an ICC profile: everything that must never go upstream.
    band paints the top quarter so tests can tell which way the picture was turned.
    """
    img = banded_image(size, color, band).convert(mode)
    exif = Image.Exif()
    if exif_orientation is not None:
        exif[ExifTags.Base.Orientation] = exif_orientation
    extra: dict[str, object] = {}
    if gps:
        exif[ExifTags.Base.Make] = "TestCam"
        location = exif.get_ifd(ExifTags.IFD.GPSInfo)
        location[ExifTags.GPS.GPSLatitudeRef] = "N"
        location[ExifTags.GPS.GPSLatitude] = _GPS_LATITUDE
        location[ExifTags.GPS.GPSLongitudeRef] = "E"
        location[ExifTags.GPS.GPSLongitude] = _GPS_LONGITUDE
        extra["comment"] = SECRET_PLACE
        extra["xmp"] = (
            b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
            b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            b'<rdf:Description xmlns:exif="http://ns.adobe.com/exif/1.0/" '
            b'exif:GPSLatitude="13,45.378N">' + SECRET_PLACE + b"</rdf:Description>"
            b"</rdf:RDF></x:xmpmeta>"
        )
        if mode == "RGB":
            srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
            extra["icc_profile"] = srgb.tobytes()
    img.save(path, "JPEG", quality=92, exif=exif, **extra)
    return Path(path)


def write_mpo(path: str | os.PathLike[str], size: tuple[int, int] = (320, 240)) -> Path:
    """Write a two-picture MPO file, the JPEG variant many phone cameras produce."""
    first = Image.new("RGB", size, (30, 160, 60))
    second = Image.new("RGB", size, (30, 60, 160))
    first.save(path, "MPO", save_all=True, append_images=[second])
    return Path(path)


def write_png(
    path: str | os.PathLike[str],
    size: tuple[int, int] = (64, 48),
    mode: str = "RGBA",
    color: RGB = (20, 40, 200),
) -> Path:
    """Write a PNG in the given mode; where the mode allows it, the left half is transparent.

    The right half is color (as grey for greyscale modes; "I;16" stores the grey
    at 16-bit depth, i.e. value * 257).
    """
    width, height = size
    half = (0, 0, width // 2, height)
    if mode in ("RGBA", "LA"):
        img = Image.new("RGBA", size, (*color, 255))
        img.paste((0, 0, 0, 0), half)
        img = img.convert(mode)
    elif mode == "P":
        img = Image.new("P", size, 1)
        img.putpalette([0, 0, 0, *color])
        img.paste(0, half)
        img.info["transparency"] = 0
    elif mode == "I;16":
        grey = Image.new("RGB", (1, 1), color).convert("L").getpixel((0, 0))
        assert isinstance(grey, int)  # an "L" pixel is one number
        img = Image.new("I;16", size, grey * 257)
    else:
        img = Image.new("RGB", size, color).convert(mode)
    img.save(path, "PNG", compress_level=1)
    return Path(path)


def write_bomb_png(path: str | os.PathLike[str], width: int, height: int) -> Path:
    """Write a tiny PNG whose header declares width x height pixels (a decompression bomb)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(b"\0" * 64)
    chunks = _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)
    return Path(path)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_truncated(
    source: str | os.PathLike[str], path: str | os.PathLike[str], keep: float = 0.5
) -> Path:
    """Write the first `keep` fraction of source's bytes to path."""
    data = Path(source).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep)])
    return Path(path)


def write_garbage(
    path: str | os.PathLike[str], size: int = 4096, seed: int = 7, prefix: bytes = b""
) -> Path:
    """Write prefix followed by deterministic random bytes."""
    rng = random.Random(seed)
    Path(path).write_bytes(prefix + rng.randbytes(size))
    return Path(path)


def write_other_image(path: str | os.PathLike[str], image_format: str) -> Path:
    """Write a valid image in a format other than JPEG/PNG (GIF, BMP, WEBP, TIFF...)."""
    Image.new("RGB", (32, 24), (10, 200, 10)).save(path, image_format)
    return Path(path)


def fake_mp4_header() -> bytes:
    """Return an ftyp box, so a file looks like an MP4 until its body is parsed."""
    brands = b"isom" + struct.pack(">I", 512) + b"isomiso2avc1mp41"
    return struct.pack(">I", 8 + len(brands)) + b"ftyp" + brands


def scene_color(scenes: Sequence[Scene], seconds: float) -> RGB:
    """Return the colour on screen at `seconds`; scenes are (start, colour) pairs, ascending."""
    current = scenes[0][1]
    for start, color in scenes:
        if seconds + 1e-9 >= start:
            current = color
    return current


def write_video(
    path: str | os.PathLike[str],
    seconds: float,
    fps: int = 10,
    size: tuple[int, int] = (64, 48),
    scenes: Sequence[Scene] = ((0.0, (128, 128, 128)),),
    audio: bool = False,
    keyframe_interval: int | None = None,
    rotation: int = 0,
    band: RGB | None = None,
    container_format: str | None = None,
    container_options: dict[str, str] | None = None,
    codec: str = "libx264",
) -> Path:
    """Write a video (H.264 unless ``codec`` says) whose colour changes at known times, optionally with silent AAC audio.

    scenes are (start seconds, colour) pairs; frame i shows the scene at i / fps, plus
    a small square drifting around the top-left quarter so frames within a scene are
    not identical. keyframe_interval is in frames (libx264's default is 250).
    rotation is the counter-clockwise display rotation stored in the container; band
    paints the top quarter of every frame so tests can tell which way it was turned.
    """
    frame_count = max(1, round(seconds * fps))
    options = container_options or {}
    with av.open(os.fspath(path), "w", format=container_format, options=options) as out:
        quick = {"preset": "ultrafast"} if codec in {"libx264", "libx265"} else {}
        if codec == "libx265":
            quick["x265-params"] = "log-level=error"
        video = out.add_stream(codec, rate=fps, options=quick)
        assert isinstance(video, av.VideoStream)
        video.width, video.height = size
        video.pix_fmt = "yuv420p"
        if keyframe_interval is not None:
            video.codec_context.gop_size = keyframe_interval
        if rotation:
            video.set_display_rotation(rotation)
        sound = out.add_stream("aac", rate=_AUDIO_RATE, layout="mono") if audio else None
        for index in range(frame_count):
            picture = _scene_frame(size, scene_color(scenes, index / fps), index, band)
            frame = av.VideoFrame.from_image(picture)
            frame.pts = index
            frame.time_base = Fraction(1, fps)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None:
            _write_silence(out, sound, frame_count / fps)
    return Path(path)


def _scene_frame(size: tuple[int, int], color: RGB, index: int, band: RGB | None) -> Image.Image:
    width, height = size
    img = banded_image(size, color, band)
    square = max(2, min(width, height) // 8)
    x = (index * 3) % max(1, width // 2 - square)
    y = (index * 2) % max(1, height // 2 - square)
    shade = tuple(min(255, channel + 60) if channel < 128 else channel - 60 for channel in color)
    img.paste(shade, (x, y, x + square, y + square))
    return img


def write_audio_only_mp4(path: str | os.PathLike[str], seconds: float = 1.0) -> Path:
    """Write an MP4 holding only a silent AAC audio stream."""
    with av.open(os.fspath(path), "w", format="mp4") as out:
        sound = out.add_stream("aac", rate=_AUDIO_RATE, layout="mono")
        _write_silence(out, sound, seconds)
    return Path(path)


def _write_silence(out: OutputContainer, sound: AudioStream, seconds: float) -> None:
    total = round(seconds * _AUDIO_RATE)
    for pts in range(0, total, _AUDIO_SAMPLES):
        frame = av.AudioFrame(format="fltp", layout="mono", samples=_AUDIO_SAMPLES)
        frame.sample_rate = _AUDIO_RATE
        frame.pts = pts
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        out.mux(sound.encode(frame))
    out.mux(sound.encode(None))


def write_undecodable_mp4(path: str | os.PathLike[str], packets: int = 10) -> Path:
    """Write a well-formed MP4 whose H.264 track holds only garbage packets."""
    with av.open(os.fspath(path), "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=10)
        video.width, video.height = 64, 48
        video.pix_fmt = "yuv420p"
        rng = random.Random(3)
        for index in range(packets):
            # An IDR NAL header followed by noise: parseable framing, undecodable content.
            packet = av.Packet(b"\x00\x00\x00\x01\x65" + rng.randbytes(200))
            packet.stream = video
            packet.pts = packet.dts = index
            packet.time_base = Fraction(1, 10)
            out.mux(packet)
    return Path(path)


def write_sparse_keyframe_video(
    path: str | os.PathLike[str],
    seconds: float,
    fps: int = 30,
    size: tuple[int, int] = (3840, 2160),
    color: RGB = (40, 90, 160),
) -> Path:
    """Write a hostile H.264 MP4: one keyframe, then nothing but identical P-frames.

    This is the shape of a tiny upload that is costly to decode (10 minutes at 4K is
    under 1 MB): every frame is a full-size picture, and the only way to reach a late
    one is to decode all before it. libx264 encodes the keyframe and one P-frame, whose
    packet is repeated, so writing takes well under a second whatever the length.
    """
    frame_count = max(2, round(seconds * fps))
    picture = av.VideoFrame.from_image(Image.new("RGB", size, color))
    with tempfile.TemporaryDirectory() as scratch:
        pair = Path(scratch) / "pair.mp4"
        with av.open(os.fspath(pair), "w") as out:
            encoder = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
            encoder.width, encoder.height = size
            encoder.pix_fmt = "yuv420p"
            for index in range(2):
                picture.pts = index
                picture.time_base = Fraction(1, fps)
                out.mux(encoder.encode(picture))
            out.mux(encoder.encode(None))
        with av.open(os.fspath(pair)) as source:
            stream = source.streams.video[0]
            keyframe, repeated = (bytes(packet) for packet in list(source.demux(stream))[:2])
            with av.open(os.fspath(path), "w", format="mp4") as out:
                copy = out.add_stream_from_template(stream)
                for index in range(frame_count):
                    packet = av.Packet(keyframe if index == 0 else repeated)
                    packet.stream = copy
                    packet.pts = packet.dts = index
                    packet.time_base = Fraction(1, fps)
                    packet.is_keyframe = index == 0
                    out.mux(packet)
    return Path(path)


def write_transparent_palette_png(
    path: str | os.PathLike[str], size: tuple[int, int] = (6000, 6600)
) -> Path:
    """Write a palette PNG with a transparent colour: tens of kB that decode to tens of MB.

    Converted to RGBA at full size, as a naive pipeline does to flatten the
    transparency, 6000x6600 pixels take 160 MB per copy.
    """
    width, height = size
    img = Image.new("P", size, 1)
    img.putpalette([0, 0, 0, 20, 40, 200, 230, 210, 40])
    img.paste(0, (0, 0, width // 2, height))
    img.paste(2, (width // 2, 0, width, height // 3))
    img.info["transparency"] = 0
    img.save(path, "PNG", optimize=True)
    return Path(path)


def jpeg_markers(data: bytes) -> list[int]:
    """Return the JPEG marker codes (0xD8 SOI, 0xE0 APP0, 0xC0 SOF0, ...) up to start of scan."""
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG")
    markers = [0xD8]
    offset = 2
    while offset + 4 <= len(data):
        if data[offset] != 0xFF:
            raise ValueError(f"no marker at offset {offset}")
        marker = data[offset + 1]
        markers.append(marker)
        if marker == 0xDA:
            break
        (length,) = struct.unpack(">H", data[offset + 2 : offset + 4])
        offset += 2 + length
    return markers


def open_jpeg(data: bytes) -> Image.Image:
    """Decode JPEG bytes with Pillow, failing if they are anything else."""
    img = Image.open(io.BytesIO(data), formats=("JPEG",))
    img.load()
    return img


# --- perception: fonts for drawn text and photos with capture metadata -------------

_FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"))


def find_font(*names: str) -> Path | None:
    """Return the first installed font file named one of names ("DejaVuSans-Bold.ttf"), or None."""
    for name in names:
        for folder in _FONT_DIRS:
            matches = sorted(folder.rglob(name)) if folder.is_dir() else []
            if matches:
                return matches[0]
    return None


def text_image(
    lines: Sequence[str],
    font_path: str | os.PathLike[str],
    size: tuple[int, int] = (640, 360),
    font_size: int = 56,
    background: RGB = (245, 240, 230),
    ink: RGB = (20, 20, 20),
) -> Image.Image:
    """Return an RGB picture with lines of text drawn in a TrueType font, one under another."""
    from PIL import ImageDraw, ImageFont

    img = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(img)
    font = ImageFont.truetype(os.fspath(font_path), font_size)
    for index, line in enumerate(lines):
        draw.text((40, 60 + index * int(font_size * 1.8)), line, font=font, fill=ink)
    return img


def gps_tags(latitude: float, longitude: float) -> dict[int, object]:
    """Return EXIF GPS tags (hemisphere letters, degrees/minutes/seconds) for a signed position."""

    def dms(value: float) -> tuple[float, float, float]:
        value = abs(value)
        degrees = int(value)
        minutes = int((value - degrees) * 60)
        seconds = round(((value - degrees) * 60 - minutes) * 60, 4)
        return (float(degrees), float(minutes), seconds)

    return {
        ExifTags.GPS.GPSLatitudeRef: "N" if latitude >= 0 else "S",
        ExifTags.GPS.GPSLatitude: dms(latitude),
        ExifTags.GPS.GPSLongitudeRef: "E" if longitude >= 0 else "W",
        ExifTags.GPS.GPSLongitude: dms(longitude),
    }


def write_exif_jpeg(
    path: str | os.PathLike[str],
    *,
    taken_at: str | None = None,
    offset: str | None = None,
    make: str | None = None,
    model: str | None = None,
    gps: dict[int, object] | None = None,
    size: tuple[int, int] = (64, 48),
) -> Path:
    """Write a small JPEG whose EXIF holds the given DateTimeOriginal ("2024:03:15 14:30:00"),
    OffsetTimeOriginal ("+07:00"), camera make/model and GPS IFD tags (see gps_tags)."""
    exif = Image.Exif()
    if make is not None:
        exif[ExifTags.Base.Make] = make
    if model is not None:
        exif[ExifTags.Base.Model] = model
    if taken_at is not None or offset is not None:
        details = exif.get_ifd(ExifTags.IFD.Exif)
        if taken_at is not None:
            details[ExifTags.Base.DateTimeOriginal] = taken_at
        if offset is not None:
            details[ExifTags.Base.OffsetTimeOriginal] = offset
    if gps is not None:
        exif.get_ifd(ExifTags.IFD.GPSInfo).update(gps)
    Image.new("RGB", size, (90, 140, 60)).save(path, "JPEG", quality=90, exif=exif)
    return Path(path)


def write_dangling_gps_jpeg(path: str | os.PathLike[str], make: str = "TestCam") -> Path:
    """Write a JPEG whose EXIF has a camera make and a GPSInfo pointer past the end of the block."""
    text = make.encode("ascii") + b"\0"
    entries = 2
    data_offset = 8 + 2 + entries * 12 + 4
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", entries)
    tiff += struct.pack("<HHII", 0x010F, 2, len(text), data_offset)  # Make, ASCII
    tiff += struct.pack("<HHII", 0x8825, 4, 1, 0x7FFF0)  # GPSInfo, LONG, nowhere
    tiff += struct.pack("<I", 0) + text
    Image.new("RGB", (64, 48), (90, 140, 60)).save(path, "JPEG", exif=b"Exif\x00\x00" + tiff)
    return Path(path)


def write_tone_video(path: str | os.PathLike[str], seconds: float = 4.0) -> Path:
    """Write an MP4 of a grey picture over a steady 440 Hz tone (mono 16 kHz AAC): sound, no speech.

    Raises FileNotFoundError if ffmpeg is not installed; CalledProcessError if it fails.
    """
    subprocess.run(
        [
            tool("ffmpeg"),
            "-nostdin",
            "-y",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            f"color=c=gray:size=160x120:rate=5:duration={seconds}",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=440:sample_rate=16000:duration={seconds}",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
            "-ac",
            "1",
            *REPEATABLE,
            os.fspath(path),
        ],
        check=True,
        capture_output=True,
    )
    return Path(path)
