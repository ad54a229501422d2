"""Shadow columns kept in step by triggers: what `rename_column` and `alter_column` share.

Both operations give the new version a second column beside the old one while both
versions run, and keep the two in step in both directions with one trigger function,
called by a BEFORE INSERT and a BEFORE UPDATE row trigger (the UPDATE one filtered by
a WHEN condition, `ShadowSync.update_condition`). The old version keeps writing the
old column and never mentions the new one; the new version writes the new one. The
function decides which side a write came from by what changed, never by which version
sent it (no views per version, no search_path):

- INSERT: the shadow has no default, so a NULL shadow means the writer did not set it
  (the old version, or the new one relying on the old column's default): the shadow is
  computed from the old column with ``up``. A shadow that is set, and that disagrees
  with ``up`` of the old column, was written by the new version: the old column is
  computed from it with ``down``, overriding the old column's default.
- UPDATE: a shadow that changed and disagrees with ``up`` of the row came from the new
  version (``down`` fills the old column); a shadow that changed to exactly ``up`` of
  the row (the backfill, or a writer that set both) leaves the old column alone, so a
  lossy ``down`` never rewrites old data. Otherwise, when what ``up`` reads changed, or
  the row was not backfilled yet, the shadow is recomputed.

A BEFORE trigger only edits the row being written, so there is no second UPDATE and
nothing can loop. Concurrent writers to one row are serialised by the row lock; the
trigger runs on the latest version of the row.

The pglast rewriting that carries an index, CHECK or foreign key from one column to
another lives here too; what the catalog says about the column and its dependants is
asked of `migrator.engine.catalog_columns`: operations never run SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pglast
from pglast import ast
from pglast.stream import RawStream
from pglast.visitors import Visitor

from migrator.engine.steps import Step, step
from migrator.ops.expressions import column_refs, qualified, row_variables, trigger_function_sql
from migrator.sqltext import dollar_quoted, ident, literal, private_function_sql, short_name

if TYPE_CHECKING:
    from migrator.engine.catalog_columns import IndexFacts

# -- moving SQL from one column to another --------------------------------------------------


class _Renamer(Visitor):
    def __init__(self, mapping: dict[str, str]) -> None:
        super().__init__()
        self.mapping = mapping

    def visit_ColumnRef(self, ancestors: Any, node: ast.ColumnRef) -> None:
        fields = list(node.fields or ())
        last = fields[-1] if fields else None
        if isinstance(last, ast.String) and last.sval in self.mapping:
            fields[-1] = ast.String(sval=self.mapping[last.sval])
            node.fields = tuple(fields)

    def visit_IndexElem(self, ancestors: Any, node: ast.IndexElem) -> None:
        if node.name in self.mapping:
            node.name = self.mapping[node.name]


def index_for(definition: str, name: str, mapping: dict[str, str], unique: bool) -> str:
    """pg_get_indexdef text rewritten: another name, columns renamed, CONCURRENTLY."""
    stmt = pglast.parse_sql(definition)[0].stmt
    assert isinstance(stmt, ast.IndexStmt)
    _Renamer(mapping)(stmt)
    stmt.idxname = name
    stmt.concurrent = True
    stmt.unique = unique
    stmt.primary = False
    return str(RawStream()(stmt))


def renamed_constraint(definition: str, mapping: dict[str, str]) -> str:
    """pg_get_constraintdef text (CHECK or FOREIGN KEY) with the table's columns renamed, NOT VALID.

    For a foreign key only the referencing side is renamed; the referenced columns are
    another table's (or, for an incoming key, renamed by the caller's mapping on purpose).
    """
    stmt = pglast.parse_sql(f"ALTER TABLE t ADD CONSTRAINT c {definition}")[0].stmt
    assert isinstance(stmt, ast.AlterTableStmt) and stmt.cmds
    cmd = stmt.cmds[0]
    assert isinstance(cmd, ast.AlterTableCmd) and isinstance(cmd.def_, ast.Constraint)
    con = cmd.def_
    _Renamer(mapping)(con)
    if con.fk_attrs:
        con.fk_attrs = _renamed_names(con.fk_attrs, mapping)
    return _not_valid(con)


def renamed_references(definition: str, mapping: dict[str, str]) -> str:
    """An incoming foreign key's definition with the referenced columns renamed."""
    stmt = pglast.parse_sql(f"ALTER TABLE t ADD CONSTRAINT c {definition}")[0].stmt
    assert isinstance(stmt, ast.AlterTableStmt) and stmt.cmds
    cmd = stmt.cmds[0]
    assert isinstance(cmd, ast.AlterTableCmd) and isinstance(cmd.def_, ast.Constraint)
    con = cmd.def_
    if con.pk_attrs:
        con.pk_attrs = _renamed_names(con.pk_attrs, mapping)
    return _not_valid(con)


