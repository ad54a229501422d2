"""verify/probes.py: the values a write gives each column, the server's probes, and what
check says when the probes cannot run. The findings themselves are the corpus's
(tests/corpus/cases 56-69); these pin the parts the corpus cannot reach."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from migrator.verify import matrix
from migrator.verify.probes import CellProbe, Probe, Value, probe_cell, run_probes, writes
from migrator.verify.probes.writes import EXPRESSION
from migrator.verify.queries import Query, load_query_set
from migrator.verify.snapshot import Snapshot, take

SCHEMA = """
CREATE TABLE item (
    id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code text NOT NULL,
    qty int DEFAULT 1 CHECK (qty > 0),
    note text
);
CREATE VIEW item_view AS SELECT * FROM item;
CREATE VIEW item_renamed AS SELECT id AS ident, upper(code) AS shout, note FROM item;
CREATE TABLE booking (
    room int,
    slot int,
    item_id int REFERENCES item ON DELETE CASCADE,
    EXCLUDE USING btree (slot WITH =, room WITH =)
);
CREATE SEQUENCE tag_seq;
CREATE TABLE tag (
    id bigint DEFAULT nextval('tag_seq'),
    name text,
    kind text,
    CONSTRAINT tag_id_key UNIQUE (id),
    CONSTRAINT tag_name_excl EXCLUDE USING btree (lower(name) WITH =) WHERE (kind <> 'draft')
);
CREATE UNIQUE INDEX tag_kind_name_key ON tag (kind, upper(name)) WHERE id > 0;
CREATE TABLE parcel (ref text, kind text);
CREATE UNIQUE INDEX parcel_ref_key ON parcel ((ref::int)) WHERE kind <> 'draft';
CREATE DOMAIN code_base AS text CHECK (VALUE <> '');
CREATE DOMAIN code AS code_base NOT NULL CHECK (length(VALUE) < 9);
CREATE TABLE label (id int, c code);
CREATE FUNCTION known_code(text) RETURNS boolean STABLE LANGUAGE sql
    AS 'SELECT EXISTS (SELECT 1 FROM item WHERE code = $1)';
CREATE DOMAIN known AS text CHECK (known_code(VALUE));
CREATE TABLE badge (k known);
-- amount_check, whose verdict is not certain here, sorts before z_positive: a cast to
-- the domain stops at it.
CREATE DOMAIN amount AS int CHECK (known_code(VALUE::text)) CONSTRAINT z_positive
    CHECK (VALUE > 0);
