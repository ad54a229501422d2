"""The lint rules: one registry, the only place a rule's id, reason and safe form are written.

The ids are stable: M001..M032 follow the rows of LINT-RULES.md in order, so M014 is
row 14 (SET NOT NULL); M033 on were added after it. Rules marked ``optional`` are off
unless enabled. docs/lint-rules.md is generated from this registry
(``python -m migrator.lint > docs/lint-rules.md``) and a test keeps the two equal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from migrator.findings import Finding

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Rule:
    """One rule: what it catches, why it hurts, and the form to write instead."""

    id: str
    name: str
    severity: Severity
    catches: str
    reason: str
    safe_form: str
    versions: str = ""
    live: str = ""
    optional: bool = False  # off unless enabled (`migrator lint --enable ID`)


def _rules(*rules: Rule) -> dict[str, Rule]:
    registry = {r.id: r for r in rules}
    assert len(registry) == len(rules), "duplicate lint rule id"
    return registry


RULES: dict[str, Rule] = _rules(
    Rule(
        "M001",
        "create-index-not-concurrently",
        "error",
        "CREATE INDEX without CONCURRENTLY on a table that already exists",
        "takes a SHARE lock: every write to the table waits for the whole index build",
        "CREATE INDEX CONCURRENTLY, in an autocommit step (outside any transaction)",
    ),
    Rule(
        "M002",
        "drop-index-not-concurrently",
        "error",
        "DROP INDEX without CONCURRENTLY",
        "takes ACCESS EXCLUSIVE on the index's table: reads and writes wait",
        "DROP INDEX CONCURRENTLY IF EXISTS, in an autocommit step",
    ),
    Rule(
        "M003",
        "concurrently-in-transaction",
        "error",
        "CREATE/DROP INDEX CONCURRENTLY, REINDEX CONCURRENTLY, DETACH PARTITION CONCURRENTLY "
        "or VACUUM inside a transaction",
        "PostgreSQL refuses these inside a transaction block: the step fails at run time",
        "run the statement in an autocommit step (a `Statement(..., autocommit=True)`; in "
        "raw SQL, outside BEGIN/COMMIT)",
    ),
    Rule(
        "M004",
        "invalid-index-left-behind",
        "error",
        "an INVALID index (left by a failed concurrent build) where the plan builds one; "
        "offline: CREATE INDEX CONCURRENTLY IF NOT EXISTS with no DROP INDEX before it",
        "IF NOT EXISTS skips the INVALID leftover, so the rerun 'succeeds' without a usable "
        "index; without it the rerun fails on the name",
        "DROP INDEX CONCURRENTLY IF EXISTS the leftover, then build again (or REINDEX "
        "INDEX CONCURRENTLY)",
        live="with a database, reads pg_index.indisvalid for the index names the plan builds",
    ),
    Rule(
        "M005",
        "foreign-key-validated-on-add",
        "error",
        "ADD FOREIGN KEY (or ADD COLUMN ... REFERENCES) without NOT VALID on an existing table",
        "holds SHARE ROW EXCLUSIVE on both tables through a full scan of the referencing one",
        "ADD CONSTRAINT ... FOREIGN KEY ... NOT VALID, then VALIDATE CONSTRAINT in its own "
        "transaction; on a partitioned table before PostgreSQL 18 (no NOT VALID there), "
        "that on each leaf partition, then the key on the table, which attaches theirs",
    ),
    Rule(
        "M006",
        "check-validated-on-add",
        "error",
        "ADD CHECK (or ADD COLUMN ... CHECK) without NOT VALID on an existing table",
        "holds ACCESS EXCLUSIVE through a full scan of the table",
        "ADD CONSTRAINT ... CHECK (...) NOT VALID, then VALIDATE CONSTRAINT in its own transaction",
    ),
    Rule(
        "M007",
        "validate-in-same-transaction",
        "error",
        "VALIDATE CONSTRAINT in the same transaction as the ADD ... NOT VALID",
        "the strong lock the ADD took is held through the validating scan",
        "commit the ADD first; VALIDATE in a separate step (transaction)",
    ),
    Rule(
        "M008",
        "add-unique-constraint",
        "error",
        "ADD UNIQUE (constraint or column option) on an existing table, not USING INDEX",
        "builds the index under ACCESS EXCLUSIVE: reads and writes wait for the build",
        "CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT ... UNIQUE USING INDEX; on a "
        "partitioned table (no USING INDEX there), that on each leaf partition, then ADD "
        "CONSTRAINT ... UNIQUE on the table, which adopts theirs",
    ),
    Rule(
        "M009",
        "add-primary-key",
        "error",
        "ADD PRIMARY KEY on an existing table, not USING INDEX",
        "ACCESS EXCLUSIVE through the index build and the NOT NULL scan",
        "a validated CHECK (col IS NOT NULL) and SET NOT NULL first, CREATE UNIQUE INDEX "
        "CONCURRENTLY, then ADD CONSTRAINT ... PRIMARY KEY USING INDEX; on a partitioned "
        "table, that on each leaf partition, then ADD PRIMARY KEY on the table, which "
        "adopts theirs",
    ),
    Rule(
        "M010",
        "unique-over-duplicates",
        "error",
        "a unique index, UNIQUE or PRIMARY KEY over data that already has duplicates",
        "the build fails half-way through the release",
        "remove or merge the duplicates first (the finding lists them), then build",
        live="needs a database: counts the duplicate keys and shows the most frequent",
    ),
    Rule(
        "M011",
        "volatile-default",
        "error",
        "ADD COLUMN with a volatile DEFAULT (before PostgreSQL 11: with any DEFAULT)",
        "rewrites the whole table under ACCESS EXCLUSIVE",
        "add the column nullable without the default, SET DEFAULT for new rows, then fill "
        "old rows with a batched backfill (add_column with `up`)",
        versions="PostgreSQL 11+ stores a non-volatile default without a rewrite",
    ),
    Rule(
        "M012",
        "not-null-without-default",
        "error",
        "ADD COLUMN ... NOT NULL without a DEFAULT on an existing table",
        "fails on the rows already there, and the old version's INSERTs break",
        "add the column nullable now; make it NOT NULL in the contract (add_column's "
        "`final: {nullable: false}`)",
    ),
    Rule(
        "M013",
        "rewriting-column-kind",
        "error",
        "ADD COLUMN of a serial, identity or stored generated column on an existing table",
        "fills every row at once: a table rewrite under ACCESS EXCLUSIVE",
        "a plain nullable column, a trigger for new rows, and a batched backfill",
    ),
    Rule(
        "M014",
        "set-not-null-scan",
        "error",
        "ALTER COLUMN ... SET NOT NULL without a validated CHECK (col IS NOT NULL) "
        "(before PostgreSQL 12: always)",
        "scans the whole table under ACCESS EXCLUSIVE",
        "ADD CHECK (col IS NOT NULL) NOT VALID; VALIDATE in its own transaction; SET NOT "
        "NULL; DROP the check",
        versions="PostgreSQL 12+ skips the scan when a validated CHECK proves the column "
        "has no NULL; before 12 keep the CHECK instead of NOT NULL",
    ),
    Rule(
        "M015",
        "drop-not-null",
        "warning",
        "ALTER COLUMN ... DROP NOT NULL on a column the plan did not add",
        "the old version may now read NULLs it never expected",
        "keep NOT NULL, or write a sentinel value instead of NULL",
    ),
    Rule(
        "M016",
        "alter-column-type",
        "error",
        "ALTER COLUMN ... TYPE that is not binary-coercible",
        "rewrites the table and its indexes under ACCESS EXCLUSIVE; clients of the old type break",
        "binary-coercible changes only (varchar(n) to text or a wider varchar, numeric "
        "widening); else a shadow column with triggers, backfill and a swap (alter_column)",
    ),
    Rule(
        "M017",
        "bounded-character-type",
        "warning",
        "a varchar(n) or char(n) column",
        "changing the length later needs ACCESS EXCLUSIVE (and a rewrite when it shrinks)",
        "text with CHECK (length(col) <= n) (added NOT VALID on an existing table)",
    ),
    Rule(
        "M018",
        "domain-check",
        "warning",
        "a domain with a CHECK, or a CHECK added to an existing domain",
        "adding or changing the CHECK revalidates every column of every table using the domain",
        "the base type with a CHECK constraint on each table",
    ),
    Rule(
        "M019",
        "rename-column",
        "error",
        "RENAME COLUMN in place on a column the plan did not add",
        "the old version's queries break the moment it commits",
        "a new column kept in sync by triggers, the old one dropped in the contract "
        "(rename_column)",
    ),
    Rule(
        "M020",
        "rename-table",
        "error",
        "RENAME TABLE in place without a view under the old name in the same transaction",
        "the old version's queries break the moment it commits",
        "rename, and CREATE VIEW old_name AS SELECT * FROM new_name in the same "
        "transaction, dropped in the contract (rename_table)",
    ),
    Rule(
        "M021",
        "drop-column",
        "error",
        "DROP COLUMN of a column the plan did not add, outside the contract",
        "the old version still reads and writes it; the data is gone",
        "only in the contract, after the old version is gone and nothing reads it",
    ),
    Rule(
        "M022",
        "drop-table-or-foreign-key",
        "error",
        "DROP TABLE, or dropping a foreign key, outside the contract; in the contract, "
        "dropping a table that still holds rows",
        "data or integrity is lost, and the old version still uses it",
        "only in the contract; check (and say) how many rows it holds, archive them first",
        live="with a database, counts the rows of a table the contract drops",
    ),
    Rule(
        "M023",
        "truncate-or-unbounded-write",
        "error",
        "TRUNCATE, or UPDATE/DELETE without WHERE, on an existing table",
        "data loss, and row locks on the whole table for as long as the statement runs",
        "a batched backfill or `backfill.updates` entry (small transactions, resumable)",
    ),
    Rule(
        "M024",
        "enum-change",
        "error",
        "ALTER TYPE ... ADD VALUE inside a transaction (before PostgreSQL 12), "
        "RENAME VALUE, ADD VALUE BEFORE/AFTER, or a new value used in the transaction that "
        "added it",
        "fails at run time, or changes values and sort order under the running application",
        "ADD VALUE IF NOT EXISTS at the end, outside a transaction before PostgreSQL 12; "
        "never rename a value",
        versions="PostgreSQL 12+ allows ADD VALUE inside a transaction",
    ),
    Rule(
        "M025",
        "exclusion-constraint",
        "error",
        "ADD CONSTRAINT ... EXCLUDE on an existing table",
        "builds its index under ACCESS EXCLUSIVE, and cannot be added NOT VALID (PostgreSQL "
        "has no lock-light form; a warning where the same operation built that index "
        "concurrently first, as add_exclusion does to time the build and the rows' check and "
        "refuse a slow one: the lock is measured first, not shortened)",
        "a new table with the constraint, copy the rows across, then switch; on a table whose "
        "index build and check fit within max_lock_hold, add_exclusion",
    ),
    Rule(
        "M026",
        "json-type",
        "warning",
        "a json column",
        "json has no equality operator: DISTINCT, GROUP BY and UNION over it fail",
        "jsonb",
    ),
    Rule(
        "M027",
        "attach-detach-partition",
        "error",
        "ATTACH PARTITION without a validated CHECK on the partition first, or DETACH "
        "PARTITION without CONCURRENTLY",
        "scans the partition and locks the parent: writes to the partitioned table wait",
        "DETACH PARTITION ... CONCURRENTLY (PostgreSQL 14+); before ATTACH, a CHECK matching "
        "the partition bound added NOT VALID and validated",
        versions="DETACH ... CONCURRENTLY exists from PostgreSQL 14",
    ),
    Rule(
        "M028",
        "blocking-maintenance",
        "error",
        "REINDEX, VACUUM FULL, CLUSTER or REFRESH MATERIALIZED VIEW without CONCURRENTLY",
        "ACCESS EXCLUSIVE (REINDEX: blocks writes) for the whole rebuild",
        "REINDEX ... CONCURRENTLY (PostgreSQL 12+), REFRESH MATERIALIZED VIEW CONCURRENTLY, "
        "pg_repack instead of VACUUM FULL / CLUSTER; REINDEX SYSTEM has no concurrent form: "
        "a maintenance window, not a release",
    ),
    Rule(
        "M029",
        "no-lock-timeout",
        "error",
        "DDL with no lock_timeout: a plan with lock_timeout 0, a step that resets it, or a "
        "raw SQL file that never sets it",
        "a statement waiting for its lock queues every query on the table behind it",
        "SET lock_timeout (the plan's database.lock_timeout, default 1s) and retry with "
        "backoff: migrator's executor does both",
    ),
    Rule(
        "M030",
        "not-rerunnable",
        "warning",
        "a statement outside a transaction (autocommit) that fails when run a second time",
        "a partial failure leaves it done, and the rerun fails on it",
        "IF [NOT] EXISTS forms, or DROP ... IF EXISTS right before the CREATE",
    ),
    Rule(
        "M031",
        "transaction-control",
        "error",
        "BEGIN/COMMIT/ROLLBACK in a step's SQL; in raw SQL, a nested BEGIN or a BEGIN "
        "without COMMIT",
        "changes are silently not applied, or committed where migrator cannot record them",
        "no transaction control in plan SQL: one transaction per step, managed by migrator",
    ),
    Rule(
        "M032",
        "long-access-exclusive",
        "error",
        "ACCESS EXCLUSIVE on several existing tables in one transaction, or slow work "
        "(scans, rewrites, index builds, data changes) after taking it",
        "every query on those tables stalls for the whole transaction; deadlocks",
        "one table per transaction, and nothing slow while holding ACCESS EXCLUSIVE: split "
        "the step",
    ),
    Rule(
        "M033",
        "identifier-too-long",
        "error",
        "an identifier longer than 63 bytes",
        "PostgreSQL silently truncates it to 63 bytes: two names that share their first 63 "
        "bytes collide, and a lookup by the full name (migrator's catalog checks, IF "
        "EXISTS in tools) does not find the object",
        "names of at most 63 bytes (NAMEDATALEN - 1)",
        versions="every version: NAMEDATALEN is 64 unless PostgreSQL is built otherwise",
    ),
    Rule(
        "M034",
        "prefer-bigint-for-keys",
        "warning",
        "int or smallint (serial, smallserial) for a new primary key column, or for a "
        "column referencing a key created in the same plan or file",
        "the key runs out (2,147,483,647 for int) on a busy table, and widening it later "
        "rewrites the table and every table that references it under ACCESS EXCLUSIVE",
        "bigint (bigint GENERATED ... AS IDENTITY for a primary key), and bigint for the "
        "columns that reference it",
        versions="every version",
    ),
    Rule(
        "M035",
        "prefer-identity",
        "warning",
        "a serial, smallserial or bigserial column",
        "the sequence is a separate object with its own grants and ownership, which dumps, "
        "copies and a changed column type handle badly",
        "bigint GENERATED BY DEFAULT AS IDENTITY (or ALWAYS)",
        versions="identity columns exist from PostgreSQL 10; before it serial is the only form and this rule is quiet",
    ),
    Rule(
        "M036",
        "prefer-timestamptz",
        "warning",
        "a timestamp (without time zone) column",
        "it stores a wall-clock time with no zone: values written by servers or sessions in "
        "other time zones cannot be compared, and changing to timestamptz later rewrites "
        "the table",
        "timestamptz (timestamp with time zone)",
        versions="every version",
    ),
    Rule(
        "M037",
        "drop-database",
        "error",
        "DROP DATABASE",
        "every table and row of the database is gone, and no rollback brings it back",
        "never in a release: drop a database by hand, after a backup",
        versions="every version; PostgreSQL 13+ adds WITH (FORCE), which also ends the sessions using it",
    ),
    Rule(
        "M038",
        "update-column-twice",
        "error",
        "the same column assigned twice in one UPDATE's SET",
        "PostgreSQL refuses the statement (multiple assignments to the same column): the "
        "step fails at run time",
        "assign each column once",
        versions="every version",
    ),
    Rule(
        "M039",
        "comment-on-busy-table",
        "warning",
        "COMMENT ON a table, column or constraint of an existing table",
        "takes SHARE UPDATE EXCLUSIVE on the table: it queues behind a running VACUUM (an "
        "anti-wraparound one never yields) or index build, and every DDL queues behind it",
        "keep comments out of the release's locking steps: a step of their own, with "
        "lock_timeout (migrator sets it), at a quiet time",
        versions="every version migrator supports",
    ),
    Rule(
        "M040",
        "lock-table",
        "error",
        "LOCK TABLE in SHARE mode or stronger on an existing table, unless the statement "
        "right after it takes that mode on that table anyway (ADD FOREIGN KEY: SHARE ROW "
        "EXCLUSIVE on the table it references; dropping a foreign key, the column it is "
        "over or its table: ACCESS EXCLUSIVE on it), so the lock is only taken earlier, in "
        "the order chosen (past quick work on that statement's own table alone: dropping "
        "a trigger or a function, ALTER TABLE without a scan, a sequence, GRANT, COMMENT); without ONLY, not where the table has inheritance children (the LOCK takes "
        "theirs too, the statement does not)",
        "blocks every write to the table (ACCESS EXCLUSIVE: every read too) until the "
        "transaction ends, however little it does",
        "no explicit LOCK: let each statement take the lock it needs, briefly; SHARE UPDATE "
        "EXCLUSIVE or weaker if one is needed; to take a foreign key's two locks referenced "
        "table first (as the application's writes go), LOCK it in the statement's own mode "
        "right before the statement (ONLY, unless it is partitioned: its partitions are "
        "locked by the statement too)",
        versions="every version",
        live="which table a dropped foreign key (or a dropped table's) references is asked "
        "of the database; "
        "without one, only a key the same plan or file added is known (of the keys over "
        "a dropped column, only those), else the LOCK is flagged; a table's inheritance children "
        "too (offline, none are known)",
    ),
    Rule(
        "M041",
        "unqualified-table-name",
        "warning",
        "a table named without its schema",
        "which table it means depends on the session's search_path, which differs between "
        "tools, roles and connection poolers",
        "schema-qualified names (public.users)",
        versions="every version",
        optional=True,
    ),
    Rule(
        "M042",
        "no-statement-timeout",
        "warning",
        "DDL or data changes with no statement_timeout: a plan with database."
        "statement_timeout 0, or a raw SQL file that never sets it",
        "a statement that runs far longer than expected (a scan, a rewrite, a big UPDATE) "
        "holds its locks for as long as it runs, with nothing to stop it",
        "SET statement_timeout (the plan's database.statement_timeout) to a bound the "
        "statement should never reach",
        versions="every version",
        optional=True,
    ),
)


def last_id() -> str:
    """The highest rule id (``M042``): error messages name the range of ids."""
    return max(RULES)


def optional_ids() -> list[str]:
    """The ids of the rules that are off unless enabled."""
    return [r.id for r in RULES.values() if r.optional]


def rule(rule_id: str) -> Rule:
    """The rule of an id (KeyError for an unknown one)."""
    return RULES[rule_id]


@dataclass(frozen=True)
class RuleSettings:
    """A project's rule settings (the ``lint:`` key of migrator.yaml, read by the CLI):
    rules whose findings are dropped, severities set per rule, optional rules turned on."""

    disable: frozenset[str] = frozenset()
    severity: Mapping[str, Severity] = field(default_factory=dict)
    enable: frozenset[str] = frozenset()

    def apply(self, findings: Iterable[Finding]) -> list[Finding]:
        """The findings left once disabled rules are dropped, at their set severities."""
        return [
            replace(f, severity=self.severity.get(f.rule, f.severity)) if f.rule else f
            for f in findings
            if not f.rule or f.rule not in self.disable
        ]


def render_markdown() -> str:
    """docs/lint-rules.md, generated from the registry."""
    lines = [
        "# Lint rules",
        "",
        "<!-- Generated by `python -m migrator.lint > docs/lint-rules.md`; "
        "edit migrator/lint/rules.py instead. -->",
        "",
        "`migrator lint PLAN` (and `migrator check`) hold every statement a plan will run to "
        "these rules: the steps of every operation's expand, contract and rollback, the text "
        "of `sql` operations included. `migrator lint --sql FILE` (or `migrator lint "
        "FILE.sql`) holds an existing SQL migration file to them, `migrator lint --alembic "
        "[REV | BASE:HEAD]` Alembic revisions (see *pre-commit and Alembic* below). The ids "
        "are stable; M001..M032 follow the rows of LINT-RULES.md, M033 on were added since.",
        "",
        "- **Transactions**: a step is one transaction unless it is an autocommit step, "
        "whose statements each run alone. In a raw SQL file, statements between BEGIN and "
        "COMMIT share a transaction and the rest run alone, as psql runs them "
        "(`--assume-in-transaction` for runners that wrap the file in one).",
        "- **New tables**: statements on a table created earlier in the same plan or file "
        "(no rows, no traffic yet) are not held to the locking rules.",
        "- **Server version**: verdicts follow the server's version, read from the server "
        "(`--database-url`) or given with `--pg-version N`, `MIGRATOR_PG_VERSION` or "
        "`pg_version: N` in migrator.yaml (default 18).",
        "- **Suppressing**: on the operation, with a written reason: "
        '`lint: {ignore: {M014: "table holds 40 rows"}}` (docs/plan-format.md); in a raw '
        "SQL file, a comment `-- migrator-lint: ignore M014 <reason>` before the statement; "
        "in an Alembic revision, `# migrator-lint: ignore M014 <reason>` on the line above "
        "the `op` call. A missing or empty reason, or an unknown id, is an error (exit 2).",
        "- **Offline**: with no `--database-url`, an operation whose statements can only be "
        "built from the live catalog (alter_column, rename_column) is reported as not "
        "linted (give `--database-url`, or run `migrator check`), and the run is not clean; the rules marked *database* below apply only "
        "with a database (`migrator check` always has one).",
        "- **Optional rules**: the rules marked *optional* below are off unless enabled, "
        "with `--enable ID` (repeatable) on `migrator lint`.",
        "- **Configuration**: the `lint:` key of migrator.yaml sets the rules for "
        "`migrator lint` and the lint of `migrator check`: "
        "`lint: {disable: [M041], warn: [M014], error: [M023], enable: [M042]}`. "
        "`disable` drops a rule's findings, `warn` and `error` set its severity, `enable` "
        "turns on an optional rule (as `--enable` does). An unknown rule id, or a rule "
        "named twice, is an error at its file, line and column (exit 2).",
        "- **Output**: `--format text` (default), `json`, `junit` (a case per finding, a "
        "failure for each that fails the run) or `github` (an annotation per finding at its "
        "file, line and column; `::error` for what fails the run, `::warning` for the rest).",
        "- **Exit codes**: 0 clean, 1 findings (errors or warnings; `--fail-on error` for "
        "errors only) or operations not linted, 2 bad plan or usage (an empty or missing "
        "suppression reason, an unknown rule id, SQL that does not parse), 5 a table "
        "lock not had in time (below).",
        "- **Locks on a live database**: with `--database-url` the lint only reads. Most "
        "of its questions read pg_catalog and take no lock on a table; those that read a "
        "table's rows (duplicates, row counts) or its expressions first take ACCESS SHARE "
        "on it, waiting the plan's `database.lock_timeout` at most (1s for SQL files and "
        "Alembic revisions), once. Behind another session's ACCESS EXCLUSIVE the lint "
        "stops with one line naming the table and the session holding it (exit 5); "
        "nothing is changed.",
        "",
        "| id | name | severity | catches | why it hurts | safe form |",
        "|---|---|---|---|---|---|",
    ]
    for r in RULES.values():
        severity = f"{r.severity} (optional)" if r.optional else r.severity
        lines.append(
            f"| {r.id} | {r.name} | {severity} | {_cell(r.catches)} | {_cell(r.reason)} | "
            f"{_cell(r.safe_form)} |"
        )
    lines += ["", "## Version and database notes", ""]
    for r in RULES.values():
        for label, note in (("version", r.versions), ("database", r.live)):
            if note:
                lines.append(f"- **{r.id}** ({label}): {note}.")
    return "\n".join(lines) + "\n" + HOOKS_SECTION


# The part of docs/lint-rules.md on pre-commit and Alembic. tests/test_lint_hooks.py runs
# the `repo: local` config below, as written here, on a sample git repository.
HOOKS_SECTION = """
## pre-commit and Alembic

