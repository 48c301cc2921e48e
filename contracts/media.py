"""What a media file is, told by its first bytes, never by its name: the one rule for the
gateway that accepts an upload and the frame service that opens it."""

from __future__ import annotations

from contracts.messages import MediaKind

HEAD_BYTES = 16  # enough of a file's start for every signature below

# Brands an ISO base media file (``ftyp``) names when it holds a HEIF, HEIC or AVIF photo;
# any other brand is a video (MP4, MOV, M4V, 3GP).
_ISOBMFF_IMAGE_BRANDS = frozenset(
    {
        b"heic",
        b"heix",
        b"hevc",
        b"heim",
        b"heis",
        b"hevm",
        b"hevs",
        b"mif1",
        b"msf1",
        b"avif",
        b"avis",
    }
)
# Box types that can start an ISO base media file: older QuickTime movies begin without
# ``ftyp``.
_ISOBMFF_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"})
_EBML = b"\x1a\x45\xdf\xa3"  # the start of every Matroska and WebM file
_PHOTO_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a")


def video_demuxer(head: bytes) -> str | None:
    """The one FFmpeg demuxer a video's first bytes call for: ``mov`` (MP4, MOV, M4V) or
    ``matroska`` (MKV, WebM); None when they are neither."""
    if head[4:8] in _ISOBMFF_BOXES:
        return "mov"
    if head.startswith(_EBML):
        return "matroska"
    return None


def sniff(head: bytes) -> MediaKind | None:
    """The media kind the first bytes of a file announce, or None if unsupported."""
    if head.startswith(_PHOTO_MAGIC):
        return MediaKind.IMAGE
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return MediaKind.IMAGE
    if head[4:8] == b"ftyp" and head[8:12] in _ISOBMFF_IMAGE_BRANDS:
        return MediaKind.IMAGE  # HEIF, HEIC, AVIF
    if video_demuxer(head) is not None:
        return MediaKind.VIDEO
    return None
