"""What PREPARE cannot see, asked of the server itself in one round trip per cell.

One module a concern: ``conflict.py``, ``constraints.py``, ``references.py``, ``sync.py``;
``writes.py`` reads what a write gives each column, ``server.py`` runs the probes.

- ``on-conflict``: the planner, not PREPARE, picks an ``ON CONFLICT`` arbiter; each
  upsert that PREPAREd is planned (``EXPLAIN EXECUTE`` with NULL parameters), so a
  target no unique index or constraint matches at the phase is found as PostgreSQL
  finds it (a partial index whose predicate the target does not repeat, an index the
  plan drops, a write through `rename_table`'s view, which takes the table's indexes);
- ``constraint-write``: a CHECK, FOREIGN KEY, UNIQUE or NOT NULL that the expand adds
  (held against the old version's INSERT/UPDATE) or the contract adds (against the new
  version's): a literal the constraint rejects is an error, the CHECK evaluated by the
  server on the written values; a parameter that decides is a warning for the old
  version only (the new version was written for the schema after the contract, so its
  parameters are taken to be meant for it); what the expand adds is held against the new
  version at expanded too, for its certain errors (a table it creates, with its CHECK and
  EXCLUDE). A unique index over expressions or with a predicate is judged as an EXCLUDE
  of ``=`` is. A write through an auto-updatable view
  (`rename_table`'s old name) is its table's. A FOREIGN KEY that refuses (NO ACTION,
  RESTRICT) is held against a DELETE of the rows it references, or an UPDATE of their
  key, as a warning (`references.py`). An EXCLUDE: literals in its elements are a
  warning (another row decides), NULL nothing; an element that is an expression
  (``lower(name)``, ``tstzrange(starts, ends)``) and the predicate are evaluated by the
  server on the literals. Two rows of one INSERT that conflict under a UNIQUE or an
  EXCLUDE are an error: the whole VALUES list is compared in one query, and so are
  the rows of an INSERT ... SELECT that reads no table (the server runs the SELECT). The warnings
  where the data decides are told once an INSERT, by its first row;
- ``constraint-write`` for a domain (``domains.py``): a column whose domain (or the
  domain of its array's elements, of its composite's fields) holds a NOT NULL or CHECK
  the phase brings; the server evaluates each such rule alone on each literal written,
  and an INSERT that leaves the column out stores NULL where nothing gives a default;
- ``sync-convert``: a literal a version writes that migrator's sync trigger cannot
  convert (``up`` or the retype's cast): the write is run, rolled back, and an error
  raised inside the trigger function is reported.

The values written are read from pglast's tree; every evaluation is the server's, in a
subtransaction of a transaction that is rolled back.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg

from migrator.verify.probes.cell import CellProbe
from migrator.verify.probes.conflict import conflict_probe
from migrator.verify.probes.constraints import added_constraints, constraint_probes, who
from migrator.verify.probes.domains import DomainRules, domain_columns, domain_probes
from migrator.verify.probes.references import incoming, reference_findings
from migrator.verify.probes.server import Outcome, Probe, ProbesFailed, run_probes
from migrator.verify.probes.sync import sync_probes
from migrator.verify.probes.writes import Value, Write, may_write, writes
from migrator.verify.queries import Query
from migrator.verify.report import Finding
from migrator.verify.snapshot import Constraint, Relation


def probe_cell(
    conn: psycopg.Connection[Any], cell: CellProbe, prepared: Iterable[Query]
) -> dict[int, list[Finding]]:
    """The findings of the probes of one cell, by ``id(query)``; ``prepared`` are the
    queries PREPARE took at this phase."""
    probes: list[Probe] = []
    handlers: list[Any] = []
    first: list[Query] = []  # the query of the first probe
    # The tables worth reading a write's values for: those the phase constrains anew, and
    # those a sync trigger converts writes on. Most writes touch neither.
    constrained: dict[tuple[str, str], tuple[list[Constraint], list[str]]] = {}
    new_tables: dict[int, tuple[Relation, list[Constraint], list[Constraint]]] = {}
    domained: dict[tuple[str, str], list[DomainRules]] = {}
    # The new version at expanded is held to what the expand adds too (a table it creates,
    # a CHECK): errors only, where its literals certainly fail (see CellProbe.add).
    previous = cell.previous
    if previous is None and (cell.version, cell.phase) == ("new", "expanded"):
        previous = cell.before
    if previous is not None:
        for key, rel in cell.snapshot.relations.items():
            if rel.kind not in ("r", "p"):
                continue
            # By oid first: a table renamed at this phase is the one it was before.
            prev = previous.by_oid.get(rel.oid) or previous.relations.get(key)
            if cell.snapshot.domains:
                columns = domain_columns(rel, cell.snapshot, prev, previous)
                if columns:
                    domained[key] = columns
            if prev is None:
                # Created at this phase: no version wrote it before, but its foreign keys
                # bind the tables they reference, and every constraint of it is new.
                new_tables[rel.oid] = (rel, rel.checked, [])
                added, _ = added_constraints(rel, Relation(rel.schema, rel.name, rel.kind, 0))
                if added:
                    constrained[key] = (added, [])
                continue
            added, tightened = added_constraints(rel, prev)
            if added or tightened:
                constrained[key] = (added, tightened)
                new_tables[rel.oid] = (rel, added, prev.checked)
    refs = incoming(new_tables)
    synced = (
        {k for k, rel in cell.snapshot.relations.items() if rel.sync_functions}
        if cell.phase == "expanded" and cell.must_pass
        else set()
    )
    watched = constrained.keys() | synced | domained.keys()
    for query in prepared:
        if not may_write(query):
            continue
        count = len(probes)
        conflict_probe(cell, query, probes, handlers)
        if refs:
            reference_findings(cell, query, refs)
        for write in writes(query, cell.snapshot, watched) if watched else ():
            key = (write.relation.schema, write.relation.name)
            if key in constrained:
                constraint_probes(cell, query, write, *constrained[key], probes, handlers)
            if key in domained:
                domain_probes(cell, query, write, domained[key], *who(cell), probes, handlers)
            if key in synced:
                sync_probes(cell, query, write, probes, handlers)
        if len(probes) > count and not first:
            first.append(query)
    try:
        outcomes = run_probes(conn, probes)
    except ProbesFailed as exc:
        # Said once, on the first query probed: what is left unchecked at this phase.
        cell.add(
            first[0],
            "probe",
            "warning",
            f"the server probes could not run at {cell.phase} ({exc}): ON CONFLICT targets, "
            "constraints the phase adds and sync conversions are not checked there",
            "give the scratch server's user the TEMP privilege on its databases (check "
            "creates a temporary function to run the probes)",
        )
        return cell.findings
    for handle, outcome in zip(handlers, outcomes, strict=True):
        handle(outcome)
    return cell.findings


__all__ = [
    "CellProbe",
    "Outcome",
    "Probe",
    "ProbesFailed",
    "Value",
    "Write",
    "probe_cell",
    "run_probes",
    "writes",
]
