"""Counts in words for messages: ``1 operation``, ``2 operations``."""

from __future__ import annotations


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and ``noun``, in the plural unless ``n`` is 1 (``plural`` where not +s)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
