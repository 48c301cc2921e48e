"""The HEIF container (ISO/IEC 23008-12): a file's items, their properties and their bytes.

Reads the ``meta`` box only: the primary item, each item's type, extents (``iloc``),
references (``iref``) and properties (``iprp``), enough for heic.py to find a photo's
grid, its HEVC tiles and its transformations. Every read is bounded: a box or an extent
that runs past the end of the file is HeifTruncated, a file with more items than
MAX_ITEMS is HeifLimit, and anything else malformed is HeifError.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

# Far above what cameras write (an iPhone photo has under a hundred items, a 48 MP one a
# few hundred); the bound keeps a hostile ``meta`` box from costing minutes to read.
MAX_ITEMS = 4096


class HeifError(ValueError):
    """The file's boxes are malformed or use a construction this reader does not know."""


class HeifTruncated(HeifError):
    """A box or an item's data runs past the end of the file: the file was cut short."""


class HeifLimit(HeifError):
    """The file declares more items, properties or references than MAX_ITEMS."""


@dataclass(frozen=True)
class HvcC:
    """An HEVC decoder configuration record: all a decoder needs before the first picture."""

    raw: bytes
    chroma_format: int  # 0 monochrome, 1 4:2:0, 2 4:2:2, 3 4:4:4
    bit_depth_luma: int
    bit_depth_chroma: int


@dataclass(frozen=True)
class Nclx:
    """Colour as ITU-T H.273 code points."""

    primaries: int
    transfer: int
    matrix: int
    full_range: bool


@dataclass(frozen=True)
class Clap:
    """A clean aperture: the centred crop of the reconstructed image that is shown."""

    width: float
    height: float
    horizontal_offset: float
    vertical_offset: float


Property = HvcC | Nclx | Clap | tuple[int, int] | int | bytes | str | None


@dataclass
class Item:
    id: int
    type: str = ""
    construction: int = 0  # 0: offsets in the file, 1: in the idat box
    extents: list[tuple[int, int]] = field(default_factory=list)  # (offset, length)
    # (box type, parsed value, essential) in ipma order, the order transformations apply.
    properties: list[tuple[str, Property, bool]] = field(default_factory=list)
    references: dict[str, list[int]] = field(default_factory=dict)  # iref type: to items

    def find(self, kind: str) -> Property:
        """The value of the item's first property of this box type, None if it has none."""
        return next((value for box, value, _ in self.properties if box == kind), None)


@dataclass(frozen=True)
class Heif:
    data: bytes
    items: dict[int, Item]
    primary: int
    idat: tuple[int, int] | None  # start and end of the idat payload in data

    def item_data(self, item: Item) -> bytes:
        """The item's bytes, its extents joined. Raises HeifError for a construction
        other than file offsets or idat."""
        if item.construction == 1:
            if self.idat is None:
                raise HeifError(f"item {item.id} lies in an idat box the file lacks")
            start, end = self.idat
        elif item.construction == 0:
            start, end = 0, len(self.data)
        else:
            raise HeifError(f"item {item.id} uses iloc construction {item.construction}")
        parts = []
        for offset, length in item.extents:
            first = start + offset
            last = end if length == 0 else first + length  # 0: to the end
            if last > end:
                raise HeifTruncated(f"item {item.id}'s data ends past the file")
            parts.append(self.data[first:last])
        return b"".join(parts)

    def referring(self, kind: str, to: int) -> list[Item]:
        """The items with an iref of this type to item ``to`` (a thumbnail's ``thmb``...)."""
        return [item for item in self.items.values() if to in item.references.get(kind, ())]


class _Reader:
    """Big-endian reads inside [pos, end) of data; reading past end is HeifError."""

    def __init__(self, data: bytes, pos: int, end: int) -> None:
        self.data, self.pos, self.end = data, pos, end

    def uint(self, size: int) -> int:
        if self.pos + size > self.end:
            raise HeifError("a box is shorter than its fields")
        value = int.from_bytes(self.data[self.pos : self.pos + size], "big")
        self.pos += size
        return value

    def take(self, size: int) -> bytes:
        if self.pos + size > self.end:
            raise HeifError("a box is shorter than its fields")
        self.pos += size
        return self.data[self.pos - size : self.pos]

    def full_box(self) -> tuple[int, int]:
        """A FullBox header: (version, flags)."""
        return self.uint(1), self.uint(3)

    def count(self, size: int) -> int:
        value = self.uint(size)
        if value > MAX_ITEMS:
            raise HeifLimit(f"the file declares {value} entries, more than the {MAX_ITEMS} read")
        return value


