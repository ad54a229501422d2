"""Reading the files a user names (plans, config, SQL): a failure is one line naming it."""

from __future__ import annotations

from pathlib import Path

from migrator.errors import MigratorError, UsageError


def read_text(path: str | Path, what: str, error: type[MigratorError] = UsageError) -> str:
    """The UTF-8 text of ``path``; ``error`` saying "``what`` PATH does not exist", "...
    is a folder", or "cannot read ``what`` PATH: why" otherwise."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise error(f"{what} {path} is a folder; name a file in it") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"cannot read {what} {path}: {exc}") from None


__all__ = ["read_text"]
