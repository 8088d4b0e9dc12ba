"""Warehouse SQL: DDL, transformations and analyst views, in DuckDB's dialect, portable to PostgreSQL."""

from __future__ import annotations

from importlib import resources


def read(name: str) -> str:
    """The text of ``sql/<name>`` (e.g. ``transform/feature_costs_daily.sql``)."""
    return resources.files(__name__).joinpath(name).read_text()


def files(folder: str) -> list[str]:
    """``sql/<folder>/*.sql`` names, in order."""
    return sorted(f"{folder}/{p.name}" for p in resources.files(__name__).joinpath(folder).iterdir()
                  if p.name.endswith(".sql"))  # fmt: skip


def statements(text: str) -> list[str]:
    """Split a file into statements on ``;`` at the end of a line (our files never put one elsewhere)."""
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in body.split(";\n") if s.strip().rstrip(";").strip()]


def created_columns(statement: str, dialect: str) -> tuple[str, list[tuple[str, str]]] | None:
    """(table, [(column, type in ``dialect``)]) of a ``CREATE TABLE`` statement, else None."""
    # Imported here: only ensure_schema parses DDL, and sqlglot takes a tenth of a second to import.
    import sqlglot
    from sqlglot import exp

    created = sqlglot.parse_one(statement, read="duckdb")
    if not isinstance(created, exp.Create) or created.args.get("kind") != "TABLE":
        return None
    schema = created.this
    columns = [(c.name, c.args["kind"].sql(dialect)) for c in schema.expressions if isinstance(c, exp.ColumnDef)]
    return schema.this.name, columns
