"""Structured output: an answer as a JSON object whose one text field is streamed as written.

A model that sees the pictures writes the story and each picture's alt text in one call,
as JSON with a schema (the provider's structured output). The story is still shown as it
is written: ``FieldStream`` hands on the decoded text of one string field of the JSON as
its pieces arrive, however they are cut (inside an escape, between the halves of a
surrogate pair). An answer that is not JSON (a server that ignored the schema) is passed
on as it is, and read as plain text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def response_format(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The Chat Completions ``response_format`` asking for JSON that follows ``schema``."""
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def structured(
    extra_body: dict[str, Any] | None, json_schema: dict[str, Any] | None
) -> dict[str, Any] | None:
    """A request's extra fields with ``json_schema`` asked for as its response format; a
    backend's own grammar gives way (a server takes one or the other)."""
    if json_schema is None:
        return extra_body
    kept = {k: v for k, v in (extra_body or {}).items() if k != "grammar"}
    return {**kept, "response_format": response_format("answer", json_schema)}


def parse_object(text: str) -> dict[str, Any] | None:
    """The JSON object an answer holds, or None when it holds none (plain text)."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class FieldStream:
    """Feeds ``on_text`` the decoded text of the string field ``field`` of a JSON object
    streamed in pieces; an answer that does not start as a JSON object is passed on whole."""

    def __init__(self, field: str, on_text: Callable[[str], None]) -> None:
        self.on_text = on_text
        self._opening = re.compile(rf'"{re.escape(field)}"\s*:\s*"')
        self._raw = ""
        self._at = -1  # where the field's undecoded text starts; -1: not found yet
        self._mode = "unknown"  # "json", "text" or "done"
        self._high = ""  # a high surrogate waiting for its low half

    def feed(self, piece: str) -> None:
        if self._mode == "text":
            self.on_text(piece)
            return
        if self._mode == "done":
            return
        self._raw += piece
        if self._mode == "unknown":
            start = self._raw.lstrip()
            if not start:
                return
            if not start.startswith("{"):
                self._mode = "text"
                self.on_text(self._raw)
                return
            self._mode = "json"
        if self._at < 0:
            found = self._opening.search(self._raw)
            if found is None:
                return
            self._at = found.end()
        self._decode()

    def _decode(self) -> None:
        raw, at, out = self._raw, self._at, []
        while at < len(raw):
            char = raw[at]
            if char == '"':
                self._mode = "done"
                break
            if char != "\\":
                out.append(self._high + char)
                self._high = ""
                at += 1
                continue
            if at + 1 >= len(raw):
                break  # the escape's next character has not come yet
            kind = raw[at + 1]
            if kind == "u":
                if at + 6 > len(raw):
                    break
                code = int(raw[at + 2 : at + 6], 16)
                at += 6
                if 0xD800 <= code < 0xDC00:
                    self._high = chr(code)
                    continue
                if 0xDC00 <= code < 0xE000 and self._high:
                    pair = (self._high + chr(code)).encode("utf-16", "surrogatepass")
                    out.append(pair.decode("utf-16"))
                    self._high = ""
                    continue
                out.append(chr(code))
                continue
            out.append(_ESCAPES.get(kind, kind))
            at += 2
        self._at = at
        if out:
            self.on_text("".join(out))
