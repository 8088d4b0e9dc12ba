"""The warehouse DDL and the canonical schemas in models/ describe the same columns."""

from __future__ import annotations

import json
import re
from pathlib import Path

import sql
from models.focus import FOCUS_COLUMNS, FOCUS_COSTS_COLUMNS, REQUIRED_COLUMNS
from models.usage import INFERENCE_USAGE_SCHEMA

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "mapping_tables"


def ddl_columns(name: str) -> list[tuple[str, str, bool]]:
    text = sql.read(f"ddl/{name}")
    cols = re.findall(r'^\s+"?([A-Za-z_]+)"? ([A-Z]+(?:\(\d+, \d+\))?(?: PRECISION)?)( NOT NULL)?,?$', text, re.M)
    return [(c, t, bool(nn)) for c, t, nn in cols]


def test_focus_costs_ddl_matches_the_model() -> None:
    assert ddl_columns("010_focus_costs.sql") == [
        (c.name, c.sql_type, not c.nullable and c.level == "M") for c in FOCUS_COSTS_COLUMNS
    ]


def test_all_57_focus_12_columns_with_spec_types_and_nullability() -> None:
    assert len(FOCUS_COLUMNS) == 57
    spec_file = SHARED / "focus_spec_v1.2_columns_parsed_from_tag.json"
    if spec_file.exists():  # the spec's own column table, parsed from FOCUS_Spec tag v1.2
        spec = {c["name"]: c["cons"] for c in json.loads(spec_file.read_text())}
        assert {c.name for c in FOCUS_COLUMNS} == set(spec)
        for c in FOCUS_COLUMNS:
            assert c.focus_type == spec[c.name]["Data type"], c.name
            assert c.nullable == (spec[c.name]["Allows nulls"] == "True"), c.name
    assert "BilledCost" in REQUIRED_COLUMNS and "Tags" not in REQUIRED_COLUMNS


def test_inference_usage_ddl_matches_the_model() -> None:
    assert [c for c, _, _ in ddl_columns("020_inference_usage.sql")] == list(INFERENCE_USAGE_SCHEMA)


def test_sql_transpiles_to_other_warehouses() -> None:
    import sqlglot

    for name in sql.files("transform") + sql.files("views"):
        for statement in sql.statements(sql.read(name)):
            for dialect in ("postgres", "bigquery", "snowflake", "spark"):
                assert sqlglot.transpile(statement, read="duckdb", write=dialect), (name, dialect)
