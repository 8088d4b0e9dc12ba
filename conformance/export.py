"""Build ``focus_costs`` for every conformance case and write it as the files focus-validator reads.

Each case is a function from a scratch folder to the ``focus_costs`` rows it produces, built the
way production builds them: the demo month is generated and every source of the demo's cogs.yaml
(AWS CUR 2.0 files, the GPU cloud's FOCUS export, the model APIs' pages served over local HTTP)
is ingested through the pipeline's own ``pipelines.ingest.ingest`` into a scratch DuckDB
warehouse; each connector's test fixtures are loaded through that connector. To cover a new
connector, add one entry to ``CASES`` with the features its provider supports (the validator's
applicability criteria), e.g.
``"gcp_billing": Case(fixture_build("gcp_billing_export", FIXTURES / "gcp", "2025-06"), GCP, "GCP rows")``.

Files are Parquet, the typed format focus-validator 2.2.1 reads without guessing (its CSV reader
infers types from the values, so numeric-looking ids such as AWS account or invoice ids become
integers and fail their String rules): strings stay VARCHAR, money stays DECIMAL, date/times are
UTC timestamps and JSON columns are JSON text. A CSV
twin (ISO 8601 ``YYYY-MM-DDTHH:MM:SSZ`` date/times, plain decimal numbers) is written beside it for
people to read.

Usage: ``python -m conformance.export OUT_DIR [CASE ...]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import polars as pl

from conformance.gpu_answers import runpod_answers, vastai_pages
from connectors import runpod, vastai
from connectors.base import LoadResult
from connectors.http import JsonResponse
from connectors.openai_costs import map_pages
from models.config import CogsConfig, RunPodSource, VastAiSource
from models.focus import conform
from models.period import BillingPeriod
from pipelines.demo.run import generate, serve_api
from pipelines.ingest import ingest
from pipelines.settings import load_config
from pipelines.warehouse import Warehouse

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
DEMO_MONTH = "2025-06"
DEMO_SEED = 7

Build = Callable[[Path], pl.DataFrame]
"""A scratch folder → the focus_costs rows of a case."""


# --- building focus_costs -------------------------------------------------------------------------


def through_pipeline(work: Path, sources: list[dict[str, Any]], months: Iterable[str], **settings: Any) -> pl.DataFrame:
    """Ingest ``sources`` for ``months`` with the pipeline's own ingest into a scratch DuckDB; read focus_costs."""
    warehouse = _scratch_warehouse(work)
    config = CogsConfig.model_validate({"warehouse": warehouse.url, "sources": sources, **settings})
    for month in months:
        for source in config.sources:
            ingest(warehouse, config, source.name, month)
    return warehouse.read("SELECT * FROM focus_costs ORDER BY x_charge_id")


def through_warehouse(work: Path, name: str, source_type: str, month: str, result: LoadResult) -> pl.DataFrame:
    """A connector's mapped rows (for fixtures that are not a configurable source) stored and read back."""
    frame = result.frame.with_columns(
        x_source=pl.lit(name),
        x_source_type=pl.lit(source_type),
        x_billing_period=pl.lit(month),
        x_batch_id=pl.lit(f"{name}-{month}-conformance"),
        x_charge_id=pl.format("{}:{}:{}", pl.lit(name), pl.lit(month), pl.int_range(pl.len()).cast(pl.String)),
    )
    warehouse = _scratch_warehouse(work)
    with warehouse.transaction() as conn:
        warehouse.insert("focus_costs", conform(frame), conn)
    return warehouse.read("SELECT * FROM focus_costs ORDER BY x_charge_id")


def _scratch_warehouse(work: Path) -> Warehouse:
    work.mkdir(parents=True, exist_ok=True)
    warehouse = Warehouse(url=f"duckdb:///{work / 'warehouse.duckdb'}")
    warehouse.ensure_schema()
    return warehouse


def fixture_build(source_type: str, path: Path, *months: str, **fields: Any) -> Build:
    """A case that loads a fixture file or folder through the connector of ``source_type``."""
    source = {"name": source_type, "type": source_type, "path": str(path), **fields}
    return lambda work: through_pipeline(work, [source], months)


# --- the cases ------------------------------------------------------------------------------------


def demo_month(work: Path) -> pl.DataFrame:
    """The demo company's month, every source of its cogs.yaml (API pages served over local HTTP)."""
    files = generate(DEMO_MONTH, DEMO_SEED, work / "exports")
    with serve_api(files) as config_path:
        sources = [s.model_dump() for s in load_config(config_path).sources]
        return through_pipeline(work, sources, [DEMO_MONTH])


