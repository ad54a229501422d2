"""A plan being written: operations with where each came from, and the YAML text.

Generated plans are meant to be reviewed and kept in version control, so the writer
emits block YAML, one key per line, keys in the order the plan format lists them, and a
comment above every operation naming its source (a model attribute, a revision's
file:line, a SQL file's line). What the generator cannot decide is a `Fill`: written as
a ``!fill`` tagged value that the plan loader refuses at its line and column.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from migrator.plan.loader import PLACEHOLDER_TAG

Section = Literal["expand", "contract"]


@dataclass(frozen=True)
class Fill:
    """A value the plan's author must write: ``what`` says what belongs there."""

    what: str


@dataclass
class Entry:
    """One operation of the plan, with its source and the remarks for its reviewer."""

    section: Section
    op: str
    body: dict[str, Any]
    source: str
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Placeholder:
    """Where a `Fill` was written (1-based) and what it asks for."""

    line: int
    column: int
    what: str


@dataclass
class Draft:
    """The plan being written."""

    release: str
    after: str | None = None
    header: list[str] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)

    def add(self, entry: Entry) -> Entry:
        """Append an operation; returns it so notes may be added later."""
        self.entries.append(entry)
        return entry

    def render(self) -> tuple[str, list[Placeholder]]:
        """The YAML text and the placeholders in it."""
        writer = _Writer()
        writer.comment(
            textwrap.fill(
                " ".join(self.header), 88, break_on_hyphens=False, break_long_words=False
            ),
            0,
        )
        writer.line(f"release: {_scalar(self.release)}")
        if self.after is not None:
            writer.line(f"after: {_scalar(self.after)}")
        for section in ("expand", "contract"):
            entries = [e for e in self.entries if e.section == section]
            if not entries:
                continue
            writer.line(f"{section}:")
            for entry in entries:
                writer.comment(entry.source, 2)
                for note in entry.notes:
                    writer.comment(
                        textwrap.fill(note, 88, break_on_hyphens=False, break_long_words=False), 2
                    )
                writer.item({entry.op: entry.body}, 2)
        if self.updates:
            writer.line("backfill:")
            writer.line("  updates:")
            for update in self.updates:
                writer.item(update, 4)
        return "\n".join(writer.lines) + "\n", writer.placeholders


def _scalar(value: Any) -> str:
    """One scalar as YAML would write it (quoted only where needed)."""
    if isinstance(value, str):
        value = str(value)  # SQLAlchemy's quoted_name is a str subclass YAML does not know
        if "'" in value and not any(c in value for c in '"\\\n:#'):
            # SQL is full of single quotes; double quotes keep them readable.
            return f'"{value}"'
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, allow_unicode=True)
    text = text.removesuffix("\n").removesuffix("\n...")
    return text


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.placeholders: list[Placeholder] = []

    def line(self, text: str) -> None:
        self.lines.append(text)

    def comment(self, text: str, indent: int) -> None:
        for part in text.splitlines() or [""]:
            self.lines.append(" " * indent + ("# " + part).rstrip())

    def value(self, prefix: str, value: Any, indent: int) -> None:
        """``prefix`` (a key and colon, or a dash) followed by ``value``."""
        if isinstance(value, Fill):
            text = f"{PLACEHOLDER_TAG} {_scalar(value.what)}"
            column = len(prefix) + 2
            self.placeholders.append(Placeholder(len(self.lines) + 1, column, value.what))
            self.lines.append(f"{prefix} {text}")
        elif isinstance(value, dict) and value:
            self.lines.append(prefix)
            self.mapping(value, indent + 2)
        elif isinstance(value, list) and value and not _flat(value):
            self.lines.append(prefix)
            for item in value:
                self.item(item, indent + 2)
        elif isinstance(value, list):
            self.lines.append(f"{prefix} [{', '.join(_scalar(v) for v in value)}]")
        else:
            self.lines.append(f"{prefix} {_scalar(value)}")

    def mapping(self, data: dict[str, Any], indent: int) -> None:
        for key, value in data.items():
            self.value(" " * indent + f"{_scalar(key)}:", value, indent)

    def item(self, value: Any, indent: int) -> None:
        """A list item at ``indent``: maps continue on the dash's line."""
        if isinstance(value, dict) and value:
            first, *rest = value.items()
            self.value(" " * indent + f"- {_scalar(first[0])}:", first[1], indent + 2)
            self.mapping(dict(rest), indent + 2)
        else:
            self.value(" " * indent + "-", value, indent)


def _flat(items: list[Any]) -> bool:
    return all(not isinstance(v, dict | list | Fill) for v in items)


__all__ = ["Draft", "Entry", "Fill", "Placeholder", "Section"]
