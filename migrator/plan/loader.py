"""Load a plan from YAML, with file:line:column in every error.

PyYAML composes the document into nodes that carry their positions; the loader turns
them into plain data while remembering where each key and item stood, then lets the
pydantic models judge it. Every error is mapped back to the closest position.
"""

from __future__ import annotations

import difflib
import types
import typing
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from yaml.constructor import SafeConstructor

from migrator.errors import PlanError
from migrator.files import read_text
from migrator.ops import REGISTRY
from migrator.plan.models import ITEM_MODELS, Plan, placement_errors

Loc = tuple[str | int, ...]

PLACEHOLDER_TAG = "!fill"
"""The YAML tag of a value the plan's author must still write (see docs/authoring.md)."""


@dataclass(frozen=True)
class Mark:
    """A position in a file, 1-based."""

    line: int
    column: int


class _Builder:
    def __init__(self, source: str) -> None:
        self.source = source
        self.marks: dict[Loc, Mark] = {}  # where each key (or item) starts
        self.values: dict[Loc, Mark] = {}  # where each non-map value starts
        self.constructor = SafeConstructor()

    def mark(self, node: yaml.Node) -> Mark:
        return Mark(node.start_mark.line + 1, node.start_mark.column + 1)

    def build(self, node: yaml.Node, path: Loc) -> Any:
        if isinstance(node, yaml.MappingNode):
            self.constructor.flatten_mapping(node)
            result: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = self.constructor.construct_object(key_node, deep=True)
                if not isinstance(key, str):
                    raise self.error(f"keys must be strings, got {key!r}", self.mark(key_node))
                if key in result:
                    raise self.error(f"duplicate key {key!r}", self.mark(key_node))
                self.marks[(*path, key)] = self.mark(key_node)
                if not isinstance(value_node, yaml.MappingNode):
                    self.values[(*path, key)] = self.mark(value_node)
                result[key] = self.build(value_node, (*path, key))
            return result
        if isinstance(node, yaml.SequenceNode):
            items = []
            for index, item in enumerate(node.value):
                self.marks[(*path, index)] = self.mark(item)
                items.append(self.build(item, (*path, index)))
            return items
        if node.tag == PLACEHOLDER_TAG:
            # `migrator plan new` / `plan import` leave what they cannot decide as a
            # tagged value; the plan is not runnable until a person writes it.
            raise self.error(
                f"placeholder left by migrator: write {node.value} here (in place of the "
                f"{PLACEHOLDER_TAG} value)",
                self.mark(node),
            )
        return self.constructor.construct_object(node, deep=True)

    def error(self, message: str, mark: Mark) -> PlanError:
        return PlanError(message, location=f"{self.source}:{mark.line}:{mark.column}")


def _resolve(marks: dict[Loc, Mark], loc: Loc) -> Loc:
    """The deepest path of the YAML that a pydantic location points into.

    pydantic's locations may hold segments the YAML lacks (a union tag, the
    ``operations`` of the contract shorthand); those are skipped.
    """
    path: Loc = ()
    for segment in loc:
        if (*path, segment) in marks:
            path = (*path, segment)
    return path


def _locate(marks: dict[Loc, Mark], loc: Loc) -> Mark:
    """The mark of the deepest known prefix of a pydantic location."""
    return marks.get(_resolve(marks, loc), marks.get((), Mark(1, 1)))


def _unwrap(annotation: Any) -> list[Any]:
    """The model classes an annotation may hold, looking through Optional, list, dict."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType, list, dict):
        found: list[Any] = []
        args = typing.get_args(annotation)
        for arg in args[1:] if origin is dict else args:
            found += _unwrap(arg)
        return found
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return []


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The model whose keys are expected at a location, for 'expected one of' hints."""
    current: list[type[BaseModel]] = [Plan]
    for segment in loc:
        if isinstance(segment, int):
            continue
        following: list[Any] = []
        for model in current:
            if (
                segment in REGISTRY
                and model.__name__.endswith("Item")
                and segment not in model.model_fields
            ):
                # pydantic puts the union's tag before the item's own key:
                # ("expand", 0, "add_column", "add_column", "column", ...).
                following.append(ITEM_MODELS[segment])
                continue
            for name, field in model.model_fields.items():
                if segment in (name, field.alias):
                    following += _unwrap(field.annotation)
        if not following:
            return None
        current = list(dict.fromkeys(following))
    return current[0] if len(current) == 1 else None


