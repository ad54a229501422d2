"""Malformed plans: each gets one line naming file:line:column, and exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from migrator.cli import app
from migrator.errors import PlanError
from migrator.ops import REGISTRY
from migrator.plan.loader import load_plan, parse_plan

GOOD_OP = "  - add_column: {table: users, column: {name: phone, type: text}}\n"

# (name, plan text, expected "line:column", a fragment of the expected message)
CASES: list[tuple[str, str, str, str]] = [
    ("empty file", "", "1:1", "the plan is empty"),
    ("not a map", "- a\n- b\n", "1:1", "a plan is a map of keys"),
    ("missing release", "expand: []\n", "1:1", "missing required key 'release'"),
    ("unknown top key", "release: r\nbogus: 1\n", "2:1", "unknown key 'bogus'"),
    ("typo top key", "release: r\nexpnad: []\n", "2:1", "did you mean 'expand'"),
    ("release not a string", "release: [1]\n", "1:10", "release: Input should be a valid string"),
    (
        "bad yaml indentation",
        "release: r\n  expand: []\n",
        "2:9",
        "invalid YAML: mapping values are not allowed here; a `key:` where none can start: "
        "line it up with the keys above it",
    ),
    (
        "tab in yaml",
        "release: r\nexpand:\n\t- x\n",
        "3:1",
        "invalid YAML: found character '\\t' that cannot start any token (while scanning "
        "for the next token); indent with spaces: YAML does not allow tabs",
    ),
    (
        "key indented less than its siblings",
        "release: r\nexpand:\n  - add_column:\n      table: t\n     column: {name: a}\n",
        "5:6",
        "(while parsing a block mapping that starts at 3:5); this line is indented "
        "differently from the keys above it",
    ),
    (
        "no space after an operation's dash",
        "release: r\nexpand:\n  -add_column:\n      table: t\n",
        "3:3",
        "expand: '-add_column' is a key, not a list item: an operation starts with `- ` "
        "(a dash, then a space), `- add_column:`",
    ),
    (
        "no space after a contract operation's dash",
        "release: r\ncontract:\n  -drop_column: {table: t, column: c}\n",
        "3:3",
        "contract: '-drop_column' is a key, not a list item",
    ),
    (
        "operations without dashes",
        "release: r\nexpand:\n  add_column:\n      table: t\n",
        "2:1",
        "expand is a list of operations, each starting with `- ` (a dash, then a space), "
        "e.g. `- add_column:`; got a map",
    ),
    (
        "no space after the second item's dash",
        "release: r\nexpand:\n  - add_column: {table: t}\n  -add_column: {table: t}\n",
        "4:3",
        "a `key:` where a list item goes: an item starts with `- ` (a dash, then a space)",
    ),
    (
        "unclosed brace",
        "release: r\nexpand:\n  - add_column:\n      column: {name: a, type: text\n",
        "5:1",
        "(while parsing a flow mapping that starts at 4:15); a `{` is not closed by a `}`",
    ),
    (
        "unclosed quote",
        "release: r\nexpand:\n  - add_column:\n      up: \"coalesce(a, '')\n",
        "5:1",
        "(while scanning a quoted scalar that starts at 4:11); a quote is not closed",
    ),
    (
        "backslash in double quotes",
        "release: r\nexpand:\n  - sql: {expand: \"SELECT 1 WHERE a ~ '\\d'\"}\n",
        "3:41",
        "found unknown escape character 'd' (while scanning a double-quoted scalar that "
        "starts at 3:19); in double quotes a backslash starts an escape",
    ),
    (
        "missing comma in a flow map",
        "release: r\nexpand:\n  - add_column: {table: t column: {name: a}}\n",
        "3:33",
        "expected ',' or '}', but got ':' (while parsing a flow mapping that starts at "
        "3:17); the entries of a `{ }` map are separated by `,`: one is missing",
    ),
    (
        "brace closed twice",
        "release: r\nexpand:\n  - add_column: {table: t}}\n",
        "3:27",
        "expected <block end>, but found '}' (while parsing a block mapping that starts at "
        "3:5); a `}` that no `{` opened",
    ),
    ("duplicate key", "release: r\nrelease: s\n", "2:1", "duplicate key 'release'"),
    (
        "unknown operation",
        "release: r\nexpand:\n  - add_colum: {table: t}\n",
        "3:5",
        "unknown operation 'add_colum'; did you mean 'add_column'?",
    ),
    (
        "two keys in one operation",
        "release: r\nexpand:\n  - add_column: {table: t, column: {name: a, type: text}}\n"
        "    create_index: {table: t, name: i, columns: [a]}\n",
        "4:5",
        "one operation per list item",
    ),
    (
        "operation not a map",
        "release: r\nexpand:\n  - add_column\n",
        "3:5",
        "an operation is a map with one key",
    ),
    (
        "unknown key in operation",
        "release: r\nexpand:\n  - add_column: {table: t, colum: {name: a, type: text}}\n",
        "3:28",
        "unknown key 'colum'",
    ),
    (
        "missing key in operation",
        "release: r\nexpand:\n  - add_column:\n      table: t\n",
        "3:5",
        "missing required key 'column'",
    ),
    (
        "wrong type in column",
        "release: r\nexpand:\n  - add_column:\n      table: t\n"
        "      column: {name: a, type: text, nullable: 'no'}\n",
        "5:47",
        "nullable: Input should be a valid boolean",
    ),
    (
        "bad duration",
        "release: r\ndatabase: {lock_timeout: 5 parsecs}\n",
        "2:26",
        "'5 parsecs' is not a duration",
    ),
    (
        "negative retries",
        "release: r\ndatabase: {retries: -1}\n",
        "2:21",
        "retries: Input should be greater than or equal to 0",
    ),
    (
        "retries as string",
        "release: r\ndatabase: {retries: '3'}\n",
        "2:21",
        "retries: Input should be a valid integer",
    ),
    (
        "drop under expand",
        "release: r\nexpand:\n  - drop_column: {table: t, column: a}\n",
        "3:5",
        "drop_column cannot stand under expand",
    ),
    (
        "set_not_null under expand",
        "release: r\nexpand:\n  - set_not_null: {table: t, column: a}\n",
        "3:5",
        "set_not_null cannot stand under expand",
    ),
    (
        "add_column under contract",
        "release: r\ncontract:\n  - add_column: {table: t, column: {name: a, type: text}}\n",
        "3:5",
        "add_column cannot stand under contract",
    ),
    (
        "switch with two backends",
        "release: r\nswitch:\n  command: {to_green: a, to_blue: b}\n"
        "  nginx: {upstream_file: f, upstream: u, blue: [a], green: [b]}\n",
        "2:1",
        "exactly one backend",
    ),
    (
        "steps not ending at 100",
        "release: r\nswitch:\n  command: {to_green: a, to_blue: b}\n  steps: [10, 50]\n",
        "4:10",
        "steps must rise strictly and end at 100",
    ),
    (
        "step above 100",
        "release: r\nswitch:\n  command: {to_green: a, to_blue: b}\n  steps: [150]\n",
        "4:11",
        "Input should be less than or equal to 100",
    ),
    (
        "probe with two kinds",
        "release: r\nswitch:\n  command: {to_green: a, to_blue: b}\n"
        "  smoke:\n    - http: {url: 'http://x'}\n      prometheus: {url: 'http://p', query: q}\n",
        "5:7",
        "exactly one of http, prometheus",
    ),
    (
        "batch size zero",
        "release: r\nbackfill: {batch_size: 0}\n",
        "2:24",
        "batch_size is 'auto' or a number of rows above 0",
    ),
    (
        "unknown backend key",
        "release: r\nswitch:\n  kubernets: {}\n",
        "3:3",
        "did you mean 'kubernetes'",
    ),
    (
        "contract doc form",
        "release: r\ncontract:\n  - drop_column: {table: t, column: a}\n  not_before: 24h\n",
        "4:3",
        "invalid YAML",
    ),
    (
        "contract map unknown key",
        "release: r\ncontract: {not_before: 1h, operatons: []}\n",
        "2:28",
        "unknown key 'operatons'",
    ),
    (
        "typo key inside an operation",
        "release: r\nexpand:\n  - add_column:\n      table: t\n      colum: {name: a, type: text}\n",
        "5:7",
        "unknown key 'colum' (did you mean 'column'?); expected one of: lint, table, column",
    ),
    (
        "typo key inside an operation's column",
        "release: r\nexpand:\n  - add_column: {table: t, column: {name: a, tpye: text}}\n",
        "3:46",
        "unknown key 'tpye' (did you mean 'type'?)",
    ),
    (
        "typo key inside a contract operation",
        "release: r\ncontract:\n  - drop_column: {table: t, colunm: a}\n",
        "3:29",
        "unknown key 'colunm' (did you mean 'column'?)",
    ),
    (
        "versions missing new",
        "release: r\nversions:\n  old: {name: v1}\n",
        "2:1",
        "missing required key 'new'",
    ),
]


@pytest.mark.parametrize(
    ("text", "where", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_malformed_plan_is_located(text: str, where: str, message: str) -> None:
    with pytest.raises(PlanError) as caught:
        parse_plan(text, "plans/p.yaml")
    assert caught.value.location == f"plans/p.yaml:{where}", str(caught.value)
    assert message in str(caught.value)
    assert caught.value.exit_code == 2


def test_at_least_twenty_cases() -> None:
    assert len(CASES) >= 20


def test_cli_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    plan = tmp_path / "bad.yaml"
    plan.write_text("release: r\nexpand:\n  - add_colum: {table: t}\n")
    result = CliRunner().invoke(app, ["plan", "validate", str(plan)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert f"{plan}:3:5" in lines[0]
    assert "unknown operation 'add_colum'" in lines[0]


@pytest.mark.parametrize(
    "contract",
    [
        "  operations:\n    - drop_colum: {table: t, column: c}\n"
        "    - drop_column: {table: t}\n  -drop_table: {table: x}\n",
        "  operations: {drop_column: {table: t, column: c}}\n  -drop_table: {table: x}\n",
    ],
)
def test_contract_items_at_fault_beside_a_dashed_key(contract: str) -> None:
    """A faulty item (or a map for the list) of contract.operations and a `-key` beside
    it: each told once, at its line, nothing else (review finding: an IndexError, or the
    map told twice)."""
    with pytest.raises(PlanError) as caught:
        parse_plan(f"release: r2\nafter: r1\ncontract:\n{contract}", "p.yaml")
    told = [caught.value, *caught.value.more]
    where = [e.location for e in told]
    assert len(where) == len(set(where)) == (3 if "drop_colum:" in contract else 2), [
        str(e) for e in told
    ]
    assert all("Input should be" not in str(e) for e in told), [str(e) for e in told]


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["expand"], "migrator expand: Missing argument 'PLAN'."),
        (["expand", "--bogus", "p.yaml"], "migrator expand: No such option: --bogus"),
        (["expnd"], "migrator: No such command 'expnd'. Did you mean 'expand'?"),
        (["plan", "validat"], "migrator plan: No such command 'validat'."),
    ],
)
def test_a_usage_error_is_one_line(args: list[str], said: str) -> None:
    """A missing argument, an unknown option or command: one line naming the command,
    with its usage, exit 2 (click's own form is four lines)."""
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"error: {said}"), lines[0]
    assert "(usage: migrator" in lines[0] and "--help` says more)" in lines[0]