def _renamed_names(names: tuple[Any, ...], mapping: dict[str, str]) -> tuple[Any, ...]:
    out = []
    for name in names:
        if isinstance(name, ast.String) and name.sval is not None and name.sval in mapping:
            name = ast.String(sval=mapping[name.sval])
        out.append(name)
    return tuple(out)


def _not_valid(con: ast.Constraint) -> str:
    # Re-created constraints are always added NOT VALID and validated in a later
    # transaction (LINT rules 5-7).
    con.conname = None
    con.skip_validation = True
    con.initially_valid = False
    return str(RawStream()(con))


# -- the sync trigger -------------------------------------------------------------------------


@dataclass(frozen=True)
class ShadowSync:
    """What keeps ``column`` and ``shadow`` in step: one trigger function, called by a
    BEFORE INSERT trigger and a BEFORE UPDATE trigger filtered by `update_condition`.

    ``up`` computes the shadow from the row; ``down`` computes the old column, its bare
    ``column`` meaning the shadow's (new) value. Both read columns by their bare names,
    as plan expressions do. Values of the types in ``no_equality`` (json, xml, point...)
    are compared as text.
    """

    column: str
    shadow: str
    shadow_type: str
    up: str
    down: str
    column_types: dict[str, str]
    no_equality: frozenset[str] = frozenset()

    def _differ(self, a: str, b: str, type_sql: str) -> str:
        """``a IS DISTINCT FROM b``, compared as text for types without equality."""
        if type_sql in self.no_equality:
            return f"({a})::text IS DISTINCT FROM ({b})::text"
        return f"{a} IS DISTINCT FROM {b}"

    def _up_reads(self) -> list[str]:
        return [c for c in column_refs(self.up) if c in self.column_types]

    def function_sql(self, function: str) -> str:
        """The trigger function (see the module doc). Each column the expressions read is
        declared as a variable holding the row's value."""
        col, sh, differ = ident(self.column), ident(self.shadow), self._differ
        up, down, shadow_type, types = self.up, self.down, self.shadow_type, self.column_types
        up_reads = self._up_reads()
        down_reads = [c for c in column_refs(down) if c in types and c != self.column]
        declared = list(dict.fromkeys([*up_reads, *down_reads]))
        down_block = (
            "DECLARE\n"
            f"      {col} {shadow_type} := NEW.{sh};\n"
            "    BEGIN\n"
            f"      NEW.{col} := ({down});\n"
            "    END;\n"
        )
        changed = " OR ".join(
            differ(f"NEW.{ident(c)}", f"OLD.{ident(c)}", types[c]) for c in up_reads
        )
        recompute = f"({changed}) OR " if changed else ""
        return trigger_function_sql(
            function,
            row_variables(declared, types),
            "  IF TG_OP = 'INSERT' THEN\n"
            f"    IF NEW.{sh} IS NULL THEN\n"
            f"      NEW.{sh} := ({up});\n"
            f"    ELSIF {differ(f'NEW.{sh}', f'({up})', shadow_type)} THEN\n"
            f"    {down_block}"
            "    END IF;\n"
            f"  ELSIF {differ(f'NEW.{sh}', f'OLD.{sh}', shadow_type)} THEN\n"
            "    -- the new version wrote the shadow; a value that agrees with the old column\n"
            "    -- (the backfill) leaves the old column as it is\n"
            f"    IF {differ(f'NEW.{sh}', f'({up})', shadow_type)} THEN\n"
            f"    {down_block}"
            "    END IF;\n"
            f"  ELSIF {recompute}(NEW.{sh} IS NULL AND NEW.{col} IS NOT NULL) THEN\n"
            "    -- the old version wrote, or the row is not backfilled yet\n"
            f"    NEW.{sh} := ({up});\n"
            "  END IF;\n"
            "  RETURN NEW;\n",
        )

    def update_condition(self) -> str:
        """The WHEN condition of the UPDATE trigger: exactly the rows the function changes.

        Checked by the executor before any PL/pgSQL runs, so an update that leaves both
        columns and what ``up`` reads alone (most of the application's), and the
        backfill's own update (a shadow set to exactly ``up`` of the row), cost a
        comparison, not a function call. The function checks it all again, so it stays
        right on its own.
        """
        col, sh, differ = ident(self.column), ident(self.shadow), self._differ
        changed = [
            differ(f"NEW.{ident(c)}", f"OLD.{ident(c)}", self.column_types[c])
            for c in self._up_reads()
        ]
        shadow_changed = differ(f"NEW.{sh}", f"OLD.{sh}", self.shadow_type)
        up_of_new = qualified(self.up, set(self.column_types))
        # The shadow changed: the function acts unless it changed to exactly ``up``.
        wrote_shadow = (
            f"({shadow_changed} AND {differ(f'NEW.{sh}', f'({up_of_new})', self.shadow_type)})"
            if up_of_new is not None
            else shadow_changed
        )
        recompute = " OR ".join([*changed, f"(NEW.{sh} IS NULL AND NEW.{col} IS NOT NULL)"])
        return f"{wrote_shadow} OR (NOT ({shadow_changed}) AND ({recompute}))"


