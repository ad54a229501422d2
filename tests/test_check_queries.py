"""Query sets: splitting, placeholders, file and line, as `migrator check` reads them."""

from __future__ import annotations

from pathlib import Path

import pglast
import pytest
from pglast import ast

from migrator.errors import UsageError
from migrator.ops.sql import walk_nodes
from migrator.verify import queries as queries_module
from migrator.verify.queries import (
    load_query_set,
    normalise_placeholders,
    parse_statements,
    unchecked_trees,
)


def test_statements_keep_their_line_and_sqlc_names() -> None:
    text = (
        "-- name: GetCustomer :one\n"
        "SELECT * FROM customer WHERE customer_id = $1;\n"
        "\n"
        "/* a comment; with a semicolon */\n"
        "SELECT 'a;b', $$x;y$$, \"odd;name\" FROM t;\n"
        "  UPDATE t\n"
        "  SET a = 1;\n"
    )
    queries = parse_statements(text, "q.sql")
    assert [(q.name, q.line) for q in queries] == [
        ("GetCustomer", 2),
        ("q.sql:5", 5),
        ("q.sql:6", 6),
    ]
    assert queries[1].sql == "SELECT 'a;b', $$x;y$$, \"odd;name\" FROM t"
    assert all(q.error is None for q in queries)


def test_lines_count_the_lines_of_the_statements_before() -> None:
    text = "SELECT 1\nFROM t\nWHERE a = 1; SELECT 2;\n\nUPDATE t\n SET a = 2;\nSELECT 3"
    assert [q.line for q in parse_statements(text, "q.sql", first_line=10)] == [10, 12, 14, 16]


def test_a_statement_starting_with_a_typo_is_kept_and_reported() -> None:
    # pglast's own scanner split drops such a statement silently; ours must not.
    queries = parse_statements("SELECT 1;\nselec oops;\nSELECT 2;", "q.sql")
    assert [q.line for q in queries] == [1, 2, 3]
    assert queries[1].error is not None and "selec" in queries[1].error
    assert queries[1].error_line == 2
    assert queries[0].error is None and queries[2].error is None


@pytest.mark.parametrize(
    ("written", "normalised", "params"),
    [
        (
            "SELECT a FROM t WHERE b = :b AND c = :c AND d = :b",
            "SELECT a FROM t WHERE b = $1 AND c = $2 AND d = $1",
            [":b", ":c"],
        ),
        (
            "SELECT a FROM t WHERE b = %(b)s AND c = %(c)s OR b = %(b)s",
            "SELECT a FROM t WHERE b = $1 AND c = $2 OR b = $1",
            [":b", ":c"],
        ),
        ("INSERT INTO t VALUES (%s, %s)", "INSERT INTO t VALUES ($1, $2)", ["$1", "$2"]),
        ("SELECT $2::int, :x", "SELECT $2::int, $3", ["$1", "$2", ":x"]),
        # nothing to rewrite: no names, whether the scanner was asked (%) or not
        ("SELECT $1::int, '%'", "SELECT $1::int, '%'", []),
        ("SELECT $1::int", "SELECT $1::int", []),
        # casts, array slices, strings, quoted names and comments are not placeholders
        (
            "SELECT a::text, b[1:n], ':no', \":nope\" FROM t -- :c\nWHERE x = :yes",
            "SELECT a::text, b[1:n], ':no', \":nope\" FROM t -- :c\nWHERE x = $1",
            [":yes"],
        ),
        # a keyword works as a name too (:limit, :select)
        (
            "SELECT * FROM t LIMIT :limit OFFSET :offset",
            "SELECT * FROM t LIMIT $1 OFFSET $2",
            [":limit", ":offset"],
        ),
    ],
)
def test_placeholders_normalise_to_dollar_numbers(
    written: str, normalised: str, params: list[str]
) -> None:
    assert normalise_placeholders(written) == (normalised, params)


def test_every_placeholder_style_parses_and_prepares_as_one_statement() -> None:
    (query,) = parse_statements(
        "SELECT * FROM film WHERE rating = :rating::mpaa_rating AND length > %(min)s", "q.sql"
    )
    assert query.error is None and query.preparable
    assert query.sql == "SELECT * FROM film WHERE rating = $1::mpaa_rating AND length > $2"