def test_every_operation_item_at_fault_is_told(tmp_path: Path) -> None:
    """Two misspelt operations and one with two keys: each at its line, in one run."""
    plan = tmp_path / "bad.yaml"
    plan.write_text(
        "release: r\nexpand:\n  - add_colum: {table: t}\n"
        "  - add_column: {table: t, column: {name: a, type: text}}\n"
        "    create_index: {table: t, name: i, columns: [a]}\n"
        "contract:\n  - drop_colunm: {table: t, column: b}\n"
    )
    result = CliRunner().invoke(app, ["plan", "validate", str(plan)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert [line.split(": ", 2)[1] for line in lines] == [
        f"{plan}:3:5",
        f"{plan}:5:5",
        f"{plan}:7:5",
    ], result.output
    assert "did you mean 'drop_column'?" in lines[2]


def test_an_operation_item_at_fault_hides_no_other_error() -> None:
    """The plan's other errors are told beside a misspelt operation, each at its line
    (the items after the one left out keep theirs)."""
    text = (
        "expand:\n  - add_colum: {table: t}\n"
        "  - rename_column: {table: t, form: a, to: b}\n"
        "bogus: 1\n"
    )
    with pytest.raises(PlanError) as caught:
        parse_plan(text, "p.yaml")
    told = [(e.location, str(e).split(": ", 2)[1].split(";")[0]) for e in caught.value.more]
    assert caught.value.location == "p.yaml:2:5" and "unknown operation 'add_colum'" in str(
        caught.value
    )
    assert sorted(told) == [
        ("p.yaml:1:1", "missing required key 'release'"),
        ("p.yaml:3:31", "unknown key 'form' (did you mean 'from'?)"),
        ("p.yaml:3:5", "missing required key 'from'"),
        ("p.yaml:4:1", "unknown key 'bogus'"),
    ], told


def test_missing_plan_file_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["plan", "validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_a_folder_where_a_plan_file_goes_exits_2(tmp_path: Path) -> None:
    """`migrator expand plans/` (validate takes folders; the phases one plan file)."""
    result = CliRunner().invoke(
        app, ["expand", str(tmp_path), "--database-url", "postgresql://x@h/d"]
    )
    assert result.exit_code == 2
    assert result.output == f"error: plan file {tmp_path} is a folder; name a file in it\n"


def test_valid_plan_parses_and_hash_ignores_formatting() -> None:
    a = parse_plan(f"release: r\nexpand:\n{GOOD_OP}")
    b = parse_plan(
        "# a comment\nrelease: r\nexpand:\n  - add_column:\n      table: users\n"
        "      column:\n        name: phone\n        type: text\n"
    )
    assert a.digest() == b.digest()
    c = parse_plan(
        "release: r\nexpand:\n  - add_column: {table: users, column: {name: p, type: text}}\n"
    )
    assert c.digest() != a.digest()


def test_contract_list_shorthand_and_map_form() -> None:
    short = parse_plan("release: r\ncontract:\n  - drop_column: {table: t, column: a}\n")
    full = parse_plan(
        "release: r\ncontract:\n  not_before: 24h\n  operations:\n"
        "    - drop_column: {table: t, column: a}\n"
    )
    assert short.contract.not_before == 0
    assert full.contract.not_before == 86400
    assert [o.op_name for o in full.operations("contract")] == ["drop_column"]


def test_example_plans_are_valid() -> None:
    plans = sorted(Path(__file__).parent.parent.joinpath("plans").glob("*.yaml"))
    assert plans
    for path in plans:
        load_plan(path)


def test_json_schema_cli() -> None:
    import json

    result = CliRunner().invoke(app, ["plan", "schema"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert schema["title"] == "migrator release plan"
    assert schema["additionalProperties"] is False
    assert "release" in schema["required"]
    defs = json.dumps(schema["$defs"])
    for op in ("add_column", "create_index", "drop_column", "rename_table"):
        assert f'"{op}"' in defs


def test_plan_validate_names_an_unknown_lint_ignore_id_at_its_line_and_column(
    tmp_path: Path,
) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(
        "release: r\nexpand:\n"
        "  - sql:\n"
        "      expand: \"UPDATE settings SET theme = 'dark'\"\n"
        "      rollback: ''\n"
        "      lint:\n"
        "        ignore:\n"
        '          M999: "a reason"\n'
    )
    result = CliRunner().invoke(app, ["plan", "validate", str(path)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and f"{path}:8:11" in lines[0] and "M999" in lines[0], lines
    # `lint` names it at the same place.
    linted = CliRunner().invoke(app, ["lint", str(path)])
    assert linted.exit_code == 2 and f"{path}:8:11" in linted.output, linted.output


def test_validate_takes_files_and_folders_and_reports_every_error(tmp_path: Path) -> None:
    """Each file's errors, each on its own line naming file:line:column, the valid plans
    with their tick, exit 2 when any plan is bad; a folder means its *.yaml and *.yml."""
    folder = tmp_path / "plans"
    folder.mkdir()
    good = folder / "a-good.yaml"
    good.write_text(f"release: r\nexpand:\n{GOOD_OP}")
    bad = folder / "b-bad.yml"
    bad.write_text(
        "release: r\nbogus: 1\nexpand:\n  - add_column: {table: t, colum: {name: a, type: text}}\n"
    )
    (folder / "notes.txt").write_text("not a plan")
    other = tmp_path / "other.yaml"
    other.write_text("release: r\nexpand:\n  - add_colum: {table: t}\n")
    result = CliRunner().invoke(app, ["plan", "validate", str(folder), str(other)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [
        f"✓ {good}: release r, 1 operation",
        f"error: {bad}:4:28: unknown key 'colum' (did you mean 'column'?); expected one of: "
        "lint, table, column, up, final",
        f"error: {bad}:2:1: unknown key 'bogus'; expected one of: release, after, description, "
        "baseline, database, versions, expand, backfill, switch, contract",
        f"error: {bad}:4:5: missing required key 'column'",
        f"error: {other}:3:5: unknown operation 'add_colum'; did you mean 'add_column'? "
        f"expected one of: {', '.join(REGISTRY)}",
    ], result.output
    assert CliRunner().invoke(app, ["plan", "validate", str(good), str(good)]).exit_code == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = CliRunner().invoke(app, ["plan", "validate", str(empty)])
    assert nothing.exit_code == 2 and "no *.yaml or *.yml plan" in nothing.output


def test_validate_names_missing_query_sets_and_baseline_at_their_values(tmp_path: Path) -> None:
    """A query set or baseline the plan names that is not there is found by `plan validate`
    (no database) at the value's file:line:column, relative to the plan's folder; `check`
    refuses it the same way before it reaches any server."""
    (tmp_path / "queries" / "v1").mkdir(parents=True)
    (tmp_path / "notes.txt").write_text("not a query set")
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "release: r\n"
        "baseline: schema.sql\n"
        "versions:\n"
        "  old: {name: v1, queries: queries/v1/}\n"
        "  new:\n"
        "    name: v2\n"
        "    queries: queries/v2/\n"
        f"expand:\n{GOOD_OP}"
    )
    result = CliRunner().invoke(app, ["plan", "validate", str(plan)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert lines == [
        f"error: {plan}:2:11: baseline: schema.sql is not a file ({tmp_path / 'schema.sql'})",
        f"error: {plan}:7:14: versions.new.queries: queries/v2/ does not exist "
        f"({tmp_path / 'queries/v2'})",
    ], result.output
    # A file of another kind is named too; with everything there the plan is valid.
    (tmp_path / "schema.sql").write_text("CREATE TABLE users (id int);\n")
    plan.write_text(plan.read_text().replace("queries/v2/", "notes.txt"))
    result = CliRunner().invoke(app, ["plan", "validate", str(plan)])
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"error: {plan}:7:14: versions.new.queries: notes.txt is neither a folder, "
        "a .sql file nor a .yaml list"
    )
    (tmp_path / "queries" / "v2.sql").write_text("SELECT 1;\n")
    plan.write_text(plan.read_text().replace("notes.txt", "queries/v2.sql"))
    assert CliRunner().invoke(app, ["plan", "validate", str(plan)]).exit_code == 0
    # `check` says it at the same place before any server: this scratch URL answers nobody,
    # so reaching it would be a runtime failure (exit 4), not exit 2.
    plan.write_text(plan.read_text().replace("queries/v1/", "queries/v9/"))
    result = CliRunner().invoke(
        app, ["check", str(plan), "--scratch-url", "postgresql://nobody@127.0.0.1:9/none"]
    )
    assert result.exit_code == 2, result.output
    assert f"{plan}:4:28: versions.old.queries: queries/v9/ does not exist" in result.output
