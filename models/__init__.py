"""Canonical schemas, configuration and pure domain logic (no I/O)."""
