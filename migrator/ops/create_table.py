"""The `create_table` operation.

A new table is empty and no version uses it yet, so it is made in one statement with
everything declared: defaults of any kind, NOT NULL, checks, unique and foreign keys
(checking an empty table costs nothing). Foreign keys take SHARE ROW EXCLUSIVE on the
tables they reference for the moment of the CREATE, never ACCESS EXCLUSIVE. The
rollback drops the table; the contract has nothing to do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from pydantic import Field, model_validator

from migrator.engine.catalog_tables import index_build_error
from migrator.engine.steps import Step, step
from migrator.errors import ValidationFailed
from migrator.ops.base import Context, Operation, Phase
from migrator.ops.columns import (
    ColumnSpec,
    FkOptions,
    Identifier,
    TableReference,
    check_name,
    reference_name,
    unique_name,
)
from migrator.ops.expressions import default_sql
from migrator.ops.safe import index_key, lock_referenced_by_sql
from migrator.ops.validation import expression_columns, require_columns, require_table
from migrator.pgtypes import is_serial
from migrator.sqltext import ident, literal, short_name
from migrator.strict import Strict


class ForeignKeyConstraint(FkOptions):
    """``foreign_key: {columns, references: {table, columns}, on_delete, on_update, match,
    deferrable, initially_deferred}``."""

    columns: list[Identifier] = Field(min_length=1)
    references: TableReference


class ExclusionElement(Strict):
    """One element of an exclusion: ``{column: during, with: "&&"}`` (column or expression)."""

    column: str = Field(description="a column of the table, or an SQL expression")
    with_: str = Field(
        alias="with", pattern=r"^[-+*/<>=~!@#%^&|`?]{1,63}$", description="the operator: =, &&, ..."
    )


class Exclusion(Strict):
    """``exclude: {using: gist, elements: [...], where: ...}``: no two rows for which every
    element's operator is true."""

    using: str = Field(default="gist", pattern=r"^[a-z_][a-z0-9_]*$")
    elements: list[ExclusionElement] = Field(min_length=1)
    where: str | None = None

    def keys(self, columns: Sequence[str]) -> list[str]:
        """The elements as index keys (a column quoted, an expression parenthesised)."""
        return [index_key(e.column, columns) for e in self.elements]

    def sql(self, columns: Sequence[str]) -> str:
        """``EXCLUDE USING gist (during WITH &&) WHERE (...)``; ``columns`` are the table's."""
        elements = ", ".join(
            f"{key} WITH {e.with_}"
            for key, e in zip(self.keys(columns), self.elements, strict=True)
        )
        return f"EXCLUDE USING {self.using} ({elements})" + (
            f" WHERE ({self.where})" if self.where else ""
        )


def exclusion_error(
    ctx: Context,
    table: str,
    name: str,
    exclude: Exclusion,
    columns: Sequence[tuple[str, str]] | None = None,
    extra: Mapping[str, str] | None = None,
) -> str | None:
    """Why PostgreSQL refuses the exclusion constraint (an operator the column's type has
    no operator class for, one that is not commutative, an unknown function), or None.

    The constraint is added to an empty temporary copy of the table (``columns`` as
    (name, type SQL) for a table the plan creates; ``extra``, name -> type SQL, the
    columns earlier operations add to a live one), in a savepoint rolled back: the same
    build `create_index` tries, so the check runs before anything changes.
    """
    names = [c for c, _ in columns] if columns is not None else ctx.column_names(table)

    def build(schema: str, probe: str) -> str:
        return f"ALTER TABLE {ident(schema, probe)} ADD CONSTRAINT {ident(name)} " + exclude.sql(
            names
        )

    problem = index_build_error(ctx.catalog, ctx.schema, table, build, columns, extra)
    if problem and "no default operator class" in problem and exclude.using == "gist":
        problem += (
            " (the btree_gist extension gives gist operator classes to scalar types: "
            "CREATE EXTENSION btree_gist)"
        )
    return problem


