"""The `sql` operation: raw SQL for what the catalogue lacks, linted like any statement.

Each text is split into statements by pglast (PostgreSQL's own parser), never by hand.
Consecutive ordinary statements share one transaction (one step); a statement that
PostgreSQL refuses inside a transaction (CREATE/DROP INDEX CONCURRENTLY, REINDEX
CONCURRENTLY, DETACH PARTITION CONCURRENTLY, VACUUM, ALTER TYPE ... ADD VALUE) gets its
own autocommit step. BEGIN/COMMIT/ROLLBACK in the text are refused: migrator manages
the transactions, and a stray COMMIT would silently split a step.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import pglast
from pglast import ast
from pglast.enums import AlterTableType, ObjectType
from pydantic import Field

from migrator.engine.steps import Statement, Step
from migrator.errors import ValidationFailed
from migrator.ops.base import ChangedColumn, Context, Operation, Phase, StepPhase


def _needs_autocommit(node: ast.Node) -> bool:
    """True for a statement that cannot (or should not) run inside a transaction block."""
    if isinstance(node, ast.IndexStmt | ast.DropStmt):
        return bool(node.concurrent)
    if isinstance(node, ast.ReindexStmt):
        return any(
            isinstance(p, ast.DefElem) and p.defname == "concurrently" for p in node.params or ()
        )
    if isinstance(node, ast.AlterTableStmt):
        return any(
            isinstance(cmd, ast.AlterTableCmd)
            and isinstance(cmd.def_, ast.PartitionCmd)
            and bool(cmd.def_.concurrent)
            for cmd in node.cmds or ()
        )
    return isinstance(node, ast.VacuumStmt | ast.AlterEnumStmt | ast.CreatedbStmt | ast.DropdbStmt)


def split_statements(text: str, where: str) -> list[Statement]:
    """The statements of an SQL text, each marked autocommit where it must be."""
    try:
        parsed = pglast.parse_sql(text)
        pieces = pglast.split(text, with_parser=True)
    except pglast.parser.ParseError as exc:
        raise ValidationFailed(f"{where}: not valid SQL: {exc}") from None
    statements: list[Statement] = []
    for raw, sql in zip(parsed, pieces, strict=True):
        node = raw.stmt
        assert node is not None
        if isinstance(node, ast.TransactionStmt):
            raise ValidationFailed(
                f"{where}: {sql.split()[0].upper()} is not allowed: migrator runs each step "
                "in its own transaction (and CONCURRENTLY statements outside one)"
            )
        statements.append(Statement(sql, _needs_autocommit(node)))
    return statements


def group_steps(prefix: str, statements: Sequence[Statement]) -> list[Step]:
    """Consecutive transactional statements in one step, each autocommit one alone."""
    steps: list[Step] = []
    batch: list[Statement] = []

    def flush() -> None:
        if batch:
            n = len(steps) + 1
            steps.append(Step(f"{prefix}-{n}", f"{prefix} SQL, part {n}", tuple(batch)))
            batch.clear()

    for statement in statements:
        if statement.autocommit:
            flush()
            n = len(steps) + 1
            steps.append(
                Step(f"{prefix}-{n}", f"{prefix} SQL, part {n} (autocommit)", (statement,))
            )
        else:
            batch.append(statement)
    flush()
    return steps


def walk_nodes(node: Any) -> Iterator[ast.Node]:
    """Every node of a parse tree, depth first."""
    if isinstance(node, ast.Node):
        yield node
        for name in node:  # pglast nodes iterate over their attribute names
            yield from walk_nodes(getattr(node, name))
    elif isinstance(node, tuple | list):
        for item in node:
            yield from walk_nodes(item)


def sql_column_changes(text: str, phase: Phase) -> list[ChangedColumn]:
    """Columns an SQL text renames or retypes in place, or copies into another column
    with an UPDATE, and the tables it creates triggers on. Nothing for SQL that does
    not parse (the lint reports it)."""
    try:
        stmts = pglast.parse_sql(text)
    except pglast.parser.ParseError:
        return []
    found: list[ChangedColumn] = []
    for raw in stmts:
        stmt = raw.stmt
        if isinstance(stmt, ast.CreateTrigStmt) and stmt.relation is not None:
            rel = stmt.relation
            found.append(
                ChangedColumn(
                    str(rel.relname),
                    None,
                    "trigger",
                    f"trigger {stmt.trigname}",
                    phase,
                    None,
                    rel.schemaname,
                )
            )
        elif (
            isinstance(stmt, ast.RenameStmt)
            and stmt.renameType == ObjectType.OBJECT_COLUMN
            and stmt.relation is not None
        ):
            rel = stmt.relation
            found.append(
                ChangedColumn(
                    str(rel.relname),
                    str(stmt.subname),
                    "rename",
                    f"renamed in place to {stmt.newname}",
                    phase,
                    None,
                    rel.schemaname,
                )
            )
        elif isinstance(stmt, ast.AlterTableStmt) and stmt.relation is not None:
            rel = stmt.relation
            for cmd in stmt.cmds or ():
                if (
                    isinstance(cmd, ast.AlterTableCmd)
                    and cmd.subtype == AlterTableType.AT_AlterColumnType
                ):
                    found.append(
                        ChangedColumn(
                            str(rel.relname),
                            str(cmd.name),
                            "retype",
                            "retyped in place",
                            phase,
                            None,
                            rel.schemaname,
                        )
                    )
        elif isinstance(stmt, ast.UpdateStmt) and stmt.relation is not None:
            # UPDATE t SET new = f(old): a rename or retype by copying, once.
            rel = stmt.relation
            for target in stmt.targetList or ():
                if not isinstance(target, ast.ResTarget) or not target.name:
                    continue
                sources = {
                    n.fields[-1].sval
                    for n in walk_nodes(target.val)
                    if isinstance(n, ast.ColumnRef)
                    and n.fields
                    and isinstance(n.fields[-1], ast.String)
                }
                if len(sources) == 1 and (source := next(iter(sources))) != target.name:
                    found.append(
                        ChangedColumn(
                            str(rel.relname),
                            str(source),
                            "copy",
                            f"copies once into {target.name}",
                            phase,
                            None,
                            rel.schemaname,
                        )
                    )
    return found


class RawSql(Operation):
    """`sql`: SQL text for the expand, the contract and the rollback."""

    op_name: ClassVar[str] = "sql"
    allowed: ClassVar[frozenset[Phase]] = frozenset({"expand", "contract"})

    expand_sql: str | None = Field(default=None, alias="expand")
    contract_sql: str | None = Field(default=None, alias="contract")
    rollback_sql: str | None = Field(default=None, alias="rollback")

    def describe(self) -> str:
        return "raw SQL"

    def written_sql(self, phase: StepPhase) -> str | None:
        if phase == "expand":
            return self.expand_sql
        return self.contract_sql if phase == "contract" else self.rollback_sql

    def with_written_sql(self, phase: StepPhase, text: str) -> RawSql:
        return self.model_copy(update={f"{phase}_sql": text})

    def column_changes(self) -> Sequence[ChangedColumn]:
        # Only a trigger written in the plan's SQL could carry the writes (synced None):
        # the caller, who sees the whole plan, knows whether there is one.
        texts: tuple[tuple[Phase, str | None], ...] = (
            ("expand", self.expand_sql),
            ("contract", self.contract_sql),
        )
        return [
            change for phase, text in texts if text for change in sql_column_changes(text, phase)
        ]

    def validate_live(self, ctx: Context) -> None:
        if self.expand_sql is None and self.contract_sql is None:
            raise ValidationFailed("sql: give expand, contract or both")
        for key, text in (
            ("expand", self.expand_sql),
            ("contract", self.contract_sql),
            ("rollback", self.rollback_sql),
        ):
            if text is not None:
                split_statements(text, f"sql: {key}")
        if self.expand_sql is not None and self.rollback_sql is None:
            raise ValidationFailed(
                "sql: expand is given without rollback; say how to undo it "
                '(rollback: "" if nothing needs undoing)'
            )

    def expand(self, ctx: Context) -> Sequence[Step]:
        if not self.expand_sql:
            return []
        return group_steps("expand", split_statements(self.expand_sql, "sql: expand"))

    def contract(self, ctx: Context) -> Sequence[Step]:
        if not self.contract_sql:
            return []
        return group_steps("contract", split_statements(self.contract_sql, "sql: contract"))

    def rollback(self, ctx: Context) -> Sequence[Step]:
        if not self.rollback_sql:
            return []
        return group_steps("rollback", split_statements(self.rollback_sql, "sql: rollback"))
