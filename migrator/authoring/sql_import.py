"""`plan import sql`: a plan from DDL files (a Django ``sqlmigrate`` output, hand-written
migrations), parsed by pglast, PostgreSQL's own parser.

Statements with a plan operation are turned into Alembic operation objects (types and
expressions kept as the SQL text pglast deparses) and converted by
`migrator.authoring.convert` like the other ways in; renames become rename_column /
rename_table. Any other statement is a `sql` operation with the lint's verdict above it.
BEGIN/COMMIT are left out: migrator runs each step in its own transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pglast
import sqlalchemy as sa
from alembic.operations import ops
from pglast import ast, enums
from pglast.stream import RawStream

from migrator.authoring.convert import Choices, Converter, DirectEntry
from migrator.authoring.draft import Draft
from migrator.authoring.models import live_choices, plan_head
from migrator.errors import UsageError
from migrator.files import read_text
from migrator.sqltext import colons_escaped


class SqlType(sa.types.UserDefinedType[Any]):
    """A column type known only as its SQL text."""

    cache_ok = True

    def __init__(self, text: str) -> None:
        self.text = text

    def get_col_spec(self, **kw: Any) -> str:
        return self.text


def _sql(node: Any) -> str:
    return str(RawStream()(node))


def _text(sql: str) -> sa.TextClause:
    """SQL text the way Alembic's operations carry it, colons escaped: ``sa.text`` reads
    ``:2`` in ``'{"k":2}'`` or ``x::int`` after a word as a bind parameter, which the
    conversion then wrote as NULL."""
    return sa.text(colons_escaped(sql))


def _name(node: Any) -> str:
    return str(node.sval if isinstance(node, ast.String) else node)


def _fk_action(code: str) -> str | None:
    return {"c": "cascade", "n": "set null", "d": "set default", "r": "restrict"}.get(code)


class Skip(Exception):
    """The statement has no plan operation: it becomes a `sql` operation."""


class _Statement:
    """One parsed statement turned into Alembic operations (or Skip)."""

    def column(self, table: str, col: Any) -> tuple[sa.Column[Any], list[Any]]:
        kwargs: dict[str, Any] = {"nullable": True}
        extra: list[Any] = []
        for c in col.constraints or ():
            kind = c.contype
            if kind == enums.ConstrType.CONSTR_NOTNULL:
                kwargs["nullable"] = False
            elif kind == enums.ConstrType.CONSTR_NULL:
                kwargs["nullable"] = True
            elif kind == enums.ConstrType.CONSTR_DEFAULT:
                kwargs["server_default"] = _text(_sql(c.raw_expr))
            elif kind == enums.ConstrType.CONSTR_PRIMARY:
                kwargs["primary_key"] = True
                kwargs["nullable"] = False
            elif kind == enums.ConstrType.CONSTR_UNIQUE:
                extra.append(sa.UniqueConstraint(col.colname, name=c.conname))
            elif kind == enums.ConstrType.CONSTR_CHECK:
                extra.append(sa.CheckConstraint(_text(_sql(c.raw_expr)), name=c.conname))
            elif kind == enums.ConstrType.CONSTR_FOREIGN:
                ref = c.pktable.relname
                cols = [_name(n) for n in c.pk_attrs or ()] or ["id"]
                extra.append(
                    sa.ForeignKeyConstraint(
                        [col.colname],
                        [f"{ref}.{cols[0]}"],
                        name=c.conname,
                        ondelete=_fk_action(c.fk_del_action),
                    )
                )
            else:
                raise Skip
        if col.typeName is None:
            raise Skip
        column = sa.Column(col.colname, SqlType(_sql(col.typeName)), **kwargs)
        return column, extra

    def constraint(self, table: str, c: Any) -> Any:
        kind = c.contype
        if kind == enums.ConstrType.CONSTR_UNIQUE and not c.indexname:
            return sa.UniqueConstraint(*[_name(k) for k in c.keys], name=c.conname)
        if kind == enums.ConstrType.CONSTR_CHECK:
            return sa.CheckConstraint(_text(_sql(c.raw_expr)), name=c.conname)
        if kind == enums.ConstrType.CONSTR_FOREIGN:
            ref = c.pktable.relname
            remote = [_name(n) for n in c.pk_attrs or ()] or ["id"]
            return sa.ForeignKeyConstraint(
                [_name(n) for n in c.fk_attrs],
                [f"{ref}.{r}" for r in remote],
                name=c.conname,
                ondelete=_fk_action(c.fk_del_action),
            )
        raise Skip

    def convert(self, stmt: Any) -> tuple[list[ops.MigrateOperation], list[str]]:
        """The operations of one statement, and remarks for the reviewer."""
        notes: list[str] = []
        # By name: pglast's node classes are typed with optional fields mypy would make
        # us test again after the parser has filled them.
        kind = type(stmt).__name__
        if kind == "CreateStmt":
            table = stmt.relation.relname
            items: list[Any] = []
            pk: list[str] = []
            for elt in stmt.tableElts or ():
                if type(elt).__name__ == "ColumnDef":
                    column, extra = self.column(table, elt)
                    items += [column, *extra]
                elif type(elt).__name__ == "Constraint":
                    if elt.contype == enums.ConstrType.CONSTR_PRIMARY:
                        pk += [_name(k) for k in elt.keys]
                    else:
                        items.append(self.constraint(table, elt))
                else:
                    raise Skip
            for item in items:
                if isinstance(item, sa.Column) and item.name in pk:
                    item.primary_key = True
                    item.nullable = False
            for item in items:
                if getattr(item, "deferrable", None):
                    notes.append(_deferrable(item.name))
            return [ops.CreateTableOp(table, items)], notes
        if kind == "AlterTableStmt":
            if stmt.objtype != enums.ObjectType.OBJECT_TABLE:
                raise Skip
            table = stmt.relation.relname
            found: list[ops.MigrateOperation] = []
            for cmd in stmt.cmds:
                found += self.alter(table, cmd, notes)
            return found, notes
        if kind == "IndexStmt":
            if not stmt.idxname or stmt.relation.schemaname not in (None, "public"):
                raise Skip
            columns: list[Any] = []
            for param in stmt.indexParams:
                columns.append(param.name if param.name else _text(_sql(param.expr)))
            kw: dict[str, Any] = {}
            if stmt.accessMethod and stmt.accessMethod != "btree":
                kw["postgresql_using"] = stmt.accessMethod
            if stmt.whereClause is not None:
                kw["postgresql_where"] = _text(_sql(stmt.whereClause))
            if stmt.indexIncludingParams:
                kw["postgresql_include"] = [p.name for p in stmt.indexIncludingParams]
            op = ops.CreateIndexOp(
                stmt.idxname, stmt.relation.relname, columns, unique=bool(stmt.unique), **kw
            )
            return [op], notes
        if kind == "DropStmt":
            names = [[_name(n) for n in obj] for obj in stmt.objects]
            if any(len(n) > 1 and n[0] != "public" for n in names):
                raise Skip
            if stmt.removeType == enums.ObjectType.OBJECT_TABLE:
                return [ops.DropTableOp(n[-1]) for n in names], notes
            if stmt.removeType == enums.ObjectType.OBJECT_INDEX:
                return [ops.DropIndexOp(n[-1]) for n in names], notes
            raise Skip
        if kind == "RenameStmt":
            if stmt.renameType == enums.ObjectType.OBJECT_COLUMN:
                body = {"table": stmt.relation.relname, "from": stmt.subname, "to": stmt.newname}
                return [DirectEntry("expand", "rename_column", body)], notes
            if stmt.renameType == enums.ObjectType.OBJECT_TABLE:
                body = {"from": stmt.relation.relname, "to": stmt.newname}
                return [DirectEntry("expand", "rename_table", body)], notes
            raise Skip
        raise Skip

    def alter(self, table: str, cmd: Any, notes: list[str]) -> list[Any]:
        t = enums.AlterTableType
        kind = cmd.subtype
        if kind == t.AT_AddColumn:
            column, extra = self.column(table, cmd.def_)
            found: list[Any] = [ops.AddColumnOp(table, column)]
            for constraint in extra:
                found += self._add_constraint(table, constraint, notes)
            return found
        if kind == t.AT_DropColumn:
            return [ops.DropColumnOp(table, cmd.name)]
        if kind == t.AT_AlterColumnType:
            definition: Any = cmd.def_
            kw: dict[str, Any] = {}
            if definition.raw_default is not None:
                kw["postgresql_using"] = _sql(definition.raw_default)
            return [
                ops.AlterColumnOp(
                    table, cmd.name, modify_type=SqlType(_sql(definition.typeName)), **kw
                )
            ]
        if kind == t.AT_SetNotNull:
            return [ops.AlterColumnOp(table, cmd.name, modify_nullable=False)]
        if kind == t.AT_DropNotNull:
            return [ops.AlterColumnOp(table, cmd.name, modify_nullable=True)]
        if kind == t.AT_ColumnDefault:
            default = _text(_sql(cmd.def_)) if cmd.def_ is not None else None
            return [ops.AlterColumnOp(table, cmd.name, modify_server_default=default)]
        if kind == t.AT_AddConstraint:
            return self._add_constraint(table, self.constraint(table, cmd.def_), notes)
        if kind == t.AT_DropConstraint:
            return [ops.DropConstraintOp(cmd.name, table)]
        raise Skip

    def _add_constraint(self, table: str, constraint: Any, notes: list[str]) -> list[Any]:
        if getattr(constraint, "deferrable", None):
            notes.append(_deferrable(constraint.name))
        if isinstance(constraint, sa.UniqueConstraint):
            cols = [str(c) for c in constraint._pending_colargs]
            return [ops.CreateUniqueConstraintOp(constraint.name, table, cols)]
        if isinstance(constraint, sa.CheckConstraint):
            if not constraint.name:
                raise Skip
            return [ops.CreateCheckConstraintOp(constraint.name, table, constraint.sqltext)]
        if isinstance(constraint, sa.ForeignKeyConstraint):
            remote = [e._colspec for e in constraint.elements]
            referent = str(remote[0]).rsplit(".", 1)[0]
            return [
                ops.CreateForeignKeyOp(
                    constraint.name,
                    table,
                    referent,
                    list(constraint.column_keys),
                    [str(r).rsplit(".", 1)[1] for r in remote],
                    ondelete=constraint.ondelete,
                )
            ]
        raise Skip


def _deferrable(name: Any) -> str:
    return (
        f"the SQL made {name} DEFERRABLE; the plan's constraint is not deferrable: add it "
        "with a `sql` operation instead if the application relies on deferring it"
    )


def _located(text: str, offset: int) -> tuple[int, int]:
    prefix = text.encode()[:offset].decode(errors="ignore")
    line = prefix.count("\n") + 1
    return line, len(prefix) - (prefix.rfind("\n") + 1) + 1


def parse_file(path: Path) -> list[tuple[ast.Node, str, int]]:
    """(statement, its text, its line) of a SQL file; bad SQL is a UsageError at
    file:line:column (pglast's position)."""
    text = read_text(path, "SQL file", UsageError)
    try:
        raws = pglast.parse_sql(text)
    except pglast.parser.ParseError as exc:
        message = str(exc.args[0]) if exc.args else str(exc)
        offset = int(exc.args[1]) if len(exc.args) > 1 else 0
        line, column = _located(text, offset)
        raise UsageError(f"{path}:{line}:{column}: SQL does not parse: {message}") from None
    found = []
    data = text.encode()
    for raw in raws:
        start = raw.stmt_location or 0
        end = start + raw.stmt_len if raw.stmt_len else len(data)
        statement = data[start:end].decode().strip()
        if raw.stmt is not None:
            found.append((raw.stmt, statement, _located(text, start)[0]))
    return found


@dataclass
class SqlImport:
    """What `plan import sql` needs."""

    release: str
    plans_dir: Path
    files: list[Path]
    fills: dict[str, str] = field(default_factory=dict)
    database_url: str | None = None


def draft_from_sql(request: SqlImport) -> Draft:
    """The plan doing what the SQL files do, in lock-safe forms."""
    parsed = [(path, parse_file(path)) for path in request.files]
    draft = Draft(request.release, plan_head(request.plans_dir, request.release))
    where: dict[int, str] = {}
    notes: dict[int, list[str]] = {}
    operations: list[ops.MigrateOperation] = []
    skipped: list[str] = []
    for path, statements in parsed:
        for node, statement, line in statements:
            if isinstance(node, ast.TransactionStmt):
                skipped.append(f"{path}:{line}")
                continue
            try:
                found, remarks = _Statement().convert(node)
            except Skip:
                found, remarks = [ops.ExecuteSQLOp(statement)], []
            for op in found:
                where[id(op)] = f"from {path}:{line}"
                notes[id(op)] = remarks
            operations += found
    with live_choices(request.database_url, Choices(fills=dict(request.fills))) as choices:
        converter = Converter(choices, lambda op: where.get(id(op), "?"))
        converter.convert(operations, remarks=notes)
    if converter.problems:
        listed = [f"{where.get(id(op), '?')}: {reason}" for op, reason in converter.problems]
        raise UsageError("no safe equivalent for " + "; ".join(listed) + " (nothing written)")
    unused = [f"--fill {k}" for k in request.fills if k not in choices.used_fills]
    if unused:
        raise UsageError(f"{', '.join(unused)}: no new NOT NULL column of that name")
    draft.entries = converter.entries
    draft.header = [
        "Written by `migrator plan import sql` from " + ", ".join(map(str, request.files)) + ".",
        "Review it before the release: see docs/authoring.md.",
    ]
    if skipped:
        draft.header.append(
            "Left out (migrator runs each step in its own transaction): BEGIN/COMMIT at "
            + ", ".join(skipped)
        )
    return draft


__all__ = ["SqlImport", "SqlType", "draft_from_sql", "parse_file"]
