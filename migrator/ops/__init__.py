"""Operations, one module per kind, and the registry that maps YAML names to classes.

The registry is the only list of operation names: the plan models, the JSON Schema and
the CLI all read it.
"""

from __future__ import annotations

from migrator.ops.add_check import AddCheck
from migrator.ops.add_column import AddColumn
from migrator.ops.add_enum_value import AddEnumValue
from migrator.ops.add_exclusion import AddExclusion
from migrator.ops.add_foreign_key import AddForeignKey
from migrator.ops.add_unique import AddUnique
from migrator.ops.alter_column import AlterColumn
from migrator.ops.attach_partition import AttachPartition
from migrator.ops.base import Context, Operation, Phase
from migrator.ops.create_enum import CreateEnum
from migrator.ops.create_index import CreateIndex
from migrator.ops.create_table import CreateTable
from migrator.ops.detach_partition import DetachPartition
from migrator.ops.drop_column import DropColumn
from migrator.ops.drop_constraint import DropConstraint
from migrator.ops.drop_index import DropIndex
from migrator.ops.drop_table import DropTable
from migrator.ops.rename_column import RenameColumn
from migrator.ops.rename_constraint import RenameConstraint
from migrator.ops.rename_table import RenameTable
from migrator.ops.set_not_null import SetNotNull
from migrator.ops.set_replica_identity import SetReplicaIdentity
from migrator.ops.sql import RawSql

REGISTRY: dict[str, type[Operation]] = {
    cls.op_name: cls
    for cls in (
        CreateTable,
        AddColumn,
        RenameColumn,
        AlterColumn,
        RenameTable,
        CreateIndex,
        AddForeignKey,
        AddCheck,
        AddUnique,
        AddExclusion,
        AddEnumValue,
        CreateEnum,
        SetNotNull,
        DropColumn,
        DropTable,
        DropIndex,
        DropConstraint,
        RenameConstraint,
        SetReplicaIdentity,
        AttachPartition,
        DetachPartition,
        RawSql,
    )
}

__all__ = [
    "REGISTRY",
    "Context",
    "Operation",
    "Phase",
]
