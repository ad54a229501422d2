"""The config file: defaults for options, below flags and MIGRATOR_* variables.

``migrator.yaml`` in the working directory, or the file ``--config`` / ``MIGRATOR_CONFIG``
names, holds a map of option names (``database_url``, ``scratch_url``, ``pg_version``) to
values:

    database_url: postgresql://migrator@db.internal/app   # no password here: use PGPASSFILE
    scratch_url: postgresql://migrator@scratch.internal/postgres
    pg_version: 15          # what lint and check judge by offline

Each value is the default of that option in every command whose option reads the
matching variable (MIGRATOR_DATABASE_URL, MIGRATOR_SCRATCH_URL, MIGRATOR_PG_VERSION). Typer (its vendored
click) resolves an option from the command line first, then its environment variable,
then the context's default map, so the order is flags > MIGRATOR_* env > file. A key
that is not one of these, or a value that is not a string (``pg_version``: a version such
as 15, 15.4 or 150004), is an error naming the file, line and column.

A ``lint:`` key holds the project's rule settings for `migrator lint` and the lint of
`migrator check` (lists of rule ids):

    lint: {disable: [M041], warn: [M014], error: [M023], enable: [M042]}

An unknown id, an id listed twice, or an ``enable`` of a rule that is not optional is an
error at that id's file, line and column.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from migrator.errors import UsageError
from migrator.files import read_text

DEFAULT_FILE = "migrator.yaml"
ENVIRONMENT = {
    "database_url": "MIGRATOR_DATABASE_URL",
    "scratch_url": "MIGRATOR_SCRATCH_URL",
    "pg_version": "MIGRATOR_PG_VERSION",
}
"""Each key stands in for a variable, and sets only the options that read that variable:
`render --database-url` and `queries capture --database-url`, which ignore
MIGRATOR_DATABASE_URL on purpose (they would read production), ignore the file too."""
KEYS = tuple(ENVIRONMENT)

LINT_KEYS = ("disable", "warn", "error", "enable")
_COMPATIBLE = ({"enable", "warn"}, {"enable", "error"})

if TYPE_CHECKING:
    import yaml

    from migrator.lint.rules import RuleSettings, Severity


def _where(path: Path, node: yaml.Node) -> str:
    return f"{path}:{node.start_mark.line + 1}:{node.start_mark.column + 1}"


def read_config(path: Path) -> dict[str, str]:
    """The option defaults a config file sets (an empty file sets none)."""
    return read_config_file(path)[0]


def read_config_file(path: Path) -> tuple[dict[str, str], RuleSettings]:
    """The option defaults and the lint rule settings a config file sets."""
    import yaml

    from migrator.lint.rules import RuleSettings
    from migrator.plan.loader import yaml_problem

    text = read_text(path, "config file")
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise UsageError(f"{where}: {yaml_problem(exc)}") from None
    if root is None:
        return {}, RuleSettings()
    if not isinstance(root, yaml.MappingNode):
        raise UsageError(f"{_where(path, root)}: a config file is a map of option: value")
    values: dict[str, str] = {}
    settings = RuleSettings()
    for key, value in root.value:
        name = key.value if isinstance(key, yaml.ScalarNode) else None
        if name == "lint":
            settings = _lint_settings(path, value)
            continue
        if name not in KEYS:
            import difflib

            close = difflib.get_close_matches(str(name), [*KEYS, "lint"], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UsageError(
                f"{_where(path, key)}: unknown key {name!r}{hint}; expected one of "
                f"{', '.join((*KEYS, 'lint'))}"
            )
        if name == "pg_version":
            values[name] = _pg_version(path, value)
            continue
        if not isinstance(value, yaml.ScalarNode) or value.tag != "tag:yaml.org,2002:str":
            raise UsageError(f"{_where(path, value)}: {name} takes a string")
        values[name] = value.value
    return values, settings


def _pg_version(path: Path, node: yaml.Node) -> str:
    """``pg_version: 15`` (or 15.4, 150004): checked where it is written."""
    import yaml

    from migrator.cli.common import parse_pg_version

    text = node.value if isinstance(node, yaml.ScalarNode) else None
    try:
        version = parse_pg_version(text) if isinstance(text, str) and text else None
    except UsageError:
        version = None
    if version is None or version < 90000:
        raise UsageError(
            f"{_where(path, node)}: pg_version takes a PostgreSQL version, 9 or later "
            "(e.g. 15, 15.4 or 150004)"
        )
    return str(text)


def _lint_settings(path: Path, node: yaml.Node) -> RuleSettings:
    """The ``lint:`` map: each rule id checked against the registry where it is written."""
    import yaml

    from migrator.lint.rules import RULES, RuleSettings, last_id, optional_ids

    if not isinstance(node, yaml.MappingNode):
        raise UsageError(
            f"{_where(path, node)}: lint takes a map of {', '.join(LINT_KEYS)} to rule ids"
        )
    lists: dict[str, list[str]] = {}
    seen: dict[str, list[str]] = {}
    for key, value in node.value:
        name = key.value if isinstance(key, yaml.ScalarNode) else None
        if name not in LINT_KEYS:
            raise UsageError(
                f"{_where(path, key)}: unknown lint key {name!r}; expected one of "
                f"{', '.join(LINT_KEYS)}"
            )
        items = value.value if isinstance(value, yaml.SequenceNode) else None
        if items is None:
            raise UsageError(f"{_where(path, value)}: lint.{name} takes a list of rule ids")
        for item in items:
            rule_id = item.value if isinstance(item, yaml.ScalarNode) else None
            if not isinstance(rule_id, str) or rule_id not in RULES:
                raise UsageError(
                    f"{_where(path, item)}: lint.{name}: no lint rule {rule_id}; the rules "
                    f"are M001..{last_id()} (docs/lint-rules.md)"
                )
            # An optional rule may be enabled and given a severity; any other pair clashes.
            clash = [o for o in seen.get(rule_id, ()) if {name, o} not in _COMPATIBLE]
            if clash:
                raise UsageError(
                    f"{_where(path, item)}: lint.{name}: {rule_id} is already in lint.{clash[0]}"
                )
            if name == "enable" and not RULES[rule_id].optional:
                raise UsageError(
                    f"{_where(path, item)}: lint.enable: {rule_id} always applies; the "
                    f"optional rules are {', '.join(optional_ids())}"
                )
            seen.setdefault(rule_id, []).append(name)
            lists.setdefault(name, []).append(rule_id)
    severity: dict[str, Severity] = {}
    for rule_id in lists.get("warn", ()):
        severity[rule_id] = "warning"
    for rule_id in lists.get("error", ()):
        severity[rule_id] = "error"
    return RuleSettings(
        disable=frozenset(lists.get("disable", ())),
        severity=severity,
        enable=frozenset(lists.get("enable", ())),
    )


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


def lint_settings() -> RuleSettings:
    """The rule settings the config file set for this run (the root callback keeps them
    in `Settings.lint`), or none when no file or no ``lint:`` key."""
    from migrator.cli.common import Settings
    from migrator.lint.rules import RuleSettings

    found = Settings.lint
    return found if isinstance(found, RuleSettings) else RuleSettings()


def config_path(given: Path | None) -> Path | None:
    """The config file to read: the one given, else ./migrator.yaml if there is one."""
    if given is not None:
        return given
    default = Path(DEFAULT_FILE)
    return default if default.is_file() else None


__all__ = [
    "DEFAULT_FILE",
    "ENVIRONMENT",
    "KEYS",
    "LINT_KEYS",
    "config_path",
    "default_map",
    "lint_settings",
    "read_config",
    "read_config_file",
]