@pytest.mark.parametrize(
    "text",
    [
        "SELECT 1;\nselec oops;\nSELECT 2",  # libpg_query's split drops the typo
        "selec oops",
        "SELECT 1; -- a comment at the end\n",
        "/* first */ SELECT 1 /* ; */; -- name: x\nSELECT 2 -- tail\n;",
        "SELECT 'a;b'; SELECT $f$ ; $f$; SELECT \"x;y\"",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END; SELECT 2",
        "SELECT 1;\xa0SELECT 2;\x0bSELECT 3",  # white space to Python, not to PostgreSQL
        "\x1cSELECT 1",
        "SELECT 'é';\r\n\tSELECT \"ü\"\f;;  ;SELECT 3",
        "SELECT 1 /* nested /* ; */ */; SELECT 2",
        "",
        " ;\n",
    ],
)
def test_statements_are_cut_at_the_scanners_semicolons(text: str) -> None:
    # libpg_query's split is taken only where it agrees with the tokens.
    assert queries_module._split(text) == queries_module._split_tokens(text)


def test_the_statements_prepare_takes() -> None:
    text = (
        "SELECT 1; VALUES (1); WITH w AS (SELECT 1) SELECT * FROM w; INSERT INTO t VALUES (1);"
        " UPDATE t SET a = 1; DELETE FROM t; MERGE INTO t USING s ON t.a = s.a WHEN MATCHED"
        " THEN DELETE; CREATE TABLE u (a int); VACUUM t; SET x = 1; EXPLAIN SELECT 1"
    )
    queries = parse_statements(text, "q.sql")
    assert [q.preparable for q in queries] == [True] * 7 + [False] * 4