CREATE TYPE amount_pair AS (lo amount, note text);
CREATE TABLE purse (id int, a amount, many amount[], pair amount_pair);
CREATE DOMAIN present AS text CHECK (VALUE IS NOT NULL);
CREATE TABLE slip (id int, p present);
"""


@pytest.fixture(scope="module")
def db(module_db: str) -> Iterator[str]:
    with psycopg.connect(module_db, autocommit=True) as conn:
        conn.execute(SCHEMA)
    yield module_db


@pytest.fixture(scope="module")
def snapshot(db: str) -> Snapshot:
    with psycopg.connect(db, autocommit=True) as conn:
        return take(conn, "before", ("public",))


def queries(tmp_path: Path, text: str) -> list[Query]:
    path = tmp_path / "q.sql"
    path.write_text(text)
    return load_query_set(path)


def test_writes_reads_each_columns_value(tmp_path: Path, snapshot: Snapshot) -> None:
    found = queries(
        tmp_path,
        "INSERT INTO item (code, qty, note) VALUES ($1, 3, NULL), ('b', DEFAULT, lower($2));\n"
        "UPDATE item SET qty = qty + 1, note = 'x', (code, id) = (SELECT 'a', 1) WHERE id = $1;\n"
        "INSERT INTO item (code) SELECT code FROM item ON CONFLICT (code) DO NOTHING;\n"
        "INSERT INTO item_view (code) VALUES ('v');\n",
    )
    insert, update, select, view = (writes(q, snapshot) for q in found)
    assert [w.verb for w in insert] == ["insert"]
    assert insert[0].rows == [
        {"code": Value("param"), "qty": Value("literal", "3"), "note": Value("null")},
        {"code": Value("literal", "'b'"), "qty": Value("default"), "note": Value("param")},
    ]
    assert update[0].rows == [
        {"qty": Value("unknown"), "note": Value("literal", "'x'"), "code": Value("unknown")}
        | {"id": Value("unknown")}
    ]
    assert select[0].rows == [{"code": Value("unknown")}]
    assert select[0].conflict == frozenset({"code"})
    # A write through an auto-updatable view is its table's (rename_table's old name).
    assert [(w.relation.name, w.via.name if w.via else None) for w in view] == [
        ("item", "item_view")
    ]
    assert view[0].rows == [{"code": Value("literal", "'v'")}]


def test_insert_select_keeps_its_constants(tmp_path: Path, snapshot: Snapshot) -> None:
    """A constant selected is every row's value, FROM or not; each UNION arm is a row,
    and UNION (not ALL) may fold equal rows; SELECT * under a column list writes them."""
    found = queries(
        tmp_path,
        "INSERT INTO item (code, qty) SELECT code, 0 FROM item WHERE id = $1;\n"
        "INSERT INTO item (code, qty) SELECT 'a', 1 UNION ALL SELECT $1, NULL;\n"
        "INSERT INTO item (code, qty) SELECT 'a', 1 UNION SELECT 'a', 1;\n"
        "INSERT INTO item (code, qty) SELECT 'a', 1 EXCEPT SELECT code, qty FROM item;\n"
        "INSERT INTO item (code, note) SELECT * FROM item;\n"
        "INSERT INTO item OVERRIDING SYSTEM VALUE SELECT * FROM item;\n",
    )
    copied, union_all, union, except_, star, bare_star = (writes(q, snapshot) for q in found)
    assert copied[0].rows == [{"code": Value("unknown"), "qty": Value("literal", "0")}]
    assert copied[0].selects and not copied[0].distinct
    assert union_all[0].rows == [
        {"code": Value("literal", "'a'"), "qty": Value("literal", "1")},
        {"code": Value("param"), "qty": Value("null")},
    ]
    assert not union_all[0].distinct and not union_all[0].selects
    assert union[0].distinct and len(union[0].rows) == 2
    assert except_[0].rows == [{"code": Value("literal", "'a'"), "qty": Value("literal", "1")}]
    assert not except_[0].selects  # only the left arm's rows: one
    assert star[0].rows == [{"code": Value("unknown"), "note": Value("unknown")}]
    assert bare_star == []  # the width is the source's: not read
    # The server runs a SELECT that reads no table (UNION, FROM a function): not one
    # that reads the data, nor one read row by row here.
    assert copied[0].source is None and union_all[0].source is None
    assert union[0].source == "SELECT 'a', 1 UNION SELECT 'a', 1"
    assert union[0].names == ("code", "qty")
    [series] = writes(
        queries(
            tmp_path,
            "INSERT INTO item (code) SELECT lower('C' || g) FROM generate_series(1, 3) g;",
        )[0],
        snapshot,
    )
    assert series.source is not None and series.functions == ("generate_series", "lower")


def test_not_null_left_out_through_a_view(tmp_path: Path, db: str, snapshot: Snapshot) -> None:
    """insert-not-null reads tables only: an INSERT through a view that leaves out a
    column NOT NULL only at this phase, with no default, is the probes' to find."""
    now = copy.deepcopy(snapshot)
    item = now.relations[("public", "item")]
    item.columns = [replace(c, not_null=True) if c.name == "note" else c for c in item.columns]
    now.by_oid[item.oid] = item
    found = queries(
        tmp_path,
        "INSERT INTO item_view (code) VALUES ('a');\nINSERT INTO item (code) VALUES ('b');",
    )
    with psycopg.connect(db) as conn:
        cell = CellProbe("old", "old (v1)", "expanded", True, now, snapshot, snapshot)
        result = probe_cell(conn, cell, found)
    [finding] = result[id(found[0])]
    assert finding.severity == "error"
    assert "item_view (a view of public.item) leaves out note" in finding.reason
    assert id(found[1]) not in result  # a table's omission is insert-not-null's


