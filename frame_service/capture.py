"""Capture metadata: when, where and with which camera a photo was taken, from its EXIF."""

import logging
import math
import os
import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from PIL import ExifTags, Image, UnidentifiedImageError

from frame_service.images import IMAGE_PLUGINS

log = logging.getLogger(__name__)

# What Pillow's parsers may raise on damaged headers and metadata. (Its EXIF reader
# mostly warns and skips a bad tag: 4,000 randomly mangled EXIF blocks raised none.)
_EXIF_ERRORS = (
    Image.DecompressionBombError,
    OSError,
    SyntaxError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    EOFError,
    ZeroDivisionError,
    OverflowError,
    struct.error,
)
_EXIF_DATE_FORMATS = (
    "%Y:%m:%d %H:%M:%S",
    "%Y-%m-%d %H:%M:%S",
    "%Y:%m:%d %H:%M",
    "%Y-%m-%dT%H:%M:%S",
)
_MAX_EXIF_TEXT = 64
# A gazetteer hit further away than this names somewhere the photo was not.
_MAX_PLACE_DISTANCE_KM = 50.0
_EARTH_RADIUS_KM = 6371.0


@dataclass(frozen=True)
class Capture:
    """When, where and with what camera a photo was taken; None where unknown or implausible."""

    taken_at: str | None
    latitude: float | None
    longitude: float | None
    place: str | None
    camera: str | None


_NO_CAPTURE = Capture(taken_at=None, latitude=None, longitude=None, place=None, camera=None)


def read_capture(path: str | os.PathLike[str], *, place: bool = True) -> Capture:
    """Read when, where and with which camera a photo was taken from its EXIF metadata.

    path is the original upload, before images.py strips its metadata. taken_at is
    DateTimeOriginal (else DateTimeDigitized) in ISO 8601, with the EXIF time-zone
    offset when present; latitude and longitude are signed decimal degrees; place is
    the nearest town of an offline gazetteer within 50 km ("Town, Region, Country",
    the region left out when it repeats the town); camera is make and model. Fields
    that are missing, damaged or implausible are None, and files that are not photos
    (videos, say) give a Capture of Nones: damaged metadata never raises. ``place``
    False leaves the position unlooked-up (only the time is wanted).
    Raises OSError only if the file itself cannot be opened.
    """
    # Opened here rather than by Pillow so a missing file stays an OSError.
    with open(path, "rb") as fh:
        try:
            with Image.open(fh, formats=IMAGE_PLUGINS) as img:
                if img.format == "PNG" and "exif" not in img.info:
                    # Pillow would decode every pixel to look for an eXIf chunk after
                    # the image data; cameras do not write PNGs, so it is not worth it.
                    return _NO_CAPTURE
                return _capture_from_exif(img.getexif(), place)
        except UnidentifiedImageError:
            return _NO_CAPTURE
        except _EXIF_ERRORS as err:
            log.info("ignoring unreadable metadata in %s: %s", os.fspath(path), err)
            return _NO_CAPTURE


def _capture_from_exif(exif: Image.Exif, look_up: bool = True) -> Capture:
    if not exif:
        return _NO_CAPTURE
    details = _sub_ifd(exif, ExifTags.IFD.Exif)
    location = _sub_ifd(exif, ExifTags.IFD.GPSInfo)
    latitude = _coordinate(location, _LATITUDE)
    longitude = _coordinate(location, _LONGITUDE)
    place = None
    if latitude is None or longitude is None or (latitude == 0.0 and longitude == 0.0):
        # Half a position is no position, and 0,0 is what broken GPS units write.
        latitude = longitude = None
    else:
        # Six decimals is 0.1 m; more is rational-arithmetic noise.
        latitude, longitude = round(latitude, 6), round(longitude, 6)
        place = _nearest_place(latitude, longitude) if look_up else None
    return Capture(
        # A few writers put the capture time in IFD0 instead of the Exif IFD.
        taken_at=_taken_at(details) or _taken_at(exif),
        latitude=latitude,
        longitude=longitude,
        place=place,
        camera=_camera(exif),
    )


def _sub_ifd(exif: Image.Exif, tag: int) -> Mapping[int, Any]:
    try:
        return exif.get_ifd(tag)
    except _EXIF_ERRORS as err:
        log.info("ignoring unreadable EXIF IFD 0x%04x: %s", tag, err)
        return {}