def openai_edge_cases(work: Path) -> pl.DataFrame:
    """Hand-written Costs API results with the shapes tests/test_openai_costs.py covers, mapped by the connector."""
    period = BillingPeriod(DEMO_MONTH)
    result = map_pages("openai", period, [_openai_page(period)])
    return through_warehouse(work, "openai", "openai_costs", period.key, result)


def _openai_page(period: BillingPeriod) -> JsonResponse:
    def cost(value: object, line_item: str | None, **extra: object) -> dict[str, Any]:
        return {
            "object": "organization.costs.result",
            "amount": {"value": value, "currency": "usd"},
            "line_item": line_item,
            "project_id": extra.pop("project_id", "proj_a"),
            **extra,
        }

    def bucket(day: int, *results: dict[str, Any]) -> dict[str, Any]:
        start = int(datetime(period.start.year, period.start.month, day, tzinfo=UTC).timestamp())
        return {"object": "bucket", "start_time": start, "end_time": start + 86400, "results": list(results)}

    body = {
        "object": "page",
        "has_more": False,
        "next_page": None,
        "data": [
            bucket(
                1,
                cost(Decimal("0.06"), "gpt-4o-mini-2024-07-18, input", quantity=400000, quantity_unit="tokens"),
                cost("12.50", "web search tool calls", project_name="Support bot"),
                cost(Decimal("0"), "priority | gpt-5, output, long context"),
                cost(Decimal("0.123456789012345678"), None, project_id=None),
                cost(Decimal("3.2"), "gpt-audio-mini-2025-12-15 audio, input", quantity=80000, quantity_unit="tokens"),
            ),
            bucket(2),  # a day without spend keeps its empty bucket
            bucket(30, cost(Decimal("1"), "ft:gpt-4o-mini-2024-07-18:acme::abc123, output")),
        ],
    }
    url = f"https://api.openai.com/v1/organization/costs?start_time={int(period.start.timestamp())}"
    return JsonResponse(url, 200, httpx.Headers({"OpenAI-Organization": "org-fromheader"}), body)


def runpod_edge_cases(work: Path) -> pl.DataFrame:
    """Hand-written RunPod billing answers (GPU and CPU pods, serverless, network volumes), mapped by the connector."""
    period = BillingPeriod(DEMO_MONTH)
    source = RunPodSource(name="runpod", type="runpod", billing_account_id="user_2PyTJ")
    result = runpod.map_answers(source, period, runpod_answers(period))
    return through_warehouse(work, "runpod", "runpod", period.key, result)


def vastai_edge_cases(work: Path) -> pl.DataFrame:
    """Hand-written Vast.ai charges pages (instances with items, a volume, a serverless worker), mapped."""
    period = BillingPeriod(DEMO_MONTH)
    source = VastAiSource(name="vastai", type="vastai", billing_account_id="vast-user-311")
    result = vastai.map_pages(source, period, vastai_pages(period))
    return through_warehouse(work, "vastai", "vastai", period.key, result)


def azure_months(work: Path) -> pl.DataFrame:
    """Azure EA actual + amortized exports (June 2025) and an MCA export in EUR, as two sources."""
    azure = FIXTURES / "azure"
    sources = [
        {"name": "azure_ea", "type": "azure_cost_details", "path": str(azure / "ea_actual"),
         "amortized_path": str(azure / "ea_amortized")},
        {"name": "azure_mca", "type": "azure_cost_details", "path": str(azure / "mca_actual.csv")},
    ]  # fmt: skip
    return through_pipeline(work, sources, [DEMO_MONTH])


def coreweave_month(work: Path) -> pl.DataFrame:
    """CoreWeave's June CSV export priced with the rate card tests/test_coreweave.py uses.

    The fixture's CPU row has no rate on purpose: it is quarantined, so the share limit is raised.
    """
    rates = {
        "gd-8xh100ib-i128": Decimal("4.76"),
        "storage-distributed-file:on-demand": Decimal("0.00009589"),
        "public-ip": Decimal("0.004"),
    }
    path = FIXTURES / "gpu_clouds" / "coreweave" / "focus_usage_2025-06.csv"
    source = {"name": "coreweave", "type": "coreweave_focus", "path": str(path), "rate_card": rates}
    return through_pipeline(work, [source], [DEMO_MONTH], ingest={"max_quarantined_share": 0.5})


