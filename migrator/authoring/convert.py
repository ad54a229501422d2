"""Alembic operation objects to plan operations in their lock-safe forms.

Both ways in that speak Alembic end here: the autogenerate comparison of models with a
schema (`produce_migrations`) and the recorded ``upgrade()`` of revision files give the
same ``alembic.operations.ops`` objects. Additions go to ``expand`` in the forms the plan
operations already make safe (a nullable column tightened by ``final``, indexes built
concurrently, constraints NOT VALID then validated); removals go to ``contract``.
What cannot be decided from the operation alone is a `Fill`, never a guess.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from alembic.operations import ops
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.elements import ClauseElement

from migrator.authoring.draft import Entry, Fill, Section
from migrator.authoring.sqlverdict import lint_verdict
from migrator.errors import UsageError
from migrator.sqltext import ident, literal, short_name

_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]

Source = Callable[[ops.MigrateOperation], str]


@dataclass
class Choices:
    """What the author decided on the command line, and what the database can tell.

    ``renames``: ``table.old`` -> new column name, or ``old_table`` -> new table name.
    ``fills``: ``table.column`` -> SQL expression for the rows already there.
    ``casts(old, new)``: whether PostgreSQL casts a value of type old to new (None: not
    known, no database). ``in_place(table, column, new_type)``: the change is
    binary-coercible, done in place without up/down. ``current_type(table, column)``:
    the column's type in the database, where the source does not say it.
    """

    renames: dict[str, str] = field(default_factory=dict)
    fills: dict[str, str] = field(default_factory=dict)
    casts: Callable[[str, str], bool] | None = None
    in_place: Callable[[str, str, str], bool] | None = None
    current_type: Callable[[str, str], str | None] | None = None
    used_renames: set[str] = field(default_factory=set)
    used_fills: set[str] = field(default_factory=set)


class Unsupported(Exception):
    """An operation with no safe plan equivalent; the message says why."""


# -- SQL text of Alembic/SQLAlchemy objects ------------------------------------------------


def type_sql(type_: Any) -> str:
    """A SQLAlchemy type as PostgreSQL spells it, lower case where that changes nothing."""
    text = str(sa.types.to_instance(type_).compile(dialect=_DIALECT))
    return (
        text.lower()
        if text.replace("(", "").replace(")", "").replace(",", "").replace(" ", "").isalnum()
        and text.isupper()
        else text
    )


def clause_sql(clause: Any) -> str:
    """An expression (server default, CHECK, index expression) as SQL text."""
    if isinstance(clause, str):
        return clause
    if isinstance(clause, ClauseElement):
        return str(clause.compile(dialect=_DIALECT, compile_kwargs={"literal_binds": True}))
    return str(clause)


def default_of(column: sa.Column[Any]) -> str | None:
    """A column's server default as SQL (a plain string default is a literal)."""
    default = column.server_default
    if default is None:
        return None
    arg = getattr(default, "arg", None)
    if isinstance(arg, str):
        return literal(arg)
    if arg is None:
        return None
    return clause_sql(arg)


def _on_delete(value: str | None) -> str | None:
    return value.lower() if value else None


# -- the conversion -------------------------------------------------------------------------


def flatten(operations: Iterable[ops.MigrateOperation]) -> list[ops.MigrateOperation]:
    """The leaf operations, in order (ModifyTableOps and OpContainers opened)."""
    found: list[ops.MigrateOperation] = []
    for op in operations:
        if isinstance(op, ops.OpContainer):
            found += flatten(op.ops)
        else:
            found.append(op)
    return found


def _serial(table: sa.Table, column: sa.Column[Any]) -> str | None:
    """serial/bigserial for the column SQLAlchemy would make SERIAL in CREATE TABLE."""
    if column is not table.autoincrement_column or column.server_default is not None:
        return None
    if column.identity is not None:
        return None
    if isinstance(column.type, sa.BigInteger):
        return "bigserial"
    if isinstance(column.type, sa.SmallInteger):
        return "smallserial"
    if isinstance(column.type, sa.Integer):
        return "serial"
    return None


