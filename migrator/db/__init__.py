"""Connections (psycopg 3 through SQLAlchemy) and the embedded PostgreSQL."""