def lambda_invoices(work: Path) -> pl.DataFrame:
    """Lambda's June invoice CSVs (no uptime samples, so no API call: the invoice replaces the estimate).

    The fixture's unknown line type is quarantined on purpose, so the share limit is raised.
    """
    uptime = work / "uptime"
    uptime.mkdir(parents=True, exist_ok=True)
    invoices = FIXTURES / "gpu_clouds" / "lambda_invoices"
    source = {"name": "lambda", "type": "lambda_cloud", "uptime_log_dir": str(uptime), "invoice_path": str(invoices)}
    return through_pipeline(work, [source], [DEMO_MONTH], ingest={"max_quarantined_share": 0.5})


# Applicability criteria (focus-validator ``--show-applicability-criteria``, FOCUS 1.2): what the providers
# of a case support. A dataset that mixes providers claims the union, since focus_costs is one dataset.
ALL_CRITERIA: tuple[str, ...] = (
    "ACCOUNT_NAMING_SUPPORTED",
    "AVAILABILITY_ZONE_SUPPORTED",
    "BILLING_BASED_ON_PROVISIONED_RESOURCES_SUPPORTED",
    "CAPACITY_RESERVATION_SUPPORTED",
    "COMMITMENT_DISCOUNT_SUPPORTED",
    "MULTIPLE_BILLING_ACCOUNT_TYPES_SUPPORTED",
    "MULTIPLE_PRICING_CATEGORIES_SUPPORTED",
    "MULTIPLE_SUB_ACCOUNT_TYPES_SUPPORTED",
    "NEGOTIATED_PRICING_SUPPORTED",
    "PRICING_BILLING_CURRENCY_DIFFERENCES_SUPPORTED",
    "PUBLIC_PRICE_LIST_SUPPORTED",
    "REGION_SUPPORTED",
    "RESOURCE_TYPE_ASSIGNMENT_SUPPORTED",
    "SUB_ACCOUNT_SUPPORTED",
    "TAGGING_SUPPORTED",
    "UNIT_PRICING_SUPPORTED",
    "USAGE_MEASUREMENT_SUPPORTED",
    "VIRTUAL_CURRENCY_SUPPORTED",
)


def criteria_except(*unsupported: str) -> tuple[str, ...]:
    unknown = set(unsupported) - set(ALL_CRITERIA)
    if unknown:
        raise ValueError(f"unknown applicability criteria: {sorted(unknown)}")
    return tuple(c for c in ALL_CRITERIA if c not in unsupported)


# No provider here prices in a virtual currency (credits, tokens as money).
NATIONAL_CURRENCY_ONLY = criteria_except("VIRTUAL_CURRENCY_SUPPORTED")
# Features whose columns FOCUS 1.0 does not define (BillingAccountType, SubAccountType and PricingCurrency*
# are 1.2; CapacityReservation* 1.1): a 1.0 export carries no evidence of them, so a 1.0 case can't claim them.
FOCUS_1_0_EVIDENCE = criteria_except(
    "VIRTUAL_CURRENCY_SUPPORTED",
    "MULTIPLE_BILLING_ACCOUNT_TYPES_SUPPORTED",
    "MULTIPLE_SUB_ACCOUNT_TYPES_SUPPORTED",
    "CAPACITY_RESERVATION_SUPPORTED",
    "PRICING_BILLING_CURRENCY_DIFFERENCES_SUPPORTED",
)


# What the OpenAI Costs API shows: named organizations, projects, public per-token prices, metered tokens.
OPENAI_API = (
    "ACCOUNT_NAMING_SUPPORTED",
    "PUBLIC_PRICE_LIST_SUPPORTED",
    "SUB_ACCOUNT_SUPPORTED",
    "UNIT_PRICING_SUPPORTED",
    "USAGE_MEASUREMENT_SUPPORTED",
)


# A GPU cloud billed per instance-hour at list price: no commitments, zones, tags or negotiated rates in the data.
GPU_CLOUD = (
    "BILLING_BASED_ON_PROVISIONED_RESOURCES_SUPPORTED",
    "PUBLIC_PRICE_LIST_SUPPORTED",
    "REGION_SUPPORTED",
    "UNIT_PRICING_SUPPORTED",
    "USAGE_MEASUREMENT_SUPPORTED",
)


