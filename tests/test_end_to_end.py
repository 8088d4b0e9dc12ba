"""The whole pipeline on the demo company's month, on DuckDB and on a real PostgreSQL server."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from models.config import parse_config
from pipelines.cli import app
from pipelines.demo.company import FEATURES, STORM
from pipelines.demo.run import DemoFiles, generate, serve_api
from pipelines.run import RunFailed, materialize_month
from pipelines.warehouse import Warehouse

MONTH = "2026-10"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory: pytest.TempPathFactory) -> DemoFiles:
    return generate(MONTH, 7, tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module", params=["duckdb", pytest.param("postgresql", marks=pytest.mark.postgres)])
def pipeline(
    request: pytest.FixtureRequest, demo_files: DemoFiles, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Warehouse, Path]]:
    """Run the whole month once per engine; yields the warehouse and the config file used."""
    home = tmp_path_factory.mktemp("home")
    if request.param == "duckdb":
        url = f"duckdb:///{home / 'warehouse.duckdb'}"
    else:
        url = request.getfixturevalue("postgres").create_database("cogs_e2e")
    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    with serve_api(demo_files) as config_path:
        raw = yaml.safe_load(config_path.read_text())
        raw |= {"warehouse": url, "reports": {"output_dir": str(home / "reports")}}
        path = home / "cogs.yaml"
        path.write_text(yaml.safe_dump(raw))
        materialize_month(parse_config(path.read_text()), MONTH)
        yield Warehouse(url=url), path


def one(wh: Warehouse, sql: str) -> object:
    return wh.read(sql).row(0)[0]


def test_allocations_add_up_to_the_bill_exactly(pipeline: tuple[Warehouse, Path]) -> None:
    wh, _ = pipeline
    effective = one(wh, 'SELECT SUM("EffectiveCost") FROM focus_costs')
    billed = one(wh, 'SELECT SUM("BilledCost") FROM focus_costs')
    assert one(wh, "SELECT SUM(effective_cost) FROM cost_allocations") == effective
    assert one(wh, "SELECT SUM(billed_cost) FROM cost_allocations") == billed
    assert one(wh, "SELECT COUNT(*) FROM v_allocation_gaps") == 0
    assert one(wh, "SELECT SUM(cogs) FROM feature_costs_daily") == effective
    assert Decimal(str(effective)) > Decimal("50000")  # a real company's month, not a toy


def test_every_feature_has_a_cost_per_useful_output(pipeline: tuple[Warehouse, Path]) -> None:
    wh, _ = pipeline
    monthly = wh.read("SELECT feature, cogs, useful_outputs, cost_per_useful_output FROM v_feature_cogs_monthly")
    by_feature = {r["feature"]: r for r in monthly.iter_rows(named=True)}
    for feature in FEATURES:
        row = by_feature[feature.name]
        assert row["useful_outputs"] > 0 and row["cost_per_useful_output"] > 0, feature.name
    assert {"idle", "unallocated"} <= set(by_feature)


def test_every_source_reconciles_to_its_provider_total(pipeline: tuple[Warehouse, Path]) -> None:
    wh, _ = pipeline
    recon = wh.read("SELECT source, difference FROM v_reconciliation ORDER BY source")
    assert recon["source"].to_list() == ["anthropic", "aws_cur", "gpu_cloud", "openai", "reserved_gpus"]
    assert recon["difference"].to_list() == [0, 0, 0, 0, 0]


def test_the_planted_retry_storm_is_found_with_its_driver(pipeline: tuple[Warehouse, Path]) -> None:
    wh, _ = pipeline
    found = wh.read("SELECT dimension_value, metric, start_date, drivers FROM cost_anomalies ORDER BY metric")
    storm_day = f"{MONTH}-{STORM.day:02d}"
    hits = found.filter(
        (pl.col("dimension_value") == STORM.feature) & (pl.col("start_date").cast(pl.String) == storm_day)
    )
    assert set(hits["metric"]) == {"spend", "unit_cost"}
    drivers = json.loads(hits.filter(pl.col("metric") == "spend")["drivers"][0])
    assert drivers[0]["child"].startswith("OpenAI")
    assert found.height == hits.height  # no false alert on the normal days


def test_rerunning_the_month_is_idempotent(pipeline: tuple[Warehouse, Path]) -> None:
    wh, path = pipeline
    query = (
        "SELECT (SELECT COUNT(*) FROM focus_costs) AS charges, (SELECT COUNT(*) FROM cost_allocations) AS parts, "
        "(SELECT SUM(effective_cost) FROM cost_allocations) AS total, (SELECT COUNT(*) FROM inference_usage) AS usage"
    )
    before = wh.read(query).row(0)
    materialize_month(parse_config(path.read_text()), MONTH)  # the replay API is still being served
    assert wh.read(query).row(0) == before


def test_a_missing_export_fails_naming_the_source_and_keeps_the_warehouse(
    pipeline: tuple[Warehouse, Path], tmp_path: Path
) -> None:
    wh, path = pipeline
    before = one(wh, 'SELECT SUM("BilledCost") FROM focus_costs')
    raw = yaml.safe_load(path.read_text())
    raw["sources"] = [
        s | {"path": str(tmp_path / "nowhere")} if s["name"] == "gpu_cloud" else s for s in raw["sources"]
    ]
    with pytest.raises(RunFailed, match=r"ingest gpu_cloud failed for 2026-10: .*source 'gpu_cloud'.*nowhere"):
        materialize_month(parse_config(yaml.safe_dump(raw)), MONTH)
    assert one(wh, 'SELECT SUM("BilledCost") FROM focus_costs') == before


def test_cli_query_prints_csv_and_json(pipeline: tuple[Warehouse, Path]) -> None:
    _wh, path = pipeline
    runner = CliRunner()
    sql = "SELECT feature FROM v_feature_cogs_monthly ORDER BY feature"
    csv = runner.invoke(app, ["query", sql, "--config", str(path), "--format", "csv"])
    assert csv.exit_code == 0, csv.output
    assert csv.output.splitlines() == [
        "feature",
        "code_assist",
        "doc_summaries",
        "idle",
        "search_rewrite",
        "support_chat",
        "unallocated",
    ]
    bad = runner.invoke(app, ["query", "SELECT nope FROM focus_costs", "--config", str(path)])
    assert bad.exit_code == 1 and "query failed" in bad.output


def test_report_is_written_with_charts(pipeline: tuple[Warehouse, Path]) -> None:
    _wh, path = pipeline
    out = Path(yaml.safe_load(path.read_text())["reports"]["output_dir"]) / f"cogs-{MONTH}.html"
    html = out.read_text()
    assert html.count("<svg") == 4  # spend trend, COGS by feature, unit cost, waterfall
    assert "support_chat" in html and "Reconciliation to provider exports" in html


def test_cli_check_reads_every_source_and_reports_failures(pipeline: tuple[Warehouse, Path], tmp_path: Path) -> None:
    _wh, path = pipeline
    runner = CliRunner()
    ok = runner.invoke(app, ["check", "--config", str(path), "--month", MONTH], env={"COLUMNS": "200"})
    assert ok.exit_code == 0, ok.output
    assert [line.split("│")[3].strip() for line in ok.output.splitlines() if line.startswith("│")] == ["ok"] * 7
    raw = yaml.safe_load(path.read_text())
    raw["sources"][0]["path"] = str(tmp_path / "missing-export")
    broken = tmp_path / "cogs.yaml"
    broken.write_text(yaml.safe_dump(raw))
    bad = runner.invoke(app, ["check", "--config", str(broken), "--month", MONTH], env={"COLUMNS": "200"})
    assert bad.exit_code == 1
    assert "error" in bad.output and "missing-export" in bad.output