The repository's `.pre-commit-hooks.yaml` exposes two hooks for
[pre-commit](https://pre-commit.com). Both lint offline (`migrator lint --offline`: no
database, even where migrator.yaml or `MIGRATOR_DATABASE_URL` names one) and read
migrator.yaml from the repository's root: `pg_version: 15` sets the version the verdicts
follow, `lint:` the rule settings.

- `migrator-lint`: the plans (`plans/*.yaml`) and SQL files (`*.sql`) a commit changes,
  in one run (`migrator lint FILE...`: a `.sql` file is linted as raw SQL, any other as a
  plan). Plans kept elsewhere: set `files:` in your config.
- `migrator-lint-alembic`: the Alembic revisions a commit changes (`migrator lint
  --alembic FILE...`), through their offline SQL; alembic.ini in the repository's root,
  else `args: [--alembic-config, path/to/alembic.ini]`.

Copy into `.pre-commit-config.yaml`, with `rev:` a tag or commit of migrator's repository
(pre-commit installs migrator-pg from it into the hook's environment):

```yaml
repos:
  - repo: https://git.example/your-org/migrator   # migrator's repository
    rev: v0.1.0
    hooks:
      - id: migrator-lint
      - id: migrator-lint-alembic   # for teams on Alembic
```

A project that already has migrator-pg in its development dependencies can run the
installed `migrator` instead, with no environment of pre-commit's own:

```yaml
repos:
  - repo: local
    hooks:
      - id: migrator-lint
        name: migrator lint
        entry: migrator lint --offline
        language: system
        files: '(^|/)plans/[^/]+\\.ya?ml$|\\.sql$'
        require_serial: true
```

`migrator lint --alembic [REV | BASE:HEAD]` lints the revisions from the command line:
each revision's `upgrade()` runs against Alembic's own operations on an offline migration
context, as `alembic upgrade --sql` does (no database, and no env.py), and the SQL it
writes is held to the rules as one script, each revision in its own transaction
(PostgreSQL's DDL is transactional; `autocommit_block()` ends it as Alembic does). A
table created by an earlier revision of the same run counts as new. Each finding is
named at the revision file and the line of its `op` call (`versions/b2_email.py:12`).
With no argument every revision is linted; `BASE:HEAD` leaves BASE out, as Alembic does;
`--alembic-config` / `--script-location` say where the revisions are (default:
./alembic.ini).
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|")
