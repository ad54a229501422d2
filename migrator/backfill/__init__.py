"""Batched, resumable row rewriting."""
