"""``constraint-write`` for domains: a column whose type is a domain with a NOT NULL or a
CHECK that a phase brings (ALTER DOMAIN ... ADD CONSTRAINT, a column retyped to a
domain, a new column of a domain type), held against the writes of the version there.

PREPARE passes such a write: the server checks a domain when the value is stored, not
when the statement is planned. So each literal written to the column is cast to its type
by the server (``CAST('x' AS the_domain)``), and the error of a constraint the phase
brings is the finding. An INSERT that leaves the column out (or writes DEFAULT) stores
the column's default, else the domain's, else NULL cast to the domain: a NOT NULL domain
rejects it before any BEFORE trigger runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from migrator.verify.probes.cell import CellProbe
from migrator.verify.probes.server import Outcome, Probe
from migrator.verify.probes.writes import Value, Write
from migrator.verify.queries import Query
from migrator.verify.snapshot import Column, Domain, Relation, Snapshot

_CHECK_VIOLATION, _NOT_NULL_VIOLATION = "23514", "23502"
_CONSTRAINT = re.compile(r'check constraint "((?:[^"]|"")*)"')


@dataclass(frozen=True)
class DomainRules:
    """A column's domain at a phase and what of it the phase brings."""

    column: Column
    domain: Domain
    new_checks: frozenset[str]  # names of the CHECKs the column did not meet before
    new_not_null: bool  # NULL was let through before


def domain_columns(
    rel: Relation, snapshot: Snapshot, prev: Relation | None, previous: Snapshot
) -> dict[str, DomainRules]:
    """The columns of ``rel`` whose domain holds a rule the column lacked in ``prev``
    (the relation at the phase before; None: created at this phase)."""
    found: dict[str, DomainRules] = {}
    for col in rel.columns:
        domain = snapshot.domain(col.type_oid)
        if domain is None or not (domain.not_null or domain.checks):
            continue
        old = prev.column(col.name) if prev is not None else None
        was = previous.domain(old.type_oid) if old is not None else None
        had = set(was.checks) if was is not None else set()
        new_checks = frozenset(
            n for n, d in domain.checks if (n, d) not in had and n not in domain.uncertain
        )
        # NULL is new trouble only where nothing refused it before, and where the column
        # itself is not NOT NULL now (then insert-not-null and the tightened NOT NULL
        # tell it).
        let_null = old is None or not (old.not_null or (was is not None and was.not_null))
        new_not_null = domain.not_null and let_null and not col.not_null
        if new_checks or new_not_null:
            found[col.name] = DomainRules(col, domain, new_checks, new_not_null)
    return found


def _stored(write: Write, rules: DomainRules, value: Value | None) -> Value | None:
    """What the row stores in the column: the value written; for an INSERT that leaves it
    out, or DEFAULT, the column's default, else NULL where the domain has none either
    (None: the domain's default, or an UPDATE that does not touch it)."""
    if value is not None and value.kind != "default":
        return value
    if value is None and write.verb == "update":
        return None
    col = rules.column
    if col.default is not None:
        return Value("literal", col.default)
    if col.identity or col.generated or rules.domain.has_default:
        return None
    return Value("null")


def domain_probes(
    cell: CellProbe,
    query: Query,
    write: Write,
    columns: dict[str, DomainRules],
    by: str,
    fix: str,
    probes: list[Probe],
    handlers: list[Any],
) -> None:
    rel = write.relation
    verb = write.verb_phrase
    for name, rules in columns.items():
        what = f"the domain {rules.domain.name} of {rel.name}.{name}, whose rules {by} brings"
        for row in write.rows:
            written = row.get(name)
            value = _stored(write, rules, written)
            if value is None or value.kind == "unknown":
                continue
            if value.kind == "param":
                if rules.new_checks or rules.new_not_null:
                    cell.add(
                        query,
                        "constraint-write",
                        "warning",
                        f"{verb} {write.target} writes {name} from a parameter: {what}, rejects "
                        "some values",
                        fix,
                        once=f"domain {name}",
                    )
                continue
            if value.kind == "null" and not rules.new_not_null:
                continue  # a CHECK lets NULL through
            if written is None or written.kind == "default":
                if rules.column.required:
                    continue  # insert-not-null's
                left = "leaves out" if written is None else "writes DEFAULT to"
                shown = (
                    f"{left} {name}, which has no default"
                    if value.kind == "null"
                    else f"{left} {name}, whose default is {value.sql}"
                )
            else:
                shown = f"writes {name} = {value.sql or 'NULL'}"
            sql = "NULL" if value.kind == "null" else f"({value.sql})"
            probes.append(Probe([], f"SELECT CAST({sql} AS {rules.column.type}) IS NULL"))
            handlers.append(
                lambda o, r=rules, s=shown, w=what: _outcome(cell, query, write, r, s, w, fix, o)
            )


def _outcome(
    cell: CellProbe,
    query: Query,
    write: Write,
    rules: DomainRules,
    shown: str,
    what: str,
    fix: str,
    outcome: Outcome,
) -> None:
    if outcome.state == _NOT_NULL_VIOLATION and rules.new_not_null:
        pass
    elif outcome.state == _CHECK_VIOLATION and outcome.message:
        named = _CONSTRAINT.search(outcome.message)
        if named is None or named.group(1).replace('""', '"') not in rules.new_checks:
            return  # a rule the column met before: not this phase's
    else:
        return
    cell.add(
        query,
        "constraint-write",
        "error",
        f"{write.verb_phrase} {write.target} {shown}: {what}, rejects it ({outcome.message})",
        fix,
        once=f"domain {rules.column.name} rejects",
    )


__all__ = ["DomainRules", "domain_columns", "domain_probes"]