def boxes(data: bytes, start: int, end: int) -> Iterator[tuple[str, int, int]]:
    """(type, payload start, payload end) of each box in data[start:end].

    Raises HeifTruncated for a box running past the end of the file, HeifError for one
    running past its parent.
    """
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            header, size = 16, _Reader(data, pos + 8, end).uint(8)
        elif size == 0:  # to the end of the parent
            size = end - pos
        if size < header:
            raise HeifError(f"box {kind!r} has size {size}")
        if pos + size > end:
            if end == len(data):
                raise HeifTruncated(f"box {kind!r} runs past the end of the file")
            raise HeifError(f"box {kind!r} runs past the box holding it")
        yield kind.decode("latin-1"), pos + header, pos + size
        pos += size


def parse(data: bytes) -> Heif:
    """The items of a HEIF file's ``meta`` box.

    Raises HeifTruncated if a box or an item's data in the file runs past its end,
    HeifLimit, or HeifError when there is no meta box or no primary item.
    """
    meta = next(((s, e) for kind, s, e in boxes(data, 0, len(data)) if kind == "meta"), None)
    if meta is None:
        raise HeifError("the file has no meta box")
    items: dict[int, Item] = {}
    primary: int | None = None
    idat: tuple[int, int] | None = None
    for kind, start, end in boxes(data, meta[0] + 4, meta[1]):  # meta is a FullBox
        reader = _Reader(data, start, end)
        if kind == "pitm":
            version, _ = reader.full_box()
            primary = reader.uint(2 if version == 0 else 4)
        elif kind == "iinf":
            _read_iinf(reader, items)
        elif kind == "iloc":
            _read_iloc(reader, items)
        elif kind == "iref":
            _read_iref(reader, items)
        elif kind == "iprp":
            _read_iprp(data, start, end, items)
        elif kind == "idat":
            idat = (start, end)
    if primary is None or primary not in items:
        raise HeifError("the file names no primary item")
    for item in items.values():
        # A cut-off file's last items end past it (libheif decodes missing tiles grey).
        if item.construction == 0 and any(o + n > len(data) for o, n in item.extents):
            raise HeifTruncated(f"item {item.id}'s data ends past the end of the file")
    return Heif(data, items, primary, idat)


def _item(items: dict[int, Item], item_id: int) -> Item:
    if item_id not in items and len(items) >= MAX_ITEMS:
        raise HeifLimit(f"the file has more than {MAX_ITEMS} items")
    return items.setdefault(item_id, Item(item_id))


def _read_iinf(reader: _Reader, items: dict[int, Item]) -> None:
    version, _ = reader.full_box()
    reader.count(2 if version == 0 else 4)
    for kind, start, end in boxes(reader.data, reader.pos, reader.end):
        entry = _Reader(reader.data, start, end)
        infe_version, _ = entry.full_box()
        if kind != "infe" or infe_version < 2:
            continue  # versions 0 and 1 describe files, not image items
        item = _item(items, entry.uint(2 if infe_version == 2 else 4))
        entry.uint(2)  # item_protection_index
        item.type = entry.take(4).decode("latin-1")


def _read_iloc(reader: _Reader, items: dict[int, Item]) -> None:
    version, _ = reader.full_box()
    if version > 2:
        raise HeifError(f"iloc version {version}")
    sizes = reader.uint(2)
    offset_size, length_size = sizes >> 12, (sizes >> 8) & 15
    base_size, index_size = (sizes >> 4) & 15, sizes & 15
    id_size = 2 if version < 2 else 4
    for _ in range(reader.count(id_size)):
        item = _item(items, reader.uint(id_size))
        if version > 0:
            item.construction = reader.uint(2) & 15
        if reader.uint(2) != 0:
            raise HeifError(f"item {item.id}'s data is in another file")
        base = reader.uint(base_size)
        for _ in range(reader.count(2)):
            if version > 0:
                reader.uint(index_size)
            offset = base + reader.uint(offset_size)
            item.extents.append((offset, reader.uint(length_size)))