def test_snapshot_reads_view_bases_keys_and_exclusions(tmp_path: Path, snapshot: Snapshot) -> None:
    """What the probes need of the catalog: a view's table and columns (a computed one is
    no column), a foreign key's table, columns and actions, an EXCLUDE's operators in the
    order of its columns."""
    item = snapshot.relations[("public", "item")]
    renamed = snapshot.relations[("public", "item_renamed")]
    assert renamed.base_oid == item.oid and renamed.base_columns == ("id", None, "note")
    booking = snapshot.relations[("public", "booking")]
    [fk] = [c for c in booking.checked if c.kind == "f"]
    assert (fk.ref_oid, fk.columns, fk.ref_columns, fk.on_delete) == (
        item.oid,
        ("item_id",),
        ("id",),
        "c",
    )
    [excl] = [c for c in booking.checked if c.kind == "x"]
    assert excl.columns == ("slot", "room")
    assert excl.operators == ("OPERATOR(pg_catalog.=)", "OPERATOR(pg_catalog.=)")
    [query] = queries(tmp_path, "UPDATE item_renamed SET note = 'n' WHERE ident = $1;")
    [write] = writes(query, snapshot)
    assert (write.relation.name, write.rows) == ("item", [{"note": Value("literal", "'n'")}])
    assert write.target == "public.item_renamed (a view of public.item)"


def test_run_probes_keeps_each_outcome_apart(db: str) -> None:
    with psycopg.connect(db) as conn:
        outcomes = run_probes(
            conn,
            [
                Probe(["INSERT INTO item (code) VALUES ('a')"]),
                Probe(["INSERT INTO item (code, qty) VALUES ('a', 0)"]),
                Probe([], "SELECT count(*) FROM item"),  # the first probe's row is undone
                Probe(
                    [
                        "PREPARE p_view AS INSERT INTO item_view (code) VALUES ($1) "
                        "ON CONFLICT (id) DO NOTHING",
                        "EXPLAIN EXECUTE p_view(NULL)",
                    ]
                ),
                Probe(
                    [
                        "PREPARE p_none AS INSERT INTO item (code) VALUES ($1) "
                        "ON CONFLICT (code) DO NOTHING",
                        "EXPLAIN EXECUTE p_none(NULL)",
                    ]
                ),
            ],
        )
        assert conn.execute("SELECT count(*) FROM item").fetchone() == (0,)
    assert [o.state for o in outcomes] == [None, "23514", None, None, "42P10"]
    assert outcomes[2].value == "0"
    # An upsert through a simple view takes the table's unique index as its arbiter.
    assert outcomes[3].message is None


def test_probes_that_cannot_run_are_said_to(tmp_path: Path, db: str, snapshot: Snapshot) -> None:
    """A scratch server whose user may not create temporary objects: the cell gets one
    warning naming what is not checked, and the check goes on."""
    with psycopg.connect(db, autocommit=True) as conn:
        name = conn.info.dbname
        conn.execute(
            psycopg.sql.SQL(
                "DROP ROLE IF EXISTS probe_no_temp; CREATE ROLE probe_no_temp LOGIN; "
                "GRANT SELECT, INSERT ON item TO probe_no_temp; "
                "REVOKE TEMP ON DATABASE {db} FROM PUBLIC"
            ).format(db=psycopg.sql.Identifier(name))
        )
    found = queries(tmp_path, "INSERT INTO item (code) VALUES ($1) ON CONFLICT (code) DO NOTHING;")
    try:
        with psycopg.connect(db, user="probe_no_temp") as conn:
            cell = CellProbe("new", "new (v2)", "expanded", True, snapshot, snapshot, None)
            result = probe_cell(conn, cell, found)
    finally:
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute(
                psycopg.sql.SQL("GRANT TEMP ON DATABASE {db} TO PUBLIC").format(
                    db=psycopg.sql.Identifier(name)
                )
            )
    [finding] = result[id(found[0])]
    assert (finding.check, finding.severity) == ("probe", "warning")
    assert "not checked" in finding.reason and "TEMP" in finding.fix