def _exif_text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if not isinstance(value, str):
        return None
    text = "".join(char for char in value.replace("\x00", " ") if char.isprintable()).strip()
    return text[:_MAX_EXIF_TEXT] or None


def _taken_at(details: Mapping[int, Any]) -> str | None:
    pairs = (
        (ExifTags.Base.DateTimeOriginal, ExifTags.Base.OffsetTimeOriginal),
        (ExifTags.Base.DateTimeDigitized, ExifTags.Base.OffsetTimeDigitized),
    )
    for stamp_tag, offset_tag in pairs:
        stamp = _exif_datetime(details.get(stamp_tag))
        if stamp is None:
            continue
        offset = _exif_text(details.get(offset_tag))
        if offset is not None:
            try:
                # "+07:00"; fromisoformat validates it and applies it as a fixed offset.
                return datetime.fromisoformat(stamp.isoformat() + offset).isoformat()
            except ValueError:
                pass
        return stamp.isoformat()
    return None


def _exif_datetime(value: object) -> datetime | None:
    text = _exif_text(value)
    if text is None:
        return None
    for pattern in _EXIF_DATE_FORMATS:
        try:
            return datetime.strptime(text, pattern)
        except ValueError:
            continue
    return None


@dataclass(frozen=True)
class _Axis:
    """Where one GPS coordinate and its hemisphere letter are, and its range in degrees."""

    value: int
    reference: int
    positive: str
    negative: str
    limit: float


_LATITUDE = _Axis(ExifTags.GPS.GPSLatitude, ExifTags.GPS.GPSLatitudeRef, "N", "S", 90.0)
_LONGITUDE = _Axis(ExifTags.GPS.GPSLongitude, ExifTags.GPS.GPSLongitudeRef, "E", "W", 180.0)


def _coordinate(location: Mapping[int, Any], axis: _Axis) -> float | None:
    """Turn EXIF degrees/minutes/seconds rationals and a hemisphere letter into signed degrees."""
    hemisphere = _exif_text(location.get(axis.reference))
    if hemisphere is None or hemisphere.upper() not in (axis.positive, axis.negative):
        # Guessing the hemisphere would put the photo on the wrong side of the world.
        return None
    value = location.get(axis.value)
    parts = value if isinstance(value, tuple) else (value,)
    if not 1 <= len(parts) <= 3:
        return None
    try:
        numbers = [float(part) for part in parts]
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None
    # Pillow reads a zero denominator as NaN.
    if not all(math.isfinite(number) and number >= 0.0 for number in numbers):
        return None
    degrees, minutes, seconds = (*numbers, 0.0, 0.0)[:3]
    if minutes >= 60.0 or seconds >= 60.0:
        return None
    result = degrees + minutes / 60.0 + seconds / 3600.0
    if result > axis.limit:
        return None
    return -result if hemisphere.upper() == axis.negative else result


def _camera(exif: Image.Exif) -> str | None:
    make = _exif_text(exif.get(ExifTags.Base.Make))
    model = _exif_text(exif.get(ExifTags.Base.Model))
    if make and model:
        # Many makers repeat their name in the model ("Canon" + "Canon EOS R5").
        if model.casefold().startswith(make.split()[0].casefold()):
            return model
        return f"{make} {model}"
    return model or make


_gazetteer_lock = threading.Lock()


def _nearest_place(latitude: float, longitude: float) -> str | None:
    # reverse_geocode imports scipy and parses its 3.4 MB gazetteer on first use
    # (1-3 s), so only photos with a position pay for it; the lock stops two threads
    # building it twice.
    with _gazetteer_lock:
        import reverse_geocode

        found = reverse_geocode.get((latitude, longitude))
    distance = _distance_km(
        latitude, longitude, float(found["latitude"]), float(found["longitude"])
    )
    if distance > _MAX_PLACE_DISTANCE_KM:
        return None
    names = [found.get("city"), found.get("state"), found.get("country")]
    parts: list[str] = []
    for name in names:
        if isinstance(name, str) and name.strip() and name.strip() not in parts:
            parts.append(name.strip())
    return ", ".join(parts) or None


def _distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle (haversine) distance."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    half_chord = (
        math.sin((phi2 - phi1) / 2) ** 2
        + math.cos(phi1) * math.cos(phi2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * _EARTH_RADIUS_KM * math.asin(math.sqrt(min(1.0, half_chord)))