def _read_iref(reader: _Reader, items: dict[int, Item]) -> None:
    version, _ = reader.full_box()
    id_size = 2 if version == 0 else 4
    for kind, start, end in boxes(reader.data, reader.pos, reader.end):
        entry = _Reader(reader.data, start, end)
        source = _item(items, entry.uint(id_size))
        targets = [entry.uint(id_size) for _ in range(entry.count(2))]
        source.references.setdefault(kind, []).extend(targets)


def _read_iprp(data: bytes, start: int, end: int, items: dict[int, Item]) -> None:
    properties: list[tuple[str, Property]] = []
    associations: list[tuple[int, list[tuple[bool, int]]]] = []
    for kind, s, e in boxes(data, start, end):
        if kind == "ipco":
            for box, ps, pe in boxes(data, s, e):
                if len(properties) >= MAX_ITEMS:
                    raise HeifLimit(f"the file has more than {MAX_ITEMS} item properties")
                properties.append((box, _property(box, _Reader(data, ps, pe))))
        elif kind == "ipma":
            associations.extend(_read_ipma(_Reader(data, s, e)))
    for item_id, indices in associations:
        item = _item(items, item_id)
        for essential, index in indices:
            if not 0 < index <= len(properties):
                continue  # 0 is "no property"
            box, value = properties[index - 1]
            item.properties.append((box, value, essential))


def _read_ipma(reader: _Reader) -> Iterator[tuple[int, list[tuple[bool, int]]]]:
    version, flags = reader.full_box()
    for _ in range(reader.count(4)):
        item_id = reader.uint(2 if version < 1 else 4)
        indices = []
        for _ in range(reader.uint(1)):
            if flags & 1:
                value = reader.uint(2)
                indices.append((bool(value >> 15), value & 0x7FFF))
            else:
                value = reader.uint(1)
                indices.append((bool(value >> 7), value & 0x7F))
        yield item_id, indices


def _property(kind: str, reader: _Reader) -> Property:
    """The parsed value of the properties heic.py reads; None for any other."""
    if kind == "hvcC":
        return _hvcc(reader.take(reader.end - reader.pos))
    if kind == "ispe":
        reader.full_box()
        return reader.uint(4), reader.uint(4)
    if kind in ("irot", "imir"):
        return reader.uint(1) & (3 if kind == "irot" else 1)
    if kind == "clap":
        width, height, horizontal, vertical = (
            _fraction(reader, signed=index >= 2) for index in range(4)
        )
        return Clap(width, height, horizontal, vertical)
    if kind == "colr":
        colour_type = reader.take(4)
        if colour_type == b"nclx":
            primaries, transfer, matrix = reader.uint(2), reader.uint(2), reader.uint(2)
            return Nclx(primaries, transfer, matrix, bool(reader.uint(1) & 0x80))
        if colour_type in (b"prof", b"rICC"):
            return reader.take(reader.end - reader.pos)
        return None
    if kind == "auxC":
        reader.full_box()
        return reader.take(reader.end - reader.pos).split(b"\0", 1)[0].decode("latin-1")
    return None


def _fraction(reader: _Reader, signed: bool) -> float:
    numerator, denominator = reader.uint(4), reader.uint(4)
    if signed and numerator >= 1 << 31:
        numerator -= 1 << 32
    if denominator == 0:
        raise HeifError("a clean aperture with a zero denominator")
    return numerator / denominator


def _hvcc(raw: bytes) -> HvcC:
    if len(raw) < 23:
        raise HeifError("an hvcC box is shorter than its fields")
    return HvcC(
        raw=raw,
        chroma_format=raw[16] & 3,
        bit_depth_luma=(raw[17] & 7) + 8,
        bit_depth_chroma=(raw[18] & 7) + 8,
    )


@dataclass(frozen=True)
class Grid:
    """A grid item's layout: rows x columns of equal tiles, cropped to width x height."""

    rows: int
    columns: int
    width: int
    height: int


def parse_grid(payload: bytes) -> Grid:
    """The layout a grid item's data describes. Raises HeifError if it is cut short."""
    reader = _Reader(payload, 0, len(payload))
    reader.uint(1)  # version
    flags = reader.uint(1)
    rows, columns = reader.uint(1) + 1, reader.uint(1) + 1
    size = 4 if flags & 1 else 2
    return Grid(rows, columns, reader.uint(size), reader.uint(size))
