"""What operations say they do to columns (`Operation.column_changes`), and verify's
reading of it: no database needed, nothing asked of an operation's class."""

from __future__ import annotations

from migrator.ops.base import ChangedColumn
from migrator.plan.loader import parse_plan
from migrator.verify.static import column_changes

PLAN = """
release: r1
expand:
  - rename_column: {table: users, from: name, to: full_name}
  - alter_column: {table: users, column: score, type: bigint}
  - alter_column: {table: users, column: email, nullable: false}
  - add_column: {table: users, column: {name: phone, type: text}, up: "'none'"}
  - add_column: {table: users, column: {name: note, type: text}}
  - sql:
      expand: |
        ALTER TABLE users RENAME COLUMN nick TO handle;
        ALTER TABLE other.items ALTER COLUMN price TYPE numeric(12,2);
        UPDATE users SET city_code = upper(city);
        CREATE TRIGGER keep BEFORE INSERT ON other.items
          FOR EACH ROW EXECUTE FUNCTION keep();
      rollback: ""
      contract: "ALTER TABLE users RENAME COLUMN a TO b"
contract:
  not_before: 0s
  operations:
    - drop_column: {table: users, column: name}
"""


def test_each_operation_says_what_it_does_to_columns() -> None:
    plan = parse_plan(PLAN, "plan.yaml")
    expand = [op.column_changes() for op in plan.operations("expand")]
    assert expand[0] == (
        ChangedColumn("users", "name", "rename", "renamed to full_name", "expand", True),
    )
    assert expand[1] == (
        ChangedColumn("users", "score", "retype", "retyped to bigint", "expand", True),
    )
    assert expand[2] == ()
    assert expand[3] == (ChangedColumn("users", "phone", "add", "added as text", "expand", True),)
    assert expand[4] == (ChangedColumn("users", "note", "add", "added as text", "expand", False),)
    assert list(expand[5]) == [
        ChangedColumn("users", "nick", "rename", "renamed in place to handle", "expand", None),
        ChangedColumn("items", "price", "retype", "retyped in place", "expand", None, "other"),
        ChangedColumn("users", "city", "copy", "copies once into city_code", "expand", None),
        ChangedColumn("items", None, "trigger", "trigger keep", "expand", None, "other"),
        ChangedColumn("users", "a", "rename", "renamed in place to b", "contract", None),
    ]
    (drop,) = plan.operations("contract")
    assert drop.column_changes() == (ChangedColumn("users", "name", "drop", "dropped", "contract"),)


def test_verify_reads_the_changes_of_the_expand() -> None:
    plan = parse_plan(PLAN, "plan.yaml")
    found = [
        (c.schema, c.table, c.column, c.kind, c.detail, c.carried, c.source)
        for c in column_changes(plan)
    ]
    assert found == [
        (
            "public",
            "users",
            "name",
            "rename",
            "renamed to full_name",
            True,
            "expand[0] rename_column",
        ),
        ("public", "users", "score", "retype", "retyped to bigint", True, "expand[1] alter_column"),
        ("public", "users", "nick", "rename", "renamed in place to handle", False, "expand[5] sql"),
        # the trigger on other.items may carry the writes
        ("other", "items", "price", "retype", "retyped in place", True, "expand[5] sql"),
        ("public", "users", "city", "copy", "copies once into city_code", False, "expand[5] sql"),
    ]
    fixes = {c.column: c.fix for c in column_changes(plan)}
    assert fixes["name"] == "" and "in place" in fixes["nick"] and "one-time" in fixes["city"]