def update_trigger_name(trigger: str) -> str:
    """The UPDATE half of a sync trigger (``trigger`` is the INSERT half)."""
    return short_name(trigger, "update")


def sync_trigger_step(
    key: str,
    description: str,
    schema: str,
    table: str,
    trigger: str,
    function: str,
    sync: ShadowSync,
) -> Step:
    """Create (or replace) the function and its two triggers, in one transaction."""
    t = ident(schema, table)
    update = update_trigger_name(trigger)
    return step(
        key,
        description,
        sync.function_sql(function),
        private_function_sql(function),
        f"DROP TRIGGER IF EXISTS {ident(trigger)} ON {t}",
        f"DROP TRIGGER IF EXISTS {ident(update)} ON {t}",
        f"CREATE TRIGGER {ident(trigger)} BEFORE INSERT ON {t} "
        f"FOR EACH ROW EXECUTE FUNCTION {function}()",
        f"CREATE TRIGGER {ident(update)} BEFORE UPDATE ON {t} "
        f"FOR EACH ROW WHEN ({sync.update_condition()}) EXECUTE FUNCTION {function}()",
    )


def drop_sync_sql(schema: str, table: str, trigger: str, function: str) -> list[str]:
    """Drop the triggers and their function; rerunnable."""
    t = ident(schema, table)
    return [
        f"DROP TRIGGER IF EXISTS {ident(trigger)} ON {t}",
        f"DROP TRIGGER IF EXISTS {ident(update_trigger_name(trigger))} ON {t}",
        f"DROP FUNCTION IF EXISTS {function}()",
    ]


def shadow_index_steps(
    key: str,
    schema: str,
    table: str,
    indexes: list[IndexFacts],
    mapping: dict[str, str],
    name_for: Any,
) -> list[Step]:
    """Copies of the column's indexes over the shadow, built concurrently one per block.

    Each block drops a leftover of a failed attempt first (LINT rule 4), so a rerun builds
    afresh. The primary key's and unique constraints' indexes are copied as unique
    indexes, which is what ON CONFLICT and a later USING INDEX need.
    """
    steps = []
    for index in indexes:
        name = name_for(index.name)
        steps.append(
            step(
                f"{key}-{index.name}",
                f"copy of index {index.name} over {', '.join(mapping.values())}, concurrently",
                f"DROP INDEX CONCURRENTLY IF EXISTS {ident(schema, name)}",
                index_for(index.definition, name, mapping, index.unique),
                autocommit=True,
            )
        )
    return steps


