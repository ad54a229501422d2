"""``sync-convert``: a literal a version writes that migrator's sync trigger cannot convert
(``up`` or the retype's cast): the write is run, rolled back, and an error raised inside
the trigger function is the finding."""

from __future__ import annotations

from typing import Any

from migrator.sqltext import ident
from migrator.verify.probes.cell import CellProbe
from migrator.verify.probes.server import Outcome, Probe
from migrator.verify.probes.writes import Write
from migrator.verify.queries import Query


def sync_probes(
    cell: CellProbe, query: Query, write: Write, probes: list[Probe], handlers: list[Any]
) -> None:
    rel = write.relation
    if not rel.sync_functions:
        return
    for row in write.rows:
        literals = {c: v for c, v in row.items() if v.kind == "literal"}
        if not literals:
            continue
        # The same conversion serves an UPDATE: the trigger computes the other column
        # from what was written, so an INSERT of the written values alone runs it.
        columns = ", ".join(ident(c) for c in literals)
        values = ", ".join(v.sql for v in literals.values())
        probes.append(
            Probe([f"INSERT INTO {ident(rel.schema, rel.name)} ({columns}) VALUES ({values})"])
        )
        shown = ", ".join(f"{c} = {v.sql}" for c, v in literals.items())

        def handle(outcome: Outcome, shown: str = shown) -> None:
            context = outcome.context or ""
            function = next((f for f in rel.sync_functions if f"function {f}(" in context), None)
            if outcome.state is None or function is None:
                return
            cell.add(
                query,
                "sync-convert",
                "error",
                f"the {cell.version} version writes {rel.name}.{shown}, which the sync "
                f"trigger {function} cannot convert for the other version's column: "
                f"{outcome.message} [{outcome.state}]",
                "write a value the new type takes, or give the plan an up: (down:) expression "
                "that converts every value this version writes",
            )

        handlers.append(handle)


__all__ = ["sync_probes"]