# RunPod's billing API: pods and endpoints by id and type, billed milliseconds and GB, per-GPU-type hourly list
# prices (runpod.io/pricing). No region: records name no data center, so the data has no evidence of one.
RUNPOD_API = (
    "BILLING_BASED_ON_PROVISIONED_RESOURCES_SUPPORTED",
    "PUBLIC_PRICE_LIST_SUPPORTED",
    "RESOURCE_TYPE_ASSIGNMENT_SUPPORTED",
    "UNIT_PRICING_SUPPORTED",
    "USAGE_MEASUREMENT_SUPPORTED",
)
# Vast.ai's charges API: the same, plus tags (the instance's label and the provider's metadata keys).
# No region: a charge names no host location.
VASTAI_API = (*RUNPOD_API, "TAGGING_SUPPORTED")


@dataclass(frozen=True)
class Case:
    """A conformance case: how to build its focus_costs rows, and the features its providers support."""

    build: Build
    criteria: tuple[str, ...]
    about: str
    # False: exported and validated on request (``python -m conformance.run ... <case>``) but not by
    # ``make conformance`` yet: the connector still has undocumented failures (a comment on its entry says which).
    gating: bool = True


CASES: dict[str, Case] = {
    # Every source of the demo's cogs.yaml. AWS (AZs, capacity reservations, Savings Plans, EDP rates, tags)
    # and Nebius (multi-currency pricing, several billing account types) bring every feature but virtual currency.
    "demo": Case(demo_month, NATIONAL_CURRENCY_ONLY, "demo month: every source of the demo's cogs.yaml"),
    "focus_official_sample": Case(
        fixture_build("focus_file", FIXTURES / "focus" / "focus_sample_1000.csv", "2024-09", "2024-10"),
        FOCUS_1_0_EVIDENCE,
        "FinOps Foundation FOCUS 1.0 sample (AWS, Microsoft, Oracle) via focus_file",
    ),
    "openai_edge_cases": Case(
        openai_edge_cases,
        OPENAI_API,
        "OpenAI Costs API results of every documented shape via openai_costs",
    ),
    "aws_cur_legacy": Case(
        fixture_build(
            "aws_cur_legacy", FIXTURES / "aws_cur_legacy" / "sample-anonymous-aws-export-dataset.csv", "2023-11"
        ),
        NATIONAL_CURRENCY_ONLY,
        "focus_converters' anonymized legacy CUR CSV (Usage and Tax lines) via aws_cur_legacy",
    ),
    "gcp_billing": Case(
        fixture_build("gcp_billing_export", FIXTURES / "gcp" / "*-202509.jsonl", "2025-09"),
        NATIONAL_CURRENCY_ONLY,
        "Google Cloud detailed billing export rows (JSONL) via gcp_billing",
    ),
    "azure_cost_details": Case(
        azure_months,
        NATIONAL_CURRENCY_ONLY,
        "Azure EA actual + amortized cost details and an MCA export via azure_cost_details",
    ),
    "coreweave": Case(coreweave_month, GPU_CLOUD, "CoreWeave FOCUS usage export priced with a rate card via coreweave"),
    "lambda_cloud": Case(lambda_invoices, GPU_CLOUD, "Lambda Cloud invoice CSVs via lambda_cloud"),
    "runpod": Case(runpod_edge_cases, RUNPOD_API, "RunPod billing API answers (pods, serverless, volumes)"),
    "vastai": Case(vastai_edge_cases, VASTAI_API, "Vast.ai charges API pages (instances, volumes, serverless)"),
}
GATING = [name for name, case in CASES.items() if case.gating]
"""The cases ``make conformance`` runs (and must pass)."""


# --- writing the files ----------------------------------------------------------------------------


def write(frame: pl.DataFrame, out_dir: Path, name: str) -> Path:
    """``<name>.parquet`` for the validator and ``<name>.csv`` to read; returns the Parquet path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    parquet = out_dir / f"{name}.parquet"
    frame.write_parquet(parquet)
    frame.write_csv(out_dir / f"{name}.csv", datetime_format="%Y-%m-%dT%H:%M:%SZ")
    return parquet


def export(out_dir: Path, names: Iterable[str]) -> dict[str, Path]:
    """Build and write each named case; returns case name → Parquet file."""
    written = {}
    with tempfile.TemporaryDirectory(prefix="cogs-conformance-") as scratch:
        for name in names:
            frame = CASES[name].build(Path(scratch) / name)
            written[name] = write(frame, out_dir, name)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("cases", nargs="*", metavar="CASE", help=f"default: all of {', '.join(CASES)}")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.cases) - set(CASES))
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(CASES)}")
    for name, path in export(args.out_dir, args.cases or list(CASES)).items():
        print(f"{name}: {pl.scan_parquet(path).select(pl.len()).collect().item()} rows → {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