_SAVE_VIEWS = """
DECLARE
  v record;
BEGIN
  CREATE TEMPORARY TABLE IF NOT EXISTS _migrator_views (
    depth int, name text, definition text, owner text, options text[], comment text,
    grants text[]) ON COMMIT DROP;
  FOR v IN
    WITH RECURSIVE target AS (
      SELECT a.attrelid AS rel, a.attnum FROM pg_attribute a
      WHERE a.attrelid = to_regclass(%(table)s) AND a.attname = %(column)s
    ), deps(oid, depth) AS (
      SELECT r.ev_class, 1 FROM target t
      JOIN pg_depend d ON d.refobjid = t.rel AND d.refobjsubid = t.attnum
      JOIN pg_rewrite r ON r.oid = d.objid
      WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
        AND r.ev_class <> t.rel
      UNION
      SELECT r.ev_class, deps.depth + 1 FROM deps
      JOIN pg_depend d ON d.refobjid = deps.oid AND d.refclassid = 'pg_class'::regclass
      JOIN pg_rewrite r ON r.oid = d.objid
      WHERE d.classid = 'pg_rewrite'::regclass AND r.ev_class <> deps.oid AND deps.depth < 50
    )
    SELECT c.oid, c.oid::regclass::text AS name, max(deps.depth) AS depth,
           pg_get_viewdef(c.oid) AS definition, pg_get_userbyid(c.relowner) AS owner,
           coalesce(c.reloptions, '{}') AS options, obj_description(c.oid, 'pg_class') AS comment,
           ARRAY(SELECT format('GRANT %%s ON %%s TO %%s', x.privilege_type, c.oid::regclass,
                               CASE WHEN x.grantee = 0 THEN 'PUBLIC'
                                    ELSE quote_ident(pg_get_userbyid(x.grantee)) END)
                 FROM aclexplode(c.relacl) AS x WHERE x.grantee <> c.relowner) AS grants
    FROM deps JOIN pg_class c ON c.oid = deps.oid
    GROUP BY c.oid ORDER BY max(deps.depth) DESC
  LOOP
    INSERT INTO _migrator_views
      VALUES (v.depth, v.name, v.definition, v.owner, v.options, v.comment, v.grants);
    EXECUTE format('DROP VIEW %%s', v.name);
  END LOOP;
END
"""

_RESTORE_VIEWS = """
DECLARE
  v record;
  g text;
BEGIN
  IF to_regclass('pg_temp._migrator_views') IS NULL THEN
    RETURN;
  END IF;
  FOR v IN SELECT * FROM pg_temp._migrator_views ORDER BY depth LOOP
    EXECUTE format('CREATE VIEW %%s%%s AS %%s', v.name,
      CASE WHEN cardinality(v.options) > 0
           THEN ' WITH (' || array_to_string(v.options, ', ') || ')' ELSE '' END,
      rtrim(v.definition, ';'));
    EXECUTE format('ALTER VIEW %%s OWNER TO %%I', v.name, v.owner);
    IF v.comment IS NOT NULL THEN
      EXECUTE format('COMMENT ON VIEW %%s IS %%L', v.name, v.comment);
    END IF;
    FOREACH g IN ARRAY v.grants LOOP
      EXECUTE g;
    END LOOP;
  END LOOP;
  DROP TABLE pg_temp._migrator_views;
END
"""


def save_and_drop_views_sql(schema: str, table: str, column: str) -> str:
    """Drop the views over a column (those built on them first), remembering each.

    The definitions are read when the statement runs, not when the plan is rendered or
    the release completed, so an earlier contract step (a rename) is already in them.
    They go to a temporary table dropped at commit; `restore_views_sql` reads it back
    in the same transaction.
    """
    body = _SAVE_VIEWS % {"table": literal(ident(schema, table)), "column": literal(column)}
    return "DO " + dollar_quoted(body)


def restore_views_sql() -> str:
    """Re-create the views `save_and_drop_views_sql` dropped: definition, options, owner,
    comment and grants, those nearest the table first."""
    return "DO " + dollar_quoted(_RESTORE_VIEWS.replace("%%", "%"))
