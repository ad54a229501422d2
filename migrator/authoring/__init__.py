"""Plans from what teams already have: SQLAlchemy models, Alembic revisions, SQL files.

Each way in produces a `Draft` (operations in their lock-safe forms, each with a comment
naming its source) and `write_plan` writes it as reviewable YAML. What cannot be decided
is written as a ``!fill`` placeholder that `migrator plan validate` refuses at its line.
"""

from __future__ import annotations

from pathlib import Path

from migrator.authoring.draft import Draft, Entry, Fill, Placeholder
from migrator.errors import MigratorError, UsageError
from migrator.plan.loader import parse_plan


def write_plan(draft: Draft, plans_dir: Path) -> tuple[Path, list[Placeholder]]:
    """Write ``plans_dir/RELEASE.yaml``; refuse to overwrite. Returns the path and the
    placeholders left in it. A plan without placeholders is parsed before it is written."""
    path = plans_dir / f"{draft.release}.yaml"
    if path.exists():
        raise UsageError(f"{path} exists already; choose another release name or remove it")
    text, placeholders = draft.render()
    if not placeholders:
        try:
            parse_plan(text, str(path))
        except MigratorError as exc:  # pragma: no cover - a generator bug, not user input
            raise MigratorError(
                f"the generated plan does not parse ({exc}); nothing written"
            ) from None
    plans_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path, placeholders


__all__ = ["Draft", "Entry", "Fill", "Placeholder", "write_plan"]