def test_rows_of_one_insert_compared_whole_by_the_server(
    tmp_path: Path, db: str, snapshot: Snapshot
) -> None:
    """Two literal rows of one INSERT that conflict under a UNIQUE or an EXCLUDE the
    phase adds: every pair of the VALUES list, compared in the server on the values the
    INSERT would store (an expression element and the predicate evaluated there)."""
    before = copy.deepcopy(snapshot)
    tag = before.relations[("public", "tag")]
    tag.checked = []
    before.by_oid[tag.oid] = tag
    [excl] = [c for c in snapshot.relations[("public", "tag")].checked if c.kind == "x"]
    assert (excl.columns, excl.elements, excl.plain) == (("name",), ("lower(name)",), (False,))
    assert (excl.predicate, excl.predicate_columns) == ("kind <> 'draft'::text", ("kind",))
    rows = [f"('tag {i}', 'topic')" for i in range(2, 40)]
    found = queries(
        tmp_path,
        # rows 1 and 40: lower() makes them equal, whatever lies between
        f"INSERT INTO tag (name, kind) VALUES ('Alpha', 'topic'), {', '.join(rows)}, "
        "('ALPHA', 'topic');\n"
        # nextval() twice is two ids, not the same text twice
        "INSERT INTO tag (id, name, kind) VALUES (nextval('tag_seq'), NULL, 'topic'), "
        "(nextval('tag_seq'), NULL, 'topic');\n"
        # a draft is outside the predicate; lower(NULL) never conflicts
        "INSERT INTO tag (name, kind) VALUES ('beta', 'draft'), ('Beta', 'topic');\n"
        "INSERT INTO tag (name, kind) VALUES (NULL, 'topic');\n"
        # the same id in rows 2 and 3
        "INSERT INTO tag (id) VALUES (1), (2), (2);\n",
    )
    with psycopg.connect(db) as conn:
        cell = CellProbe("old", "old (v1)", "expanded", True, snapshot, snapshot, before)
        result = probe_cell(conn, cell, found)
    errors = {
        i: [f.reason for f in result.get(id(q), []) if f.severity == "error"]
        for i, q in enumerate(found, 1)
    }
    assert errors[1] == [
        "INSERT into public.tag writes rows 1 and 40, which conflict with each other: EXCLUDE "
        "constraint tag_name_excl (EXCLUDE USING btree (lower(name) WITH =) WHERE "
        "((kind <> 'draft'::text))), which the expand adds, rejects the later one"
    ]
    assert errors[2] == errors[3] == errors[4] == []
    assert errors[5] == [
        "INSERT into public.tag writes the same id in rows 2 and 3: UNIQUE constraint "
        "tag_id_key (UNIQUE (id)), which the expand adds, rejects the later one"
    ]
    # The literal rows are the data's to judge too: told once an INSERT, not once a row;
    # NULL under lower() gives nothing.
    warnings = [[f.reason for f in result.get(id(q), []) if f.severity == "warning"] for q in found]
    assert [len(w) for w in warnings] == [1, 1, 1, 0, 1]
    assert "writes name = 'Alpha':" in warnings[0][0]
    assert "writes name = 'Beta':" in warnings[2][0]  # the draft is outside


def test_upsert_set_list_and_default_are_writes(tmp_path: Path, snapshot: Snapshot) -> None:
    """An upsert's ON CONFLICT DO UPDATE SET list is an UPDATE of the row that conflicts;
    DEFAULT through a view whose column has a default of its own is the view's (unknown
    here), through one without it stays DEFAULT (the table's)."""
    found = queries(
        tmp_path,
        "INSERT INTO item (code, note) VALUES ('a', 'x') "
        "ON CONFLICT (code) DO UPDATE SET note = NULL, qty = EXCLUDED.qty;\n"
        "INSERT INTO item (code) VALUES ('a') ON CONFLICT (code) DO NOTHING;\n"
        "INSERT INTO item_view (code, note) VALUES ('v', DEFAULT);\n"
        "INSERT INTO item (code) VALUES ('a') ON CONFLICT (lower(code), qty) DO NOTHING;\n",
    )
    upsert, nothing, view, expression = (writes(q, snapshot) for q in found)
    # A target over an expression is a target, not "no target" (which takes any conflict).
    assert expression[0].conflict == frozenset({"qty", EXPRESSION})
    assert nothing[0].conflict == frozenset({"code"})
    assert [(w.verb, w.upsert) for w in upsert] == [("insert", False), ("update", True)]
    assert upsert[1].rows == [{"note": Value("null"), "qty": Value("unknown")}]
    assert upsert[1].verb_phrase == "INSERT ... ON CONFLICT DO UPDATE of"
    assert [w.verb for w in nothing] == ["insert"]
    assert view[0].rows == [{"code": Value("literal", "'v'"), "note": Value("default")}]
    with_default = copy.deepcopy(snapshot)
    item_view = with_default.relations[("public", "item_view")]
    item_view.columns = [
        replace(c, has_default=True) if c.name == "note" else c for c in item_view.columns
    ]
    [onto] = writes(found[2], with_default)
    assert onto.rows == [{"code": Value("literal", "'v'"), "note": Value("unknown")}]


