"""Helpers the tests share: real PostgreSQL servers and fresh databases."""
