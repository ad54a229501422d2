"""The release plan as pydantic models: the contract of docs/plan-format.md.

Strict throughout: an unknown key is an error, values are not coerced. Operation items
are maps with exactly one key, the operation's name; their models come from the
operation registry, so an operation is declared in one place only. Likewise the
switch's backend keys and their models come from the switch registry.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import (
    Discriminator,
    Field,
    PlainValidator,
    Tag,
    WithJsonSchema,
    create_model,
    field_validator,
)

from migrator.durations import Duration
from migrator.ops import REGISTRY, Operation, Phase
from migrator.ops.columns import Identifier
from migrator.sizes import Size, SizeOrShare
from migrator.strict import Strict
from migrator.switch.settings import SwitchSettings

# -- operation items ---------------------------------------------------------------------


class OperationItem(Strict):
    """A list item under expand: or contract:, ``{op_name: {...}}``."""

    @property
    def op(self) -> Operation:
        """The operation this item holds."""
        (name,) = type(self).model_fields
        value = getattr(self, name)
        assert isinstance(value, Operation)
        return value


def _item_model(name: str, cls: type[Operation]) -> type[OperationItem]:
    model: type[OperationItem] = create_model(  # type: ignore[call-overload]
        f"{cls.__name__}Item", __base__=OperationItem, **{name: (cls, ...)}
    )
    model.__doc__ = f"`{name}` operation"
    return model


def _item_tag(value: Any) -> str | None:
    if isinstance(value, OperationItem):
        return next(iter(type(value).model_fields))
    if isinstance(value, dict) and len(value) == 1:
        return str(next(iter(value)))
    return None


ITEM_MODELS: dict[str, type[OperationItem]] = {
    name: _item_model(name, cls) for name, cls in REGISTRY.items()
}

if TYPE_CHECKING:
    OperationEntry = OperationItem
else:
    OperationEntry = Annotated[
        Union[tuple(Annotated[m, Tag(n)] for n, m in ITEM_MODELS.items())],  # noqa: UP007
        Discriminator(
            _item_tag,
            custom_error_type="operation",
            custom_error_message="expected a map with exactly one key, the operation's name",
        ),
    ]


# -- the rest of the plan ------------------------------------------------------------------


class DatabaseSettings(Strict):
    """``database:``: where the release runs and how hard DDL may wait for locks."""

    schema_: Identifier = Field(default="public", alias="schema")
    lock_timeout: Duration = 1.0
    statement_timeout: Duration = 0.0
    retries: int = Field(default=10, ge=0)


class VersionSpec(Strict):
    """One code version sharing the database."""

    name: str
    queries: str | None = Field(
        default=None, description="a folder of .sql files, a .sql file, or a .yaml list"
    )
    application_name: str | None = Field(
        default=None, description="how this version names its connections (pg_stat_activity)"
    )


class Versions(Strict):
    """``versions:``: the old (live, blue) and the new (green) version."""

    old: VersionSpec
    new: VersionSpec


class UpdateSpec(Strict):
    """An extra data migration, run in the same batched, resumable way as a backfill."""

    table: Identifier
    set: dict[Identifier, str] = Field(min_length=1)
    where: str | None = None


def _batch_size(value: Any) -> Any:
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        return value
    raise ValueError(f"batch_size is 'auto' or a number of rows above 0, not {value!r}")


BatchSize = Annotated[
    Literal["auto"] | int,
    PlainValidator(_batch_size),
    WithJsonSchema(
        {"anyOf": [{"const": "auto"}, {"type": "integer", "minimum": 1}]},
    ),
]


class BackfillSettings(Strict):
    """``backfill:``: batch sizing and throttling for every `up` and update."""

    batch_size: BatchSize = "auto"
    target_batch_time: Duration = 0.2
    pause: Duration = 0.0
    max_replication_lag: Duration = Field(
        default=10.0,
        description="pause while a replica in pg_stat_replication replays further behind",
    )
    max_replication_lag_bytes: Size | None = Field(
        default=None,
        description="pause while a replica has more WAL than this still to replay (read "
        "even while its replay is paused, when the time lag goes stale); unset: not checked",
    )
    max_retained_wal: SizeOrShare | None = Field(
        default=None,
        description="pause while a replication slot holds more WAL than this on the primary; "
        "a size, a share of the free space of the WAL's disk, or off; unset: 10% of that "
        "free space where migrator can read it, else off",
    )
    max_active_sessions: int | None = Field(
        default=None,
        ge=1,
        description="slow down while more sessions than this (besides the backfill's own) are "
        "active in pg_stat_activity; unset: not checked",
    )
    max_lock_waits: int | None = Field(
        default=2,
        ge=0,
        description="slow down while more sessions than this wait for locks the backfill "
        "holds; unset: not checked",
    )
    updates: list[UpdateSpec] = Field(default_factory=list)
    when: Literal["after_switch", "before_switch"] = Field(
        default="after_switch",
        description="in `migrator release`: backfill after the switch (v2 tolerates NULL), "
        "or before it (v2 needs the data at once)",
    )


class ContractSection(Strict):
    """``contract:``: steps for the next release, and the earliest time they may run.

    Written either as a list of operations, or as a map
    ``{not_before: 24h, operations: [...]}``.
    """

    not_before: Duration = 0.0
    operations: list[OperationEntry] = Field(default_factory=list)


def _contract_shorthand(value: Any) -> Any:
    return {"operations": value} if isinstance(value, list) else value


class Plan(Strict):
    """A release plan."""

    release: Identifier = Field(min_length=1, description="unique name of this release")
    after: Identifier | None = Field(default=None, description="the release this one follows")
    description: str | None = None
    baseline: str | None = Field(
        default=None,
        description="a .sql file (relative to the plan) holding the schema before this release; "
        "`migrator check` builds its scratch copy from it when no --database-url is given",
    )
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    versions: Versions | None = None
    expand: list[OperationEntry] = Field(default_factory=list)
    backfill: BackfillSettings = Field(default_factory=BackfillSettings)
    switch: SwitchSettings | None = None
    contract: Annotated[ContractSection, Field(default_factory=ContractSection)]

    @field_validator("contract", mode="before")
    @classmethod
    def _contract_list(cls, value: Any) -> Any:
        return _contract_shorthand(value)

    @property
    def schema_name(self) -> str:
        """The database schema the release works in."""
        return self.database.schema_

    def operations(self, phase: Phase) -> list[Operation]:
        """The operations listed under ``expand:`` or ``contract:``."""
        items = self.expand if phase == "expand" else self.contract.operations
        return [item.op for item in items]

    def canonical(self) -> dict[str, Any]:
        """The plan as plain JSON data, keys as the YAML spells them."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def digest(self) -> str:
        """sha256 of the canonical plan: formatting and comments do not change it."""
        data = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(data.encode()).hexdigest()


def placement_errors(plan: Plan) -> list[tuple[tuple[str | int, ...], str]]:
    """Operations standing where they would break a version: (path, message) pairs."""
    errors: list[tuple[tuple[str | int, ...], str]] = []
    for phase, items, path in (
        ("expand", plan.expand, ("expand",)),
        ("contract", plan.contract.operations, ("contract", "operations")),
    ):
        for index, item in enumerate(items):
            op = item.op
            problem = op.placement_error(phase)  # type: ignore[arg-type]
            if problem is not None:
                errors.append(((*path, index, op.op_name), problem))
    return errors


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a plan, for editors (yaml-language-server) and CI."""
    schema = Plan.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "migrator release plan"
    return schema


__all__ = ["Plan", "json_schema", "placement_errors"]