def test_unique_index_over_an_expression_is_a_key(
    tmp_path: Path, db: str, snapshot: Snapshot
) -> None:
    """A unique index over expressions or with a predicate, which the expand adds
    (create_index unique: true): judged as an EXCLUDE of ``=`` is, on the values the server
    computes; a plain unique index stays a plain key."""
    tag = snapshot.relations[("public", "tag")]
    [key] = tag.unique_keys
    assert (key.name, key.columns, key.elements, key.plain, key.predicate) == (
        "tag_kind_name_key",
        ("kind", "name"),
        ("kind", "upper(name)"),
        (True, False),
        "id > 0",
    )
    before = copy.deepcopy(snapshot)
    before.relations[("public", "tag")].unique_keys = []
    found = queries(
        tmp_path,
        "INSERT INTO tag (id, name, kind) VALUES (1, 'a', 'draft'), (2, 'A', 'draft');\n"
        "INSERT INTO tag (id, name, kind) VALUES (-1, 'a', 'draft'), (-2, 'A', 'draft');\n",
    )
    with psycopg.connect(db) as conn:
        cell = CellProbe("old", "old (v1)", "expanded", True, snapshot, snapshot, before)
        result = probe_cell(conn, cell, found)
    [error] = [f for f in result[id(found[0])] if f.severity == "error"]
    assert error.reason == (
        "INSERT into public.tag writes rows 1 and 2, which conflict with each other: unique "
        "index tag_kind_name_key on (kind, upper(name)) WHERE id > 0, which the expand adds, "
        "rejects the later one"
    )
    assert id(found[1]) not in result  # both rows are outside the predicate


def test_key_the_server_cannot_compute_is_an_error(
    tmp_path: Path, db: str, snapshot: Snapshot
) -> None:
    """A unique index (or EXCLUDE) over an expression that fails on the literal written
    (``ref::int`` of 'A-1'): the write fails whatever the table holds, an error with the
    server's message; a row the predicate leaves out never computes the key, and a
    predicate a parameter decides says nothing certain."""
    before = copy.deepcopy(snapshot)
    before.relations[("public", "parcel")].unique_keys = []
    found = queries(
        tmp_path,
        "INSERT INTO parcel (ref, kind) VALUES ('A-1', 'box');\n"
        "INSERT INTO parcel (ref, kind) VALUES ('A-1', 'draft');\n"
        "INSERT INTO parcel (ref, kind) VALUES ('A-1', $1);\n"
        "INSERT INTO parcel (ref, kind) VALUES ('17', 'box');\n"
        "INSERT INTO parcel (ref, kind) VALUES ('A-1', 'box') ON CONFLICT DO NOTHING;\n",
    )
    with psycopg.connect(db) as conn:
        cell = CellProbe("old", "old (v1)", "expanded", True, snapshot, snapshot, before)
        result = probe_cell(conn, cell, found)
    told = [[(f.severity, f.reason) for f in result.get(id(q), [])] for q in found]
    error = (
        "error",
        "INSERT into public.parcel writes ref = 'A-1', kind = 'box': unique index "
        "parcel_ref_key on ((ref::integer)) WHERE kind <> 'draft'::text, which the expand "
        "adds, cannot compute its key for the row: invalid input syntax for type integer: "
        '"A-1"',
    )
    assert told[0] == [error]
    assert told[1] == told[2] == []
    assert [s for s, _ in told[3]] == ["warning"]  # another row decides
    assert told[4] == [error]  # ON CONFLICT still computes the key