def test_yaml_query_set_lines(tmp_path: Path) -> None:
    path = tmp_path / "v1.yaml"
    path.write_text(
        "- name: by_id\n"
        "  sql: SELECT * FROM customer WHERE customer_id = $1\n"
        "- name: report\n"
        "  sql: |\n"
        "    SELECT store_id, count(*)\n"
        "    FROM customer\n"
        "    GROUP BY store_id\n"
    )
    queries = load_query_set(path, root=tmp_path)
    assert [(q.name, q.file, q.line) for q in queries] == [
        ("by_id", "v1.yaml", 2),
        ("report", "v1.yaml", 5),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- name: x\n  sql: [1\n", "v1.yaml:3:1: not valid YAML"),
        ("name: x\n", "v1.yaml:1:1: a query file is a list of {name, sql}"),
        ("- name: x\n  query: SELECT 1\n", "v1.yaml:1:3: unknown key 'query'"),
        ("- name: x\n", "v1.yaml:1:3: a query needs `sql:` text"),
    ],
)
def test_bad_yaml_query_set_names_the_place(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "v1.yaml"
    path.write_text(text)
    with pytest.raises(UsageError) as info:
        load_query_set(path, root=tmp_path)
    assert message in str(info.value)


def test_folder_query_set_reads_sql_and_yaml_in_order(tmp_path: Path) -> None:
    (tmp_path / "q" / "sub").mkdir(parents=True)
    (tmp_path / "q" / "b.sql").write_text("SELECT 2;\n\nSELECT 3;\n")
    (tmp_path / "q" / "a.sql").write_text("SELECT 1;")
    (tmp_path / "q" / "sub" / "c.yaml").write_text("- {name: four, sql: SELECT 4}\n")
    (tmp_path / "q" / "notes.txt").write_text("not a query")
    queries = load_query_set(tmp_path / "q", root=tmp_path)
    assert [(q.file, q.line, q.sql) for q in queries] == [
        ("q/a.sql", 1, "SELECT 1"),
        ("q/b.sql", 1, "SELECT 2"),
        ("q/b.sql", 3, "SELECT 3"),
        ("q/sub/c.yaml", 1, "SELECT 4"),
    ]


def test_missing_or_unknown_query_set(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        load_query_set(tmp_path / "nowhere.sql")
    (tmp_path / "q.txt").write_text("SELECT 1")
    with pytest.raises(UsageError, match="expected a folder, a .sql file or a .yaml list"):
        load_query_set(tmp_path / "q.txt")


def _same_tree(a: object, b: object) -> bool:
    """Equal and of the same types all the way down, positions included (pglast's own
    == ignores them)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, ast.Node):
        return all(_same_tree(getattr(a, k), getattr(b, k)) for k in a)
    if isinstance(a, tuple):
        return len(a) == len(b) and all(_same_tree(x, y) for x, y in zip(a, b, strict=True))  # type: ignore[arg-type]
    return a == b


def test_trees_built_without_pglasts_checks_are_the_same_trees() -> None:
    # Every kind of statement pagila's dump holds (DDL, functions, COPY-less data types),
    # and DML with every literal kind, placeholders, CTEs, upserts, MERGE.
    corpus = Path(__file__).parent / "corpus" / "pagila-schema.sql"
    text = corpus.read_text(encoding="utf-8") + (
        "SELECT 1, 1.5, 'x', B'101', X'ff', true, NULL, $1::int[], (ARRAY[1,2])[1:2], "
        "interval '1 day', 'ü' || 'é' AS \"naïve\" FROM t WHERE a IN (1, 2) AND b ~ 'x';\n"
        "WITH w AS (SELECT * FROM t FOR UPDATE SKIP LOCKED) INSERT INTO u (a) SELECT a FROM w "
        "ON CONFLICT (a) WHERE a > 0 DO UPDATE SET a = excluded.a RETURNING *;\n"
        "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET v = s.v "
        "WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.v);\n"
        "SELECT json_object('a': 1), xmlelement(name x), count(*) FILTER (WHERE a) "
        "OVER (PARTITION BY b ORDER BY c ROWS 2 PRECEDING) FROM t GROUP BY ROLLUP (a, b);\n"
    )
    pieces = [text[s:e] for s, e in queries_module._split(text)]
    assert len(pieces) > 300
    checked = [pglast.parse_sql(p) for p in pieces]
    with unchecked_trees():
        fast = [pglast.parse_sql(p) for p in pieces]
    assert all(_same_tree(a, b) for a, b in zip(checked, fast, strict=True))


def test_a_querys_nodes_are_its_trees_in_walk_order() -> None:
    # The cells read Query.nodes, listed while the set is read, as they read walk_nodes
    # (which reads every attribute; tree_nodes only those pglast declares may hold nodes).
    text = (Path(__file__).parent / "corpus" / "pagila-schema.sql").read_text(encoding="utf-8")
    text += (
        "WITH w AS (SELECT * FROM t WHERE a IN (SELECT b FROM u)) INSERT INTO u (a, b) "
        "VALUES (1, $1), (2, DEFAULT) ON CONFLICT (a) DO UPDATE SET b = excluded.b RETURNING *;\n"
        "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET v = s.v "
        "WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.v);\n"
        "SELECT json_object('a': 1), xmlelement(name x), count(*) FILTER (WHERE a) "
        "OVER (PARTITION BY b ORDER BY c ROWS 2 PRECEDING), (ARRAY[1,2])[1:2], B'101' "
        "FROM t, LATERAL (SELECT 1 FROM u WHERE EXISTS (SELECT FROM w WHERE w.a = t.a)) l "
        "GROUP BY ROLLUP (a, b) UNION ALL SELECT * FROM v ORDER BY 1 FOR UPDATE;\n"
    )
    queries = [q for q in parse_statements(text, "q.sql") if q.tree is not None]
    assert len(queries) > 300
    assert [type(q.tree) for q in queries[-3:]] == [ast.InsertStmt, ast.MergeStmt, ast.SelectStmt]
    for q in queries:
        assert q.nodes is not None and q.statements is not None
        walked = list(walk_nodes(q.tree))
        assert len(q.nodes) == len(walked)
        assert all(a is b for a, b in zip(q.nodes, walked, strict=True)), q.text
        kinds = (ast.SelectStmt, ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt)
        statements = [n for n in walked if isinstance(n, (*kinds, ast.CommonTableExpr))]
        assert len(q.statements) == len(statements)
        assert all(a is b for a, b in zip(q.statements, statements, strict=True)), q.text


def test_pglasts_checks_are_back_after_a_query_set_is_read(tmp_path: Path) -> None:
    (tmp_path / "q.sql").write_text("SELECT 1;\nselec oops;\n")
    with pytest.raises(RuntimeError), unchecked_trees(), unchecked_trees():
        raise RuntimeError("a failure inside, nested")
    load_query_set(tmp_path / "q.sql")
    with pytest.raises(ValueError, match="Bad value"):
        ast.RangeVar().relname = 42  # type: ignore[assignment]
