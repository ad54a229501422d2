"""Durations as plans write them: ``250ms``, ``2s``, ``10m``, ``24h``, or seconds."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
PATTERN_TEXT = r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d)?\s*$"


def parse_duration(value: Any) -> float:
    """Return seconds for a duration; raise ValueError with the accepted forms."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 250ms, 2s, 10m, 24h or a number of seconds")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        match = _PATTERN.match(value)
        if match:
            return float(match.group(1)) * _UNITS[match.group(2) or "s"]
        raise ValueError(
            f"{value!r} is not a duration: expected 250ms, 2s, 10m, 24h or a number of seconds"
        )
    raise ValueError("expected a duration such as 250ms, 2s, 10m, 24h or a number of seconds")


def format_duration(seconds: float) -> str:
    """The shortest plan spelling of a duration."""
    if seconds == 0:
        return "0"
    for unit in ("h", "m", "s"):
        size = _UNITS[unit]
        if seconds >= size and (seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    if (seconds * 1000).is_integer():
        return f"{int(seconds * 1000)}ms"
    return f"{seconds}s"


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": PATTERN_TEXT},
                {"type": "number", "minimum": 0},
            ],
            "description": "a duration: 250ms, 2s, 10m, 24h, or a number of seconds",
        }
    ),
]
"""Seconds as a float in Python; a duration string in YAML and JSON."""