def test_domain_rules_a_phase_brings(tmp_path: Path, db: str, snapshot: Snapshot) -> None:
    """A domain over a domain holds its base's rules too; the server casts each literal
    written to the column's domain, and an INSERT that leaves the column out stores NULL
    cast to it. Only a rule the column lacked at the phase before is this phase's."""
    label = snapshot.relations[("public", "label")]
    c = label.column("c")
    assert c is not None
    domain = snapshot.domain(c.type_oid)
    assert domain is not None and domain.not_null
    assert [n for n, _ in domain.checks] == ["code_check", "code_base_check"]
    found = queries(
        tmp_path,
        "INSERT INTO label (id, c) VALUES (1, '');\n"
        "INSERT INTO label (id) VALUES (2);\n"
        "INSERT INTO label (id, c) VALUES (3, 'abc');\n"
        "UPDATE label SET id = 4;\n"
        "UPDATE label SET c = 'far too long' WHERE id = $1;\n",
    )
    before = copy.deepcopy(snapshot)
    before.domains = {}  # the column was plain text before
    with psycopg.connect(db) as conn:
        cell = CellProbe("old", "old (v1)", "expanded", True, snapshot, snapshot, before)
        result = probe_cell(conn, cell, found)
    told = [[f.reason for f in result.get(id(q), [])] for q in found]
    assert told[0] == [
        "INSERT into public.label writes c = '': the domain code of label.c, whose rules the "
        "expand brings, rejects it (value for domain code violates check constraint "
        '"code_base_check")'
    ]
    assert told[1] == [
        "INSERT into public.label leaves out c, which has no default: the domain code of "
        "label.c, whose rules the expand brings, rejects it (domain code does not allow null "
        "values)"
    ]
    assert told[2] == told[3] == []
    assert 'check constraint "code_check"' in told[4][0]
    # The base's CHECK and the NOT NULL were there before: only code_check is new.
    before.domains = {oid: replace(d, checks=d.checks[1:]) for oid, d in snapshot.domains.items()}
    with psycopg.connect(db) as conn:
        cell = CellProbe("old", "old (v1)", "expanded", True, snapshot, snapshot, before)
        result = probe_cell(conn, cell, found)
    assert [len(result.get(id(q), [])) for q in found] == [0, 0, 0, 0, 1]
    # A CHECK calling a function of the project's that reads a table (empty here): its
    # verdict on the scratch database says nothing of production's.
    [badge] = queries(tmp_path, "INSERT INTO badge (k) VALUES ('zzz');")
    before.domains = {}
    with psycopg.connect(db) as conn:
        cell = CellProbe("old", "old (v1)", "expanded", True, snapshot, snapshot, before)
        assert probe_cell(conn, cell, [badge]) == {}
        with pytest.raises(psycopg.errors.CheckViolation):  # what a probe would have said
            conn.execute("SELECT CAST('zzz' AS known)")