def _column_spec(table: sa.Table, column: sa.Column[Any]) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": column.name,
        "type": _serial(table, column) or type_sql(column.type),
    }
    default = default_of(column)
    if default is not None:
        spec["default"] = default
    if not column.nullable and not column.primary_key:
        spec["nullable"] = False
    return spec


def _constraint_name(constraint: sa.Constraint, table: str, columns: list[str], suffix: str) -> str:
    """The constraint's name, or the one PostgreSQL gives an unnamed one."""
    name = constraint.name
    if isinstance(name, str) and name:
        return name
    return short_name(table, *columns, suffix)


def _create_table(op: ops.CreateTableOp) -> tuple[str, dict[str, Any], list[str]]:
    table = op.to_table()
    notes: list[str] = []
    body: dict[str, Any] = {
        "table": table.name,
        "columns": [_column_spec(table, c) for c in table.columns],
    }
    pk = [c.name for c in table.primary_key.columns]
    if pk:
        body["primary_key"] = pk
    constraints: list[dict[str, Any]] = []
    declared = list(table.constraints) + [
        c for column in table.columns for c in column.constraints if c not in table.constraints
    ]
    for constraint in sorted(declared, key=lambda c: str(c.name or "")):
        if isinstance(constraint, sa.UniqueConstraint):
            cols = [c.name for c in constraint.columns]
            constraints.append(
                {"name": _constraint_name(constraint, table.name, cols, "key"), "unique": cols}
            )
        elif isinstance(constraint, sa.CheckConstraint):
            constraints.append(
                {
                    "name": _constraint_name(constraint, table.name, [], "check"),
                    "check": clause_sql(constraint.sqltext),
                }
            )
        elif isinstance(constraint, sa.ForeignKeyConstraint):
            cols = [c.parent.name for c in constraint.elements]
            # The referenced table need not be in this MetaData (a SQL file, a revision):
            # the column specification says its name.
            targets = [e.target_fullname.split(".") for e in constraint.elements]
            fk: dict[str, Any] = {
                "columns": cols,
                "references": {
                    "table": targets[0][-2],
                    "columns": [t[-1] for t in targets],
                },
            }
            if _on_delete(constraint.ondelete):
                fk["on_delete"] = _on_delete(constraint.ondelete)
            constraints.append(
                {"name": _constraint_name(constraint, table.name, cols, "fkey"), "foreign_key": fk}
            )
    if constraints:
        body["constraints"] = constraints
    for column in table.columns:
        if column.identity is not None:
            notes.append(
                f"{table.name}.{column.name} is an identity column in the model; it is written "
                "as a plain column here: add GENERATED ... AS IDENTITY with a `sql` operation"
            )
    return "create_table", body, notes