class TableConstraint(Strict):
    """A named table constraint: exactly one of check, unique (with include), foreign_key,
    exclude."""

    name: Identifier
    check: str | None = None
    unique: list[Identifier] | None = None
    include: list[Identifier] | None = Field(
        default=None, description="with unique: columns the index carries, not part of the key"
    )
    foreign_key: ForeignKeyConstraint | None = None
    exclude: Exclusion | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> TableConstraint:
        kinds = [
            k for k in ("check", "unique", "foreign_key", "exclude") if getattr(self, k) is not None
        ]
        if len(kinds) != 1:
            raise ValueError(
                "a constraint takes exactly one of check, unique, foreign_key, exclude"
            )
        if self.include is not None and self.unique is None:
            raise ValueError("include goes with unique")
        return self

    def columns_named(self) -> list[str]:
        """The plain columns the constraint names (expressions left out)."""
        if self.unique is not None:
            return self.unique + (self.include or [])
        if self.foreign_key is not None:
            return self.foreign_key.columns
        if self.exclude is not None:
            return [e.column for e in self.exclude.elements if e.column.isidentifier()]
        return []


class NamedPrimaryKey(Strict):
    """``primary_key: {name: payments_pk, columns: [id]}``."""

    name: Identifier
    columns: list[Identifier] = Field(min_length=1)


