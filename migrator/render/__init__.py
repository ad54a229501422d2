"""Rendering plans as Alembic revisions, and keeping alembic_version right.

`revisions` writes the files; `history` moves alembic_version when migrator runs a phase
itself. The command is `migrator.commands.render`.
"""