class Converter:
    """Turns a list of Alembic operations into plan entries."""

    def __init__(self, choices: Choices, source: Source) -> None:
        self.choices = choices
        self.source = source
        self.entries: list[Entry] = []
        self.problems: list[tuple[ops.MigrateOperation, str]] = []

    def entry(
        self, section: Section, op_name: str, body: dict[str, Any], origin: ops.MigrateOperation
    ) -> Entry:
        entry = Entry(section, op_name, body, self.source(origin))
        self.entries.append(entry)
        return entry

    # -- renames ---------------------------------------------------------------------------

    def _apply_renames(self, leaves: list[ops.MigrateOperation]) -> list[ops.MigrateOperation]:
        result = list(leaves)
        for key, new in self.choices.renames.items():
            drop: ops.MigrateOperation | None
            add: ops.MigrateOperation | None
            if "." in key:
                table, old = key.split(".", 1)
                drop = next(
                    (
                        o
                        for o in result
                        if isinstance(o, ops.DropColumnOp)
                        and o.table_name == table
                        and o.column_name == old
                    ),
                    None,
                )
                add = next(
                    (
                        o
                        for o in result
                        if isinstance(o, ops.AddColumnOp)
                        and o.table_name == table
                        and o.column.name == new
                    ),
                    None,
                )
                what = f"column {table}.{old} to {new}"
            else:
                table, old = key, key
                drop = next(
                    (o for o in result if isinstance(o, ops.DropTableOp) and o.table_name == old),
                    None,
                )
                add = next(
                    (o for o in result if isinstance(o, ops.CreateTableOp) and o.table_name == new),
                    None,
                )
                what = f"table {old} to {new}"
            if drop is None or add is None:
                missing = "disappears" if drop is None else "appears"
                name = key if drop is None else (f"{table}.{new}" if "." in key else new)
                raise UsageError(
                    f"--rename {key}={new}: nothing to rename ({what}): {name} never {missing} "
                    "in the comparison"
                )
            self.choices.used_renames.add(key)
            index = result.index(add)
            result[index] = RenamePair(key, new, drop, add)
            result.remove(drop)
        return result

    def _possible_renames(self, leaves: list[ops.MigrateOperation]) -> dict[int, str]:
        """Notes for drop + add pairs that may be one rename (the flag was not given)."""
        notes: dict[int, str] = {}
        for drop in leaves:
            if isinstance(drop, ops.DropColumnOp):
                # A revision's or a SQL file's drop does not say the type; those say
                # plainly what they drop, so only a comparison's drops are matched.
                old = drop.to_column().type
                if isinstance(old, sa.types.NullType):
                    continue
                for add in leaves:
                    if (
                        isinstance(add, ops.AddColumnOp)
                        and add.table_name == drop.table_name
                        and type_sql(add.column.type) == type_sql(old)
                    ):
                        text = (
                            f"possible rename: {drop.table_name}.{drop.column_name} disappears while "
                            f"{add.column.name} ({type_sql(add.column.type)}) appears. As written this "
                            f"LOSES DATA: {drop.column_name} is dropped with its values and "
                            f"{add.column.name} starts empty. If it is a rename, run again with "
                            f"--rename {drop.table_name}.{drop.column_name}={add.column.name}"
                        )
                        notes[id(drop)] = text
                        notes[id(add)] = text
            if isinstance(drop, ops.DropTableOp):
                for add in leaves:
                    if isinstance(add, ops.CreateTableOp):
                        text = (
                            f"possible rename: table {drop.table_name} disappears while "
                            f"{add.table_name} appears. As written this LOSES DATA: "
                            f"{drop.table_name} is dropped with its rows and {add.table_name} "
                            f"starts empty. If it is a rename, run again with --rename "
                            f"{drop.table_name}={add.table_name}"
                        )
                        notes[id(drop)] = text
                        notes.setdefault(id(add), text)
        return notes

    # -- one operation ---------------------------------------------------------------------

    def convert(
        self,
        operations: Iterable[ops.MigrateOperation],
        remarks: dict[int, list[str]] | None = None,
    ) -> list[Entry]:
        """Convert; ``remarks`` adds notes to the entries of an operation (by id)."""
        leaves = self._apply_renames(flatten(operations))
        notes = self._possible_renames(leaves)
        for op in leaves:
            try:
                made = self.one(op)
            except Unsupported as exc:
                self.problems.append((op, str(exc)))
                continue
            for entry in made:
                entry.notes += (remarks or {}).get(id(op), [])
                if id(op) in notes:
                    entry.notes.append(notes[id(op)])
        return self.entries

    def one(self, op: ops.MigrateOperation) -> list[Entry]:
        before = len(self.entries)
        handler = getattr(self, "_" + type(op).__name__, None)
        if handler is None:
            raise Unsupported(f"{type(op).__name__} has no plan operation")
        handler(op)
        return self.entries[before:]

    def _RenamePair(self, op: RenamePair) -> None:
        if isinstance(op.add, ops.AddColumnOp):
            assert isinstance(op.drop, ops.DropColumnOp)
            entry = self.entry(
                "expand",
                "rename_column",
                {"table": op.drop.table_name, "from": op.drop.column_name, "to": op.new},
                op.add,
            )
            old, new = op.drop.to_column(), op.add.column
            if not isinstance(old.type, sa.types.NullType) and (
                type_sql(old.type) != type_sql(new.type) or bool(old.nullable) != bool(new.nullable)
            ):
                entry.notes.append(
                    f"the model also changes the column ({type_sql(old.type)}, "
                    f"{'NULL' if old.nullable else 'NOT NULL'} -> {type_sql(new.type)}, "
                    f"{'NULL' if new.nullable else 'NOT NULL'}): change it with alter_column "
                    "in the next release, once the rename is contracted"
                )
        else:
            assert isinstance(op.drop, ops.DropTableOp)
            self.entry("expand", "rename_table", {"from": op.drop.table_name, "to": op.new}, op.add)

    def _DirectEntry(self, op: DirectEntry) -> None:
        self.entry(op.section, op.op_name, op.body, op)

    def _ExecuteSQLOp(self, op: ops.ExecuteSQLOp) -> None:
        statement = clause_sql(op.sqltext)
        entry = self.entry(
            "expand",
            "sql",
            {
                "expand": statement,
                "rollback": Fill(
                    "the SQL that undoes this statement while the old version runs "
                    '(or "" when there is nothing to undo)'
                ),
            },
            op,
        )
        entry.notes.append(lint_verdict(statement))

    def _CreateTableOp(self, op: ops.CreateTableOp) -> None:
        name, body, notes = _create_table(op)
        self.entry("expand", name, body, op).notes.extend(notes)

    def _DropTableOp(self, op: ops.DropTableOp) -> None:
        self.entry("contract", "drop_table", {"table": op.table_name}, op)

    def _AddColumnOp(self, op: ops.AddColumnOp) -> None:
        column = op.column
        spec: dict[str, Any] = {"name": column.name, "type": type_sql(column.type)}
        default = default_of(column)
        if default is not None:
            spec["default"] = default
        body: dict[str, Any] = {"table": op.table_name, "column": spec}
        key = f"{op.table_name}.{column.name}"
        notes: list[str] = []
        if not column.nullable:
            fill = self.choices.fills.get(key)
            if fill is not None:
                self.choices.used_fills.add(key)
                body["up"] = fill
            elif default is None:
                body["up"] = Fill(
                    f"an SQL expression over the row of {op.table_name} giving {column.name} "
                    f"for the rows already there and the rows the old version writes (NOT "
                    f"NULL, no default); or pass --fill {key}=EXPR"
                )
            else:
                notes.append(
                    f"rows already there and rows the old version writes get the default "
                    f"({default})"
                )
            body["final"] = {"nullable": False}
        elif key in self.choices.fills:
            self.choices.used_fills.add(key)
            body["up"] = self.choices.fills[key]
        # Alembic's comparison does not compare CHECK constraints; one declared on the new
        # column comes with it: as the column's `check` where PostgreSQL's own name for it
        # is the constraint's name (add_column names it so), else as add_check.
        checks = sorted(
            (c for c in column.constraints if isinstance(c, sa.CheckConstraint)),
            key=lambda c: str(c.name or ""),
        )
        own = short_name(op.table_name, column.name, "check")
        later: list[sa.CheckConstraint] = []
        for constraint in checks:
            if "check" not in spec and constraint.name in (None, own):
                spec["check"] = clause_sql(constraint.sqltext)
            else:
                later.append(constraint)
        self.entry("expand", "add_column", body, op).notes.extend(notes)
        for constraint in later:
            name = _constraint_name(constraint, op.table_name, [column.name], "check")
            self.entry(
                "expand",
                "add_check",
                {
                    "table": op.table_name,
                    "name": name,
                    "expression": clause_sql(constraint.sqltext),
                },
                op,
            )

    def _DropColumnOp(self, op: ops.DropColumnOp) -> None:
        self.entry(
            "contract", "drop_column", {"table": op.table_name, "column": op.column_name}, op
        )

    def _CreateIndexOp(self, op: ops.CreateIndexOp) -> None:
        if op.table_name is None or op.index_name is None:
            raise Unsupported("an index without a name or a table")
        index = op.to_index()
        columns = [c.name if isinstance(c, sa.Column) else clause_sql(c) for c in index.expressions]
        body: dict[str, Any] = {"table": op.table_name, "name": op.index_name, "columns": columns}
        if op.unique:
            body["unique"] = True
        pg = index.dialect_options["postgresql"]
        if pg.get("using"):
            body["method"] = str(pg["using"]).lower()
        if pg.get("where") is not None:
            body["where"] = clause_sql(pg["where"])
        if pg.get("include"):
            body["include"] = [c if isinstance(c, str) else c.name for c in pg["include"]]
        self.entry("expand", "create_index", body, op)

    def _DropIndexOp(self, op: ops.DropIndexOp) -> None:
        self.entry("contract", "drop_index", {"name": op.index_name}, op)

    def _CreateForeignKeyOp(self, op: ops.CreateForeignKeyOp) -> None:
        name = op.constraint_name or short_name(op.source_table, *op.local_cols, "fkey")
        body: dict[str, Any] = {
            "table": op.source_table,
            "name": name,
            "columns": list(op.local_cols),
            "references": {"table": op.referent_table, "columns": list(op.remote_cols)},
        }
        if _on_delete(op.kw.get("ondelete")):
            body["on_delete"] = _on_delete(op.kw.get("ondelete"))
        self.entry("expand", "add_foreign_key", body, op)

    def _CreateUniqueConstraintOp(self, op: ops.CreateUniqueConstraintOp) -> None:
        name = op.constraint_name or short_name(op.table_name, *op.columns, "key")
        self.entry(
            "expand",
            "add_unique",
            {"table": op.table_name, "name": name, "columns": list(op.columns)},
            op,
        )

    def _CreateCheckConstraintOp(self, op: ops.CreateCheckConstraintOp) -> None:
        if not op.constraint_name:
            raise Unsupported("a CHECK constraint without a name")
        self.entry(
            "expand",
            "add_check",
            {
                "table": op.table_name,
                "name": op.constraint_name,
                "expression": clause_sql(op.condition),
            },
            op,
        )

    def _AddConstraintOp(self, op: ops.AddConstraintOp) -> None:
        raise Unsupported(f"adding a constraint of kind {op.constraint_type}")

    def _DropConstraintOp(self, op: ops.DropConstraintOp) -> None:
        if not op.constraint_name:
            raise Unsupported("dropping a constraint without a name")
        self.entry(
            "contract", "drop_constraint", {"table": op.table_name, "name": op.constraint_name}, op
        )

    def _AlterColumnOp(self, op: ops.AlterColumnOp) -> None:
        table, column = op.table_name, op.column_name
        if op.modify_name:
            raise Unsupported(
                f"renaming {table}.{column} in place breaks the old version; "
                f"write rename_column {{table: {table}, from: {column}, to: {op.modify_name}}}"
            )
        body: dict[str, Any] = {"table": table, "column": column}
        notes: list[str] = []
        if op.modify_type is not None:
            new = type_sql(op.modify_type)
            body["type"] = new
            old = type_sql(op.existing_type) if op.existing_type is not None else None
            if old is None and self.choices.current_type is not None:
                old = self.choices.current_type(table, column)
            in_place = self.choices.in_place
            if old is not None and in_place is not None and in_place(table, column, new):
                # The expand is catalog-only; its rollback back to the old type is not,
                # and the lint holds every rollback statement to M016.
                body["lint"] = {
                    "ignore": {
                        "M016": f"only a rollback rewrites the table (back from {new} to "
                        f"{old}); the expand changes the type in place"
                    }
                }
                notes.append(
                    f"{old} -> {new} is done in place; rolling it back rewrites {table} under "
                    "ACCESS EXCLUSIVE (the lint finding M016 is suppressed for that reason)"
                )
            elif op.kw.get("postgresql_using"):
                body["up"] = clause_sql(op.kw["postgresql_using"])
                body["down"] = Fill(
                    f"an SQL expression turning {column} (here the new {new} value) back into "
                    f"{old or 'the old type'}, for the rows the old version reads"
                )
            elif old is not None:
                self._up_down(body, notes, table, column, old, new)
        if op.modify_nullable is not None:
            body["nullable"] = bool(op.modify_nullable)
            if not op.modify_nullable:
                notes.append(
                    f"NOT NULL is set by the contract: rows where {column} is NULL make it "
                    f"fail; fill them first (backfill.updates with where: {column} IS NULL)"
                )
            else:
                notes.append(f"the old version may now read NULL from {table}.{column}")
        if op.modify_server_default is not False and op.modify_server_default is not None:
            default = op.modify_server_default
            arg = getattr(default, "arg", default)
            body["default"] = literal(arg) if isinstance(arg, str) else clause_sql(arg)
        if "lint" in body:
            body["lint"] = body.pop("lint")
        if len(body) > 2:
            self.entry("expand", "alter_column", body, op).notes.extend(notes)
        if op.modify_server_default is None:
            # A dropped default: no alter_column key says that; plain SQL with its undo.
            existing = op.existing_server_default
            arg = getattr(existing, "arg", existing)
            rollback = (
                f"ALTER TABLE {ident(table)} ALTER COLUMN {ident(column)} SET DEFAULT "
                + (literal(arg) if isinstance(arg, str) else clause_sql(arg))
                if arg not in (None, False)
                else Fill(f"the statement that puts back the default of {table}.{column}")
            )
            self.entry(
                "expand",
                "sql",
                {
                    "expand": f"ALTER TABLE {ident(table)} ALTER COLUMN {ident(column)} DROP DEFAULT",
                    "rollback": rollback,
                },
                op,
            )

    def _up_down(
        self, body: dict[str, Any], notes: list[str], table: str, column: str, old: str, new: str
    ) -> None:
        casts = self.choices.casts
        col = ident(column)
        for key, src, dst in (("up", old, new), ("down", new, old)):
            if casts is None or casts(src, dst):
                body[key] = f"{col}::{dst}"
                if casts is None:
                    notes.append(
                        f"{key}: assumed PostgreSQL casts {src} to {dst}; `migrator check` tries it"
                    )
            else:
                meaning = (
                    f"an SQL expression turning {column} ({old}) into {new}"
                    if key == "up"
                    else f"an SQL expression turning {column} (here the new {new} value) back into {old}"
                )
                body[key] = Fill(f"{meaning}: PostgreSQL has no cast from {src} to {dst}")


@dataclass
class DirectEntry(ops.MigrateOperation):
    """A plan operation found directly (a RENAME statement), not through Alembic."""

    section: Section
    op_name: str
    body: dict[str, Any]


@dataclass
class RenamePair(ops.MigrateOperation):
    """A drop + add pair the author named as one rename."""

    key: str
    new: str
    drop: ops.MigrateOperation
    add: ops.MigrateOperation


def unused_choices(choices: Choices) -> list[str]:
    """Flags that matched nothing (a typo should not pass silently)."""
    unused = [f"--fill {k}" for k in choices.fills if k not in choices.used_fills]
    return unused


__all__ = [
    "Choices",
    "Converter",
    "DirectEntry",
    "Unsupported",
    "clause_sql",
    "flatten",
    "type_sql",
]
