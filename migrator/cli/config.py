"""The config file: defaults for options, below flags and MIGRATOR_* variables.

``migrator.yaml`` in the working directory, or the file ``--config`` / ``MIGRATOR_CONFIG``
names, holds a map of option names (``database_url``, ``scratch_url``) to values:

    database_url: postgresql://migrator@db.internal/app   # no password here: use PGPASSFILE
    scratch_url: postgresql://migrator@scratch.internal/postgres

Each value is the default of that option in every command whose option reads the
matching variable (MIGRATOR_DATABASE_URL, MIGRATOR_SCRATCH_URL). Typer (its vendored
click) resolves an option from the command line first, then its environment variable,
then the context's default map, so the order is flags > MIGRATOR_* env > file. A key
that is not one of these, or a value that is not a string, is an error naming the file,
line and column.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from migrator.errors import UsageError
from migrator.files import read_text

DEFAULT_FILE = "migrator.yaml"
ENVIRONMENT = {"database_url": "MIGRATOR_DATABASE_URL", "scratch_url": "MIGRATOR_SCRATCH_URL"}
"""Each key stands in for a variable, and sets only the options that read that variable:
`render --database-url` and `queries capture --database-url`, which ignore
MIGRATOR_DATABASE_URL on purpose (they would read production), ignore the file too."""
KEYS = tuple(ENVIRONMENT)

if TYPE_CHECKING:
    import yaml


def _where(path: Path, node: yaml.Node) -> str:
    return f"{path}:{node.start_mark.line + 1}:{node.start_mark.column + 1}"


def read_config(path: Path) -> dict[str, str]:
    """The option defaults a config file sets (an empty file sets none)."""
    import yaml

    text = read_text(path, "config file")
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise UsageError(f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if root is None:
        return {}
    if not isinstance(root, yaml.MappingNode):
        raise UsageError(f"{_where(path, root)}: a config file is a map of option: value")
    values: dict[str, str] = {}
    for key, value in root.value:
        name = key.value if isinstance(key, yaml.ScalarNode) else None
        if name not in KEYS:
            raise UsageError(
                f"{_where(path, key)}: unknown key {name!r}; expected one of {', '.join(KEYS)}"
            )
        if not isinstance(value, yaml.ScalarNode) or value.tag != "tag:yaml.org,2002:str":
            raise UsageError(f"{_where(path, value)}: {name} takes a string")
        values[name] = value.value
    return values


def default_map(command: Any, values: dict[str, str]) -> dict[str, Any]:
    """The context default map for ``command``'s subcommands: each value for every
    (sub)command whose option of that name reads the matching variable."""
    out: dict[str, Any] = {}
    for name, sub in getattr(command, "commands", {}).items():
        if hasattr(sub, "commands"):  # a group: `migrator plan ...`, `migrator queries ...`
            nested = default_map(sub, values)
            if nested:
                out[name] = nested
            continue
        mine = {
            p.name: values[p.name]
            for p in sub.params
            if p.name in values and getattr(p, "envvar", None) == ENVIRONMENT[p.name]
        }
        if mine:
            out[name] = mine
    return out


def config_path(given: Path | None) -> Path | None:
    """The config file to read: the one given, else ./migrator.yaml if there is one."""
    if given is not None:
        return given
    default = Path(DEFAULT_FILE)
    return default if default.is_file() else None


__all__ = ["DEFAULT_FILE", "ENVIRONMENT", "KEYS", "config_path", "default_map", "read_config"]
