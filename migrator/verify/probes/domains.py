"""``constraint-write`` for domains: a column whose type is a domain with a NOT NULL or a
CHECK that a phase brings (ALTER DOMAIN ... ADD CONSTRAINT, a column retyped to a
domain, a new column of a domain type), or an array of such a domain, or a composite
type with a field of one, held against the writes of the version there.

PREPARE passes such a write: the server checks a domain when the value is stored, not
when the statement is planned. A cast to the domain would stop at the first CHECK that
fails, in PostgreSQL's order, and one whose verdict is not certain here may come first;
so each rule the phase brings is tried alone: its expression evaluated by the server
with VALUE bound to the literal cast to the domain's base type (each element of an
array literal; the field of a composite literal, read through a copy of the composite
type whose domain fields are their base types). A literal cast to the domain itself
(`0::qty`) is refused by that cast already: an error where the rule the server names is
one the phase brings. An INSERT that leaves a column of a
domain out (or writes DEFAULT) stores the column's default, else the domain's, else NULL
cast to the domain: a NOT NULL domain rejects it before any BEFORE trigger runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from migrator.sqltext import ident
from migrator.verify.probes.cell import CellProbe
from migrator.verify.probes.server import Outcome, Probe
from migrator.verify.probes.writes import Value, Write
from migrator.verify.queries import Query
from migrator.verify.snapshot import Column, Domain, Relation, Snapshot

_SHADOW = "pg_temp.migrator_domain_shadow"
_CHECK_VIOLATION, _NOT_NULL_VIOLATION = "23514", "23502"
_CONSTRAINT = re.compile(r'check constraint "((?:[^"]|"")*)"')


@dataclass(frozen=True)
class DomainRules:
    """A domain a column holds at a phase and what of it the phase brings."""

    column: Column
    domain: Domain
    new_checks: frozenset[str]  # names of the CHECKs the column did not meet before
    new_not_null: bool  # NULL was let through before
    # Where the domain sits: "" the column's type is the domain, "[]" its elements (an
    # array of the domain), else the name of the composite's field of the domain.
    part: str = ""
    # A composite: the fields of the copy the literal is read through (name, type).
    shadow: tuple[tuple[str, str], ...] = ()

    @property
    def tests(self) -> list[tuple[str, str]]:
        """Each rule the phase brings, as (the server's message, a boolean expression
        of VALUE that is false where the rule rejects)."""
        name = self.domain.name
        found = []
        if self.new_not_null:
            found.append((f"domain {name} does not allow null values", "VALUE IS NOT NULL"))
        for check, _ in self.domain.checks:
            expression = self.domain.expressions.get(check)
            if check in self.new_checks and expression is not None:
                message = f'value for domain {name} violates check constraint "{check}"'
                found.append((message, expression))
        return found

    def evaluation(self, value: Value, test: str) -> Probe:
        """The probe whose value is true where ``test`` rejects what ``value`` stores."""
        sql = "NULL" if value.kind == "null" else f"({value.sql})"
        base = self.domain.base
        if self.part == "[]":
            return Probe(
                [],
                f"SELECT coalesce(bool_or(({test}) IS FALSE), false) "
                f"FROM unnest(CAST({sql} AS {base}[])) AS migrator_element(value)",
            )
        if self.part:
            fields = ", ".join(f"{ident(n)} {t}" for n, t in self.shadow)
            return Probe(
                [f"CREATE TYPE {_SHADOW} AS ({fields})"],
                f"SELECT ({test}) IS FALSE FROM (SELECT (CAST({sql} AS {_SHADOW})).{ident(self.part)}"
                " AS value) AS migrator_field",
            )
        return Probe(
            [],
            f"SELECT ({test}) IS FALSE FROM (SELECT CAST({sql} AS {base}) AS value) "
            "AS migrator_value",
        )


def _held(snapshot: Snapshot, type_oid: int) -> dict[str, tuple[int, tuple[tuple[str, str], ...]]]:
    """The domains a column's type holds: where each sits (see DomainRules.part), its oid
    and, for a composite's field, the fields of the composite's copy."""
    if snapshot.domain(type_oid) is not None:
        return {"": (type_oid, ())}
    holder = snapshot.holders.get(type_oid)
    if holder is None:
        return {}
    if holder.element:
        element = snapshot.domain(holder.element)
        # A domain over an array, in an array: unnest would take its elements apart.
        if element is None or element.base.endswith("]"):
            return {}
        return {"[]": (holder.element, ())}
    shadow = []
    for name, type_, oid in holder.fields:
        domain = snapshot.domain(oid)
        shadow.append((name, domain.base if domain is not None and domain.base else type_))
    return {name: (oid, tuple(shadow)) for name, _, oid in holder.fields if snapshot.domain(oid)}


def domain_columns(
    rel: Relation, snapshot: Snapshot, prev: Relation | None, previous: Snapshot
) -> list[DomainRules]:
    """The domains the columns of ``rel`` hold whose rules the column lacked in ``prev``
    (the relation at the phase before; None: created at this phase)."""
    found: list[DomainRules] = []
    for col in rel.columns:
        held = _held(snapshot, col.type_oid)
        if not held:
            continue
        old = prev.column(col.name) if prev is not None else None
        had_held = _held(previous, old.type_oid) if old is not None else {}
        for part, (oid, shadow) in held.items():
            domain = snapshot.domain(oid)
            if domain is None or not (domain.not_null or domain.checks) or not domain.base:
                continue
            was_oid = had_held.get(part, (0, ()))[0]
            was = previous.domain(was_oid) if was_oid else None
            had = set(was.checks) if was is not None else set()
            new_checks = frozenset(
                n for n, d in domain.checks if (n, d) not in had and n not in domain.uncertain
            )
            if part:
                new_not_null = domain.not_null and not (was is not None and was.not_null)
            else:
                # NULL is new trouble only where nothing refused it before, and where the
                # column itself is not NOT NULL now (then insert-not-null and the
                # tightened NOT NULL tell it).
                let_null = old is None or not (old.not_null or (was is not None and was.not_null))
                new_not_null = domain.not_null and let_null and not col.not_null
            if new_checks or new_not_null:
                found.append(DomainRules(col, domain, new_checks, new_not_null, part, shadow))
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
    if col.identity or col.generated or (not rules.part and rules.domain.has_default):
        return None
    return Value("null")


def domain_probes(
    cell: CellProbe,
    query: Query,
    write: Write,
    columns: list[DomainRules],
    by: str,
    fix: str,
    probes: list[Probe],
    handlers: list[Any],
) -> None:
    rel = write.relation
    verb = write.verb_phrase
    for rules in columns:
        name = rules.column.name
        where = f"{rel.name}.{name}"
        if rules.part == "[]":
            where = f"the elements of {where}"
        elif rules.part:
            where = f"{where}'s field {rules.part}"
        what = f"the domain {rules.domain.name} of {where}, whose rules {by} brings"
        tests = rules.tests
        for row in write.rows:
            written = row.get(name)
            value = _stored(write, rules, written)
            if value is None or value.kind == "unknown":
                continue
            if value.kind == "param":
                cell.add(
                    query,
                    "constraint-write",
                    "warning",
                    f"{verb} {write.target} writes {name} from a parameter: {what}, rejects "
                    "some values",
                    fix,
                    once=f"domain {name} {rules.part}",
                )
                continue
            if value.kind == "null" and rules.part:
                continue  # a NULL array or composite holds no value of the domain
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
            for message, test in tests:
                probes.append(rules.evaluation(value, test))
                handlers.append(
                    lambda o, r=rules, s=shown, w=what, m=message: _outcome(
                        cell, query, write, r, s, w, m, fix, o
                    )
                )


def _outcome(
    cell: CellProbe,
    query: Query,
    write: Write,
    rules: DomainRules,
    shown: str,
    what: str,
    message: str,
    fix: str,
    outcome: Outcome,
) -> None:
    # A rule that evaluated to false; or the literal's own cast to the domain (`0::qty`,
    # which PREPARE passes) refused by a rule this phase brings: the server names that
    # rule. Any other error (a literal the base type cannot take, a function that raises,
    # a rule the column met before) is not this phase's verdict.
    if outcome.state == _NOT_NULL_VIOLATION and rules.new_not_null:
        message = outcome.message or message
    elif outcome.state == _CHECK_VIOLATION and outcome.message:
        named = _CONSTRAINT.search(outcome.message)
        if named is None or named.group(1).replace('""', '"') not in rules.new_checks:
            return
        message = outcome.message
    elif outcome.state is not None or outcome.value != "true":
        return
    cell.add(
        query,
        "constraint-write",
        "error",
        f"{write.verb_phrase} {write.target} {shown}: {what}, rejects it ({message})",
        fix,
        once=f"domain {rules.column.name} {rules.part} rejects",
    )


__all__ = ["DomainRules", "domain_columns", "domain_probes"]