class CreateTable(Operation):
    """`create_table`: see the catalogue in docs/plan-format.md."""

    op_name: ClassVar[str] = "create_table"
    allowed: ClassVar[frozenset[Phase]] = frozenset({"expand"})
    table: Identifier
    columns: list[ColumnSpec] = Field(min_length=1)
    primary_key: list[Identifier] | NamedPrimaryKey | None = Field(
        default=None, description="the key's columns, or {name, columns}"
    )
    constraints: list[TableConstraint] = Field(default_factory=list)
    comment: str | None = Field(default=None, description="COMMENT ON the table")

    def describe(self) -> str:
        return f"create table {self.table}"

    def _key_columns(self) -> list[str]:
        if isinstance(self.primary_key, NamedPrimaryKey):
            return self.primary_key.columns
        return self.primary_key or []

    def _key_name(self) -> str:
        if isinstance(self.primary_key, NamedPrimaryKey):
            return self.primary_key.name
        return short_name(self.table, "pkey")

    def constraint_names(self) -> list[str]:
        """Every constraint the table is created with, by name (index-backed ones too)."""
        names = [self._key_name()] if self.primary_key else []
        for col in self.columns:
            names += [
                n
                for n in (
                    check_name(col.check, self.table, col.name),
                    unique_name(col.unique, self.table, col.name),
                    reference_name(col.references, self.table, col.name)
                    if col.references is not None
                    else None,
                )
                if n is not None
            ]
        return names + [k.name for k in self.constraints]

    def _column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def validate_live(self, ctx: Context) -> None:
        where = f"create_table {self.table}"
        if ctx.relation_taken(self.table):
            raise ValidationFailed(
                f"{where}: a table, view, index or sequence named {ctx.schema}.{self.table} "
                "already exists"
            )
        if self.table in ctx.planned_types or ctx.catalog.type_kind(ctx.schema, self.table):
            # A table brings a row type of its own name.
            raise ValidationFailed(
                f"{where}: a type named {ctx.schema}.{self.table} already exists"
            )
        names = self._column_names()
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValidationFailed(f"{where}: column {', '.join(twice)} is declared twice")
        for col in self.columns:
            # serial is no type but CREATE TABLE shorthand; on a new, empty table it is fine.
            if is_serial(col.type):
                continue
            if not ctx.type_known(col.type):
                raise ValidationFailed(f"{where}: column {col.name}: unknown type {col.type!r}")
        for key, cols in (("primary_key", self._key_columns()),) + tuple(
            (f"constraint {k.name}", k.columns_named()) for k in self.constraints
        ):
            missing = [c for c in cols if c not in names]
            if missing:
                raise ValidationFailed(f"{where}: {key} names unknown column {', '.join(missing)}")
        for label, expression in [
            *((f"column {c.name} check", c.check_sql) for c in self.columns),
            *((f"constraint {k.name}", k.check) for k in self.constraints),
            *(
                (f"constraint {k.name} where", k.exclude.where)
                for k in self.constraints
                if k.exclude is not None
            ),
        ]:
            if expression is not None:
                expression_columns(f"{where}: {label}", expression, names, "which is not a column")
        self._validate_generated(where, names)
        for label, ref_table, ref_columns in self._references():
            if ref_table == self.table:
                missing = [c for c in ref_columns if c not in names]
                if missing:
                    raise ValidationFailed(
                        f"{where}: {label} references unknown column {', '.join(missing)}"
                    )
                continue
            require_table(ctx, f"{where}: {label}", ref_table)
            require_columns(ctx, f"{where}: {label}", ref_table, ref_columns)
            if ref_table not in ctx.planned_tables and not ctx.catalog.has_unique_key(
                ctx.schema, ref_table, ref_columns
            ):
                raise ValidationFailed(
                    f"{where}: {label}: {ref_table} ({', '.join(ref_columns)}) is not a primary "
                    "key or unique, so it cannot be referenced"
                )
        constraints = self.constraint_names()
        twice = sorted({n for n in constraints if constraints.count(n) > 1})
        if twice:
            raise ValidationFailed(f"{where}: constraint name {', '.join(twice)} is used twice")
        # A primary key's or unique constraint's index is a relation of the schema.
        keyed = [self._key_name()] if self.primary_key else []
        keyed += [k.name for k in self.constraints if k.unique is not None]
        keyed += [
            n for c in self.columns if (n := unique_name(c.unique, self.table, c.name)) is not None
        ]
        for name in keyed:
            if ctx.relation_taken(name):
                raise ValidationFailed(
                    f"{where}: a table, view, index or sequence named {ctx.schema}.{name} "
                    "already exists (the name of a key's index)"
                )
        self._validate_exclusions(ctx, where)
        ctx.planned_relations.update(keyed)
        ctx.planned_tables[self.table] = names
        ctx.planned_table_types[self.table] = {c.name: c.type for c in self.columns}
        for name in constraints:
            ctx.plan_constraint(self.table, name)
        ctx.planned_generated[self.table] = {c.name for c in self.columns if c.generated}

    def _validate_exclusions(self, ctx: Context, where: str) -> None:
        """Each exclusion as PostgreSQL takes it, tried on an empty temporary table of the
        new table's columns: an operator the type has no operator class for is refused
        here, not when the expand's CREATE TABLE fails."""
        exclusions = [k for k in self.constraints if k.exclude is not None]
        if not exclusions or any(ctx.type_planned(c.type) for c in self.columns):
            return  # a type an earlier operation creates is not there to try it with
        columns = [(c.name, c.type) for c in self.columns]
        for k in exclusions:
            assert k.exclude is not None
            problem = exclusion_error(ctx, self.table, k.name, k.exclude, columns)
            if problem:
                raise ValidationFailed(
                    f"{where}: constraint {k.name}: PostgreSQL refuses the exclusion: {problem}"
                )

    def _validate_generated(self, where: str, names: list[str]) -> None:
        """A generated column reads columns of the table, none of them generated
        (PostgreSQL: "cannot use generated column in column generation expression")."""
        generated = {c.name for c in self.columns if c.generated is not None}
        for col in self.columns:
            if col.generated is None:
                continue
            refs = expression_columns(
                f"{where}: column {col.name} generated",
                col.generated,
                names,
                "which is not a column",
            )
            chained = [r for r in refs if r in generated]
            if chained:
                raise ValidationFailed(
                    f"{where}: column {col.name} generated reads {', '.join(chained)}, itself "
                    "a generated column; PostgreSQL computes a generated column from plain "
                    "columns only: write the other expression in instead"
                )

    def _references(self) -> list[tuple[str, str, list[str]]]:
        refs = [
            (f"column {c.name} references", c.references.table, [c.references.column])
            for c in self.columns
            if c.references is not None
        ]
        refs += [
            (
                f"constraint {k.name}",
                k.foreign_key.references.table,
                k.foreign_key.references.columns,
            )
            for k in self.constraints
            if k.foreign_key is not None
        ]
        return refs

    def _definitions(self, ctx: Context) -> list[str]:
        parts: list[str] = []
        for col in self.columns:
            sql = f"{ident(col.name)} {col.type}{col.generated_sql()}"
            if col.default is not None:
                sql += f" DEFAULT {default_sql(col.default)}"
            if not col.nullable:
                sql += " NOT NULL"
            parts.append(sql)
        if self.primary_key:
            parts.append(
                f"CONSTRAINT {ident(self._key_name())} "
                f"PRIMARY KEY ({', '.join(ident(c) for c in self._key_columns())})"
            )
        for col in self.columns:
            check = check_name(col.check, self.table, col.name)
            if check is not None:
                parts.append(f"CONSTRAINT {ident(check)} CHECK ({col.check_sql})")
            unique = unique_name(col.unique, self.table, col.name)
            if unique is not None:
                parts.append(f"CONSTRAINT {ident(unique)} UNIQUE ({ident(col.name)})")
            if col.references is not None:
                ref = col.references
                name = reference_name(ref, self.table, col.name)
                parts.append(
                    f"CONSTRAINT {ident(name)} FOREIGN KEY ({ident(col.name)}) "
                    f"REFERENCES {ident(ctx.schema, ref.table)} ({ident(ref.column)})"
                    + ref.fk_sql()
                )
        for k in self.constraints:
            if k.check is not None:
                parts.append(f"CONSTRAINT {ident(k.name)} CHECK ({k.check})")
            elif k.unique is not None:
                parts.append(
                    f"CONSTRAINT {ident(k.name)} UNIQUE ({', '.join(ident(c) for c in k.unique)})"
                    + (f" INCLUDE ({', '.join(ident(c) for c in k.include)})" if k.include else "")
                )
            elif k.exclude is not None:
                parts.append(f"CONSTRAINT {ident(k.name)} " + k.exclude.sql(self._column_names()))
            elif k.foreign_key is not None:
                fk = k.foreign_key
                parts.append(
                    f"CONSTRAINT {ident(k.name)} FOREIGN KEY "
                    f"({', '.join(ident(c) for c in fk.columns)}) "
                    f"REFERENCES {ident(ctx.schema, fk.references.table)} "
                    f"({', '.join(ident(c) for c in fk.references.columns)})" + fk.fk_sql()
                )
        return parts

    def _comments(self, ctx: Context) -> list[str]:
        t = ident(ctx.schema, self.table)
        sqls = (
            [f"COMMENT ON TABLE {t} IS {literal(self.comment)}"] if self.comment is not None else []
        )
        return sqls + [
            f"COMMENT ON COLUMN {t}.{ident(c.name)} IS {literal(c.comment)}"
            for c in self.columns
            if c.comment is not None
        ]

    def expand(self, ctx: Context) -> Sequence[Step]:
        body = ",\n  ".join(self._definitions(ctx))
        return [
            step(
                "create-table",
                f"create table {self.table}",
                f"CREATE TABLE {ident(ctx.schema, self.table)} (\n  {body}\n)",
                *self._comments(ctx),
            )
        ]

    def rollback(self, ctx: Context) -> Sequence[Step]:
        return [
            step(
                "drop-table",
                f"drop the new table {self.table}",
                # Its foreign keys go with it: the tables they reference first.
                *lock_referenced_by_sql(ctx.catalog, ctx.schema, self.table),
                f"DROP TABLE IF EXISTS {ident(ctx.schema, self.table)}",
            )
        ]