def test_each_rule_of_a_domain_is_tried_alone(tmp_path: Path, db: str, snapshot: Snapshot) -> None:
    """A CHECK the probe cannot judge (it calls a function that reads a table) that
    PostgreSQL checks first does not hide a certain one's failure; the elements of an
    array of the domain and the fields of a composite with one are held to it too."""
    purse = snapshot.relations[("public", "purse")]
    many, pair = purse.column("many"), purse.column("pair")
    assert many is not None and pair is not None
    assert snapshot.holders[many.type_oid].element == purse.columns[1].type_oid
    assert [n for n, _, _ in snapshot.holders[pair.type_oid].fields] == ["lo", "note"]
    found = queries(
        tmp_path,
        "INSERT INTO purse (id, a) VALUES (1, 0);\n"
        "INSERT INTO purse (id, many) VALUES (2, '{3,0}');\n"
        "INSERT INTO purse (id, many) VALUES (3, ARRAY[[1, 2], [0, 4]]);\n"
        "INSERT INTO purse (id, pair) VALUES (4, ROW(0, 'x'));\n"
        "UPDATE purse SET pair = '(-1,y)' WHERE id = $1;\n"
        "INSERT INTO purse (id, a, many, pair) VALUES (6, 5, '{1,NULL}', ROW(NULL, 'z'));\n"
        "INSERT INTO purse (id, a, many, pair) VALUES (7, NULL, NULL, NULL);\n"
        "INSERT INTO purse (id, many, pair) VALUES (8, '{x}', ROW(0, 'x')::amount_pair);\n"
        "INSERT INTO purse (id, many, pair) VALUES (9, $1, $2);\n"
        "INSERT INTO slip (id) VALUES (10);\n"
        "UPDATE slip SET id = 11;\n"
        "INSERT INTO label (id, c) VALUES (12, 'far too long'::code);\n"
        "UPDATE label SET c = CAST('short' AS code);\n",
    )
    before = copy.deepcopy(snapshot)
    before.domains = {}  # the columns held no domain before
    with psycopg.connect(db) as conn:
        cell = CellProbe("old", "old (v1)", "expanded", True, snapshot, snapshot, before)
        result = probe_cell(conn, cell, found)
    told = [[(f.severity, f.reason) for f in result.get(id(q), [])] for q in found]
    rejects = 'rejects it (value for domain amount violates check constraint "z_positive")'
    assert told[0] == [
        (
            "error",
            "INSERT into public.purse writes a = 0: the domain amount of purse.a, whose rules "
            f"the expand brings, {rejects}",
        )
    ]
    assert told[1] == [
        (
            "error",
            "INSERT into public.purse writes many = '{3,0}': the domain amount of the elements "
            f"of purse.many, whose rules the expand brings, {rejects}",
        )
    ]
    assert [s for s, _ in told[2]] == ["error"]
    assert told[3] == [
        (
            "error",
            "INSERT into public.purse writes pair = ROW(0, 'x'): the domain amount of "
            f"purse.pair's field lo, whose rules the expand brings, {rejects}",
        )
    ]
    assert [s for s, _ in told[4]] == ["error"]
    # Values that meet the rule, NULLs, and what the probe cannot read (an element the
    # base type refuses, an explicit cast to the composite, which runs every CHECK).
    assert told[5] == told[6] == told[7] == []
    assert [s for s, _ in told[8]] == ["warning", "warning"]
    # NULL is held to a CHECK too: one that refuses it rejects the column left out.
    assert told[9] == [
        (
            "error",
            "INSERT into public.slip leaves out p, which has no default: the domain present "
            "of slip.p, whose rules the expand brings, rejects it (value for domain present "
            'violates check constraint "present_check")',
        )
    ]
    assert told[10] == []
    # A literal cast to the domain itself (PREPARE passes it): the cast is refused by the
    # rule the phase brings, which the server names.
    assert told[11] == [
        (
            "error",
            "INSERT into public.label writes c = CAST('far too long' AS code): the domain code of "
            "label.c, whose rules the expand brings, rejects it (value for domain code "
            'violates check constraint "code_check")',
        )
    ]
    assert told[12] == []
    with psycopg.connect(db) as conn:  # what a cast to the domain says: the unjudged CHECK
        with pytest.raises(psycopg.errors.CheckViolation, match="amount_check"):
            conn.execute("SELECT CAST(0 AS amount)")


def test_batched_prepares_give_each_statement_its_own_outcome(db: str) -> None:
    # The matrix's PREPAREs (verify/matrix.py), here for the module's database: runs of
    # failures across batches (a batch sent to the pipeline after one that failed, a
    # message again after one that passed) give each statement the outcome and position
    # a PREPARE of it alone gives.
    sqls = []
    for n in range(40):
        if 8 <= n < 20 or n in (27, 39):
            sqls.append(f"SELECT {n}, nope FROM item" if n % 2 else f"SELECT {n} FROM nothere")
        else:
            sqls.append(f"SELECT {n}, code FROM item WHERE id = $1")
    with matrix.connect(db, ("public",)) as conn:
        preparer = matrix.Preparer(conn)
        batched = preparer.prepare_all(sqls, batch=4)
        alone = [preparer.prepare(sql) for sql in sqls]
        preparer.finish()

    def outcome(found: tuple[psycopg.Error, int] | None) -> tuple[str | None, int] | None:
        if found is None:
            return None
        error, start = found
        return error.diag.sqlstate, int(error.diag.statement_position or 0) - start

    assert [outcome(o) for o in batched] == [outcome(o) for o in alone]
    assert [n for n, o in enumerate(batched) if o is not None] == [*range(8, 20), 27, 39]
    # Where each query starts in what was sent: its error points into the query.
    assert {outcome(o) for o in batched[8:10]} == {("42P01", 15), ("42703", 11)}