def _keys_of(model: type[BaseModel]) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items()]


def _describe(error: Any) -> str:
    kind = error["type"]
    loc: Loc = tuple(error["loc"])
    if kind == "extra_forbidden":
        key = str(loc[-1])
        parent = _model_at(loc[:-1])
        if parent is not None:
            keys = _keys_of(parent)
            close = difflib.get_close_matches(key, keys, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            return f"unknown key {key!r}{hint}; expected one of: {', '.join(keys)}"
        return f"unknown key {key!r}"
    if kind == "missing":
        return f"missing required key {loc[-1]!r}"
    message = str(error["msg"])
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    where = str(loc[-1]) if loc and isinstance(loc[-1], str) else ""
    got = error.get("input")
    shown = "" if isinstance(got, dict | list) or kind == "value_error" else f" (got {got!r})"
    return f"{where + ': ' if where else ''}{message}{shown}"


def _check_operation_items(
    data: dict[str, Any], builder: _Builder
) -> tuple[list[PlanError], dict[str, Any], dict[Loc, list[int]]]:
    """Each operation item is a map with exactly one key, a known operation name. Gives
    every item at fault, the plan without them (so that its other errors are found too)
    and, for each operation list that lost items, the original index of each item kept,
    under the list's location as pydantic names it."""
    found: list[PlanError] = []
    cleaned = dict(data)
    kept: dict[Loc, list[int]] = {}
    lists: list[tuple[Loc, Any]] = [(("expand",), data.get("expand"))]
    contract = data.get("contract")
    if isinstance(contract, dict):
        lists.append((("contract", "operations"), contract.get("operations")))
        # `-drop_column:` under contract: a key, where an item was meant
        lists.append((("contract",), {k: v for k, v in contract.items() if k[:1] == "-"}))
    else:
        lists.append((("contract",), contract))
    for path, items in lists:
        named = ".".join(map(str, path))
        if isinstance(items, dict):
            dashed = [key for key in items if isinstance(key, str) and key[:1] == "-"]
            if dashed:
                found.append(
                    builder.error(
                        f"{named}: {dashed[0]!r} is a key, not a list item: an operation "
                        "starts with `- ` (a dash, then a space), "
                        f"`- {dashed[0][1:].lstrip()}:`",
                        _locate(builder.marks, (*path, dashed[0])),
                    )
                )
            elif items and path != ("contract",):
                found.append(
                    builder.error(
                        f"{named} is a list of operations, each starting with `- ` (a dash, "
                        f"then a space), e.g. `- {next(iter(items))}:`; got a map",
                        _locate(builder.marks, path),
                    )
                )
            else:
                continue
            # Validated without it, so that it is not told twice (from what is already
            # left out of the contract, which its operations' faulty items may be).
            if path == ("expand",):
                del cleaned["expand"]
            elif isinstance(cleaned.get("contract"), dict):
                left = ["operations"] if path == ("contract", "operations") else dashed
                cleaned["contract"] = {
                    k: v for k, v in cleaned["contract"].items() if k not in left
                }
            continue
        if not isinstance(items, list):
            continue
        good = []
        for index, item in enumerate(items):
            problem = _item_problem(builder, path, index, item)
            if problem is None:
                good.append(index)
            else:
                found.append(problem)
        if len(good) < len(items):
            if path == ("expand",):
                cleaned["expand"] = [items[i] for i in good]
                kept[path] = good
            elif path == ("contract",):
                cleaned["contract"] = [items[i] for i in good]
                kept[("contract", "operations")] = good
            else:
                cleaned["contract"] = {
                    **cleaned["contract"],
                    "operations": [items[i] for i in good],
                }
                kept[path] = good
    return found, cleaned, kept


def _item_problem(builder: _Builder, path: Loc, index: int, item: Any) -> PlanError | None:
    """What is wrong with one item of an operation list, if anything."""
    if not isinstance(item, dict) or not item:
        return builder.error(
            "an operation is a map with one key, the operation's name, "
            f"e.g. `- add_column: {{...}}`; got {item!r}",
            _locate(builder.marks, (*path, index)),
        )
    names = list(item)
    if len(names) > 1:
        return builder.error(
            f"one operation per list item: found {', '.join(names)}; start each with its own `- `",
            _locate(builder.marks, (*path, index, names[1])),
        )
    name = names[0]
    if name not in REGISTRY:
        close = difflib.get_close_matches(name, list(REGISTRY), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return builder.error(
            f"unknown operation {name!r}; {hint}expected one of: {', '.join(REGISTRY)}",
            _locate(builder.marks, (*path, index, name)),
        )
    return None


def _original(loc: Loc, kept: dict[Loc, list[int]]) -> Loc:
    """A pydantic location in the plan validated without its faulty items, as a location
    in the plan as written."""
    for prefix, indices in kept.items():
        n = len(prefix)
        at = loc[n] if loc[:n] == prefix and len(loc) > n else None
        if isinstance(at, int):
            return (*prefix, indices[at], *loc[n + 1 :])
    return loc


# The usual slips, told by PyYAML's problem (and, where one problem has several causes,
# the construct it was reading), each with what to do. The first that matches speaks.
_YAML_HINTS: tuple[tuple[str, str, str], ...] = (
    (
        "but found '?'",
        "",
        "a `key:` where a list item goes: an item starts with `- ` (a dash, then a space); "
        "or a key of the map above the list, indented too far: line it up with that map's "
        "keys",
    ),
    ("found character '\\t'", "", "indent with spaces: YAML does not allow tabs"),
    ("but found '}'", "", "a `}` that no `{` opened"),
    ("but found ']'", "", "a `]` that no `[` opened"),
    (
        "expected <block end>",
        "",
        "this line is indented differently from the keys above it: the keys of one map "
        "start in the same column",
    ),
    (
        "mapping values are not allowed here",
        "",
        "a `key:` where none can start: line it up with the keys above it, check that the "
        "line above has its `:`, or quote a value that holds `: `",
    ),
    ("could not find expected ':'", "", "a key needs a `:` after it"),
    ("got '<stream end>'", "flow mapping", "a `{` is not closed by a `}`"),
    ("got '<stream end>'", "flow sequence", "a `[` is not closed by a `]`"),
    (
        "expected ',' or '}'",
        "",
        "the entries of a `{ }` map are separated by `,`: one is missing, or the `{` is not "
        "closed by a `}` on its line",
    ),
    (
        "expected ',' or ']'",
        "",
        "the items of a `[ ]` list are separated by `,`: one is missing, or the `[` is not "
        "closed by a `]` on its line",
    ),
    (
        "escape",
        "double-quoted",
        "in double quotes a backslash starts an escape: quote SQL with single quotes "
        "(`'...'`, a quote inside written twice), or write the backslash twice",
    ),
    ("found unexpected end of stream", "quoted scalar", "a quote is not closed"),
)


def yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's complaint as one line: what it found, where the construct it was reading
    started (when that is elsewhere) and, for the usual slips, what to do."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return f"invalid YAML: {exc}"
    text = f"invalid YAML: {exc.problem or exc.context or 'cannot be read'}"
    start, at = exc.context_mark, exc.problem_mark
    if exc.context and exc.problem:
        began = ""
        if start is not None and (at is None or (start.line, start.column) != (at.line, at.column)):
            began = f" that starts at {start.line + 1}:{start.column + 1}"
        text += f" ({exc.context}{began})"
    problem, context = exc.problem or "", exc.context or ""
    hint = next(
        (h for words, within, h in _YAML_HINTS if words in problem and within in context), None
    )
    return f"{text}; {hint}" if hint else text


def parse_plan(text: str, source: str = "<plan>") -> Plan:
    """Parse plan text; every error is a PlanError naming source:line:column."""
    builder = _Builder(source)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Mark(mark.line + 1, mark.column + 1) if mark else Mark(1, 1)
        raise builder.error(yaml_problem(exc), where) from None
    if node is None:
        raise builder.error("the plan is empty; expected at least `release:`", Mark(1, 1))
    builder.marks[()] = builder.mark(node)
    data = builder.build(node, ())
    if not isinstance(data, dict):
        raise builder.error("a plan is a map of keys (release:, expand:, ...)", Mark(1, 1))
    found, cleaned, kept = _check_operation_items(data, builder)
    try:
        plan = Plan.model_validate(cleaned)
    except ValidationError as exc:
        # An unknown key explains the errors that follow from it (a typo'd key is also
        # a missing one), so it is reported first.
        errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        for error in errors:
            path = _resolve(builder.marks, _original(tuple(error["loc"]), kept))
            # A wrong value is shown where the value stands; a wrong key where the key does.
            at = builder.marks.get(path, Mark(1, 1))
            if error["type"] not in ("extra_forbidden", "missing") and path in builder.values:
                at = builder.values[path]
            found.append(builder.error(_describe(error), at))
    if found:
        first = found[0]
        first.more = found[1:]
        raise first from None
    for loc, message in placement_errors(plan):
        raise builder.error(message, _locate(builder.marks, loc))
    _remember(plan, PlanPositions(source, text, builder.marks, builder.values))
    return plan


@dataclass(frozen=True)
class PlanPositions:
    """Where the keys and values of a parsed plan stood in its file (1-based marks).

    ``keys[("expand", 0, "add_column")]`` is the mark of that key; ``values[...]`` the
    mark of its value. ``text`` is the plan as read, for positions inside a value.
    """

    source: str
    text: str
    keys: dict[Loc, Mark]
    values: dict[Loc, Mark]

    def operation_path(self, section: str, index: int) -> Loc:
        """Where operation ``index`` of ``section`` sits: ``contract:`` is a list or a map
        with ``operations:``."""
        if section == "contract" and ("contract", "operations", index) in self.keys:
            return ("contract", "operations", index)
        return (section, index)

    def operation(self, section: str, index: int, op_name: str) -> Mark | None:
        """The mark of an operation's key (``- add_column:``), else of its list item."""
        path = self.operation_path(section, index)
        return self.keys.get((*path, op_name)) or self.keys.get(path)


# Positions live beside the (frozen) Plan, keyed by identity and dropped with the plan,
# so the plan's fields, equality and digest stay exactly what the YAML says.
_POSITIONS: dict[int, tuple[weakref.ref[Plan], PlanPositions]] = {}


def _remember(plan: Plan, positions: PlanPositions) -> None:
    key = id(plan)
    _POSITIONS[key] = (weakref.ref(plan, lambda _: _POSITIONS.pop(key, None)), positions)


def plan_positions(plan: Plan) -> PlanPositions | None:
    """The positions of a plan that `parse_plan` or `load_plan` read; None for others."""
    entry = _POSITIONS.get(id(plan))
    if entry is None or entry[0]() is not plan:
        return None
    return entry[1]


def load_plan(path: str | Path) -> Plan:
    """Read and parse a plan file."""
    return parse_plan(read_text(path, "plan file", PlanError), str(path))


QUERY_SET_SUFFIXES = (".sql", ".yaml", ".yml")


def missing_files(plan: Plan, plan_path: Path, *, baseline: bool = True) -> list[PlanError]:
    """The files a plan names that are not there, each at its value's file:line:column:
    ``baseline:`` (a .sql file; left out with ``baseline=False``, for a check that reads
    the live schema instead) and ``versions.old|new.queries`` (a folder, a .sql file or a
    .yaml list), resolved against the plan's folder as `check` resolves them."""
    positions = plan_positions(plan)
    source = positions.source if positions else str(plan_path)
    named: list[tuple[Loc, str, str]] = []
    if baseline and plan.baseline is not None:
        named.append((("baseline",), plan.baseline, "baseline"))
    if plan.versions is not None:
        for key in ("old", "new"):
            queries = getattr(plan.versions, key).queries
            if queries is not None:
                named.append((("versions", key, "queries"), queries, f"versions.{key}.queries"))
    errors: list[PlanError] = []
    for loc, value, what in named:
        path = Path(value)
        if not path.is_absolute():
            path = plan_path.parent / path
        if what == "baseline":
            problem = None if path.is_file() else f"{what}: {value} is not a file ({path})"
        elif not path.exists():
            problem = f"{what}: {value} does not exist ({path})"
        elif path.is_file() and path.suffix not in QUERY_SET_SUFFIXES:
            problem = f"{what}: {value} is neither a folder, a .sql file nor a .yaml list"
        else:
            problem = None
        if problem is None:
            continue
        mark = Mark(1, 1)
        if positions is not None:
            mark = positions.values.get(loc) or positions.keys.get(loc) or mark
        errors.append(PlanError(problem, location=f"{source}:{mark.line}:{mark.column}"))
    return errors
