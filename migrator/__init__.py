"""migrator: zero-downtime blue-green releases on PostgreSQL."""

__version__ = "0.1.0"
