"""The lint's checks, one module per kind of statement; importing this registers them.

Each module registers its checks for the parse node types they read
(`migrator.lint.registry.on`); which rule a check reports is in its name and docstring,
and the rules themselves are in `migrator.lint.rules`.
"""

from migrator.lint.checks import (
    alter_table,
    columns,
    create,
    drops,
    indexes,
    locks,
    maintenance,
    naming,
    renames,
    transactions,
    types,
    writes,
)

__all__ = [
    "alter_table",
    "columns",
    "create",
    "drops",
    "indexes",
    "locks",
    "maintenance",
    "naming",
    "renames",
    "transactions",
    "types",
    "writes",
]
