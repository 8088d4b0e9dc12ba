"""Dagster wiring, the `cogs` CLI, reports and the demo."""
