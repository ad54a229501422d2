"""Sizes as plans write them: ``64kB``, ``512MB``, ``2GB`` (PostgreSQL's units, powers
of 1024), or a number of bytes; and ``10%`` shares where a limit may be relative."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_UNITS = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|tb)?\s*$", re.IGNORECASE)
PATTERN_TEXT = r"^\s*\d+(\.\d+)?\s*([bB]|[kKmMgGtT][bB])?\s*$"
_SHARE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")
SHARE_TEXT = r"^\s*\d+(\.\d+)?\s*%\s*$"
_FORMS = "a size such as 64kB, 512MB, 2GB or a number of bytes"


def parse_size(value: Any) -> int:
    """Bytes for a size; ValueError naming the accepted forms."""
    if isinstance(value, bool):
        raise ValueError(f"expected {_FORMS}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if isinstance(value, str):
        match = _PATTERN.match(value)
        if match:
            return round(float(match.group(1)) * _UNITS[(match.group(2) or "b").lower()])
        raise ValueError(f"{value!r} is not a size: expected {_FORMS}")
    raise ValueError(f"expected {_FORMS}")


def parse_share(value: str) -> float | None:
    """The fraction a ``10%`` share stands for; None when ``value`` is not a share."""
    match = _SHARE.match(value)
    if not match:
        return None
    share = float(match.group(1)) / 100
    if not 0 < share <= 1:
        raise ValueError(f"{value!r}: a share is above 0% and at most 100%")
    return share


def format_size(size: int) -> str:
    """The shortest exact spelling of a size (``1536kB``, ``2GB``), as PostgreSQL
    writes them; sizes that are no whole number of a unit keep their bytes."""
    for unit, label in ((1024**4, "TB"), (1024**3, "GB"), (1024**2, "MB"), (1024, "kB")):
        if size >= unit and size % unit == 0:
            return f"{size // unit}{label}"
    return f"{size}B"


def describe_size(size: float) -> str:
    """A size rounded for a message: ``12.3MB``."""
    for unit, label in ((1024**4, "TB"), (1024**3, "GB"), (1024**2, "MB"), (1024, "kB")):
        if size >= unit:
            return f"{size / unit:.1f}{label}"
    return f"{int(size)}B"


Size = Annotated[
    int,
    BeforeValidator(parse_size),
    PlainSerializer(format_size, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": PATTERN_TEXT},
                {"type": "integer", "minimum": 0},
            ],
            "description": _FORMS,
        }
    ),
]
"""Bytes as an int in Python; a size string in YAML and JSON."""


def _size_or_share(value: Any) -> Any:
    if isinstance(value, str):
        if value.strip().lower() == "off":
            return "off"
        share = parse_share(value)
        if share is not None:
            return f"{share * 100:g}%"
    return parse_size(value)


def _format_size_or_share(value: int | str) -> str:
    return value if isinstance(value, str) else format_size(value)


SizeOrShare = Annotated[
    int | str,
    BeforeValidator(_size_or_share),
    PlainSerializer(_format_size_or_share, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": PATTERN_TEXT},
                {"type": "string", "pattern": SHARE_TEXT},
                {"const": "off"},
                {"type": "integer", "minimum": 0},
            ],
            "description": f"{_FORMS}, a share such as 10%, or off",
        }
    ),
]
"""Bytes (int), a share (``"10%"``) or ``"off"``."""
