"""CoreWeave FOCUS Billing Export (usage quantities only) → FOCUS 1.2 rows priced with a rate card.

Follows CoreWeave's "Export usage with the FOCUS API" (docs.coreweave.com/billing/focus-export-api, public
preview, release note of 2026-09-11): hourly usage in FOCUS 1.2 as JSON or CSV, the same billable usage as
Billing insights, aggregated (no per-resource or per-node rows, no project attribution, no tags), and
**no cost or dollar amounts** ("cost fields such as billed or effective cost are planned for a later release
on the same schema"); BillingAccountName, ChargeClass, ChargeDescription, RegionName and ResourceType are
blank. The API needs an organization that has the export enabled (403 otherwise); its URL is not in the
notes this module was written from, so the connector reads the files the API returned, saved under
``path``: ``.csv``/``.csv.gz``/``.parquet`` (read with ``connectors.focus_file.raw_batches``) and ``.json``
(an array of row objects, or an object holding one such array) or ``.jsonl`` (one row object per line).

Pricing: each row's price comes from the config ``rate_card``, looked up by SkuPriceId first, then SkuId;
the quantity is PricingQuantity, else ConsumedQuantity (PricingQuantity/PricingUnit are then filled from
it, counted as a repair). ListUnitPrice = ContractedUnitPrice = the rate; BilledCost = EffectiveCost =
ListCost = ContractedCost = rate × quantity rounded half-even to 12 places (the rate card is the contract:
there is no separate list price). A row whose SKU has no rate, or without a quantity, is quarantined with
the reason, so a missing price fails the load loudly rather than costing nothing. Cost values the export
may carry in a later release are not used (counted in ``stats``); use a ``focus_file`` source then.

``source_total`` = Σ rate × quantity recomputed from the raw text of the rows in the month (CoreWeave
reports no amount to reconcile with). Missing ProviderName/PublisherName/InvoiceIssuerName are filled with
"CoreWeave", a missing ChargeCategory/ChargeFrequency with Usage/Usage-Based, BillingCurrency with the
config's currency, a blank RegionName with the RegionId and a blank ChargeDescription with the SKU and
its meter (FOCUS 1.2 RegionName-C-005-C, ChargeDescription-C-003-O); each fill is counted in ``repairs``.
"""

from __future__ import annotations

import glob
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import polars as pl

from connectors.base import QUARANTINE_SCHEMA, BillingPeriod, LoadResult, SourceError
from connectors.focus_file import LINE, parse_datetime, raw_batches
from models.config import CoreWeaveSource
from models.focus import DECIMAL_COLUMNS, FOCUS_COLUMN_NAMES, FOCUS_COSTS_SCHEMA, MONEY, MONEY_SCALE

PROVIDER = "CoreWeave"
SUFFIXES = (".csv", ".csv.gz", ".parquet", ".json", ".jsonl")
QUANTUM = Decimal(1).scaleb(-MONEY_SCALE)
NEEDED = ("BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd")
DATETIMES = ("BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd")
COSTS = ("BilledCost", "EffectiveCost", "ListCost", "ContractedCost")
NULL_LITERALS = ("", "NULL", "null")
DEFAULTS = {
    "ProviderName": PROVIDER,
    "PublisherName": PROVIDER,
    "InvoiceIssuerName": PROVIDER,
    "ChargeCategory": "Usage",
    "ChargeFrequency": "Usage-Based",
}
_CANONICAL = {name.lower(): name for name in FOCUS_COLUMN_NAMES}
OUTPUT_SCHEMA = {c: FOCUS_COSTS_SCHEMA[c] for c in (*FOCUS_COLUMN_NAMES, "x_source_file", "x_source_line")}


@dataclass
class _Report:
    quarantine: list[tuple[str, str, str]] = field(default_factory=list)
    repairs: Counter[str] = field(default_factory=Counter)
    stats: Counter[str] = field(default_factory=Counter)
    total: Decimal = Decimal(0)


def load(source: CoreWeaveSource, period: BillingPeriod) -> LoadResult:
    """Every usage row of ``period`` in the export files, priced with the rate card."""
    files = find_files(source)
    report = _Report()
    frames = [frame for path in files for frame in _load_file(source, path, period, report) if frame.height]
    frame = pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame(schema=OUTPUT_SCHEMA)
    report.stats["files"] = len(files)
    return LoadResult(
        frame=frame,
        quarantine=pl.DataFrame(report.quarantine, schema=QUARANTINE_SCHEMA, orient="row"),
        files=[str(p) for p in files],
        source_total=report.total,
        repairs={k: v for k, v in sorted(report.repairs.items()) if v},
        stats={k: v for k, v in sorted(report.stats.items()) if v},
    )


def find_files(source: CoreWeaveSource) -> list[Path]:
    root = Path(source.path).expanduser()
    if root.is_dir():
        candidates: Iterable[Path] = root.rglob("*")
    elif root.is_file():
        candidates = [root]
    else:
        candidates = (Path(p) for p in glob.glob(str(root), recursive=True))
    files = sorted(p for p in candidates if p.is_file() and p.name.lower().endswith(SUFFIXES))
    if not files:
        raise SourceError(source.name, source.path, f"no {', '.join(SUFFIXES)} files found")
    return files


# --- reading ---------------------------------------------------------------------------------------


def _raw(source: str, path: Path) -> Iterable[pl.DataFrame]:
    """The file as string frames with a ``LINE`` column (CSV line, Parquet row, JSON record or line)."""
    name = path.name.lower()
    if not name.endswith((".json", ".jsonl")):
        yield from raw_batches(source, path)
        return
    try:
        text = path.read_text(encoding="utf-8-sig")
        if name.endswith(".jsonl"):
            numbered = [
                (n, json.loads(t, parse_float=Decimal)) for n, t in enumerate(text.splitlines(), 1) if t.strip()
            ]
        else:
            numbered = list(enumerate(_json_rows(json.loads(text, parse_float=Decimal)), start=1))
    except (OSError, ValueError) as exc:
        raise SourceError(source, str(path), f"cannot be read as JSON: {exc}") from None
    bad = [n for n, row in numbered if not isinstance(row, dict)]
    if bad:
        raise SourceError(source, str(path), f"record {bad[0]} is not a JSON object (a FOCUS row)")
    columns = sorted({k for _, row in numbered for k in row})
    data = {c: [_as_text(row.get(c)) for _, row in numbered] for c in columns}
    yield pl.DataFrame(
        {**data, LINE: [n for n, _ in numbered]}, schema={**dict.fromkeys(columns, pl.String), LINE: pl.Int64}
    )


def _json_rows(document: Any) -> list[Any]:
    """The rows of a JSON export: a top-level array, or the one array of objects inside an object."""
    if isinstance(document, list):
        return document
    if isinstance(document, dict):
        arrays = [v for v in document.values() if isinstance(v, list) and all(isinstance(i, dict) for i in v)]
        if len(arrays) == 1:
            return arrays[0]
    raise ValueError("expected an array of row objects, or an object holding exactly one such array")


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


# --- one file ----------------------------------------------------------------------------------------


def _load_file(source: CoreWeaveSource, path: Path, period: BillingPeriod, report: _Report) -> Iterable[pl.DataFrame]:
    label = "record" if path.name.lower().endswith(".json") else "row" if path.suffix == ".parquet" else "line"
    for raw in _raw(source.name, path):
        frame = _columns(source.name, path, raw, report)
        frame = _nulls(frame)
        frame = _in_period(frame, period, report)
        if frame.height == 0:
            continue
        report.total += raw_total(source, frame)
        typed, reasons = _typed(frame)
        priced, reasons = _priced(source, typed, reasons, report)
        bad = reasons.is_not_null()
        for line, reason in zip(priced[LINE].filter(bad), reasons.filter(bad), strict=True):
            report.quarantine.append((str(path), f"{label} {line}", reason))
        yield (
            _filled(source, priced.filter(~bad), report)
            .with_columns(
                pl.lit(str(path)).alias("x_source_file"),
                (pl.lit(f"{label} ") + pl.col(LINE).cast(pl.String)).alias("x_source_line"),
            )
            .drop(LINE)
        )


def _columns(source: str, path: Path, frame: pl.DataFrame, report: _Report) -> pl.DataFrame:
    """FOCUS names matched case-insensitively; anything else dropped and counted."""
    renames, drop = {}, []
    for name in frame.columns:
        if name == LINE:
            continue
        canonical = _CANONICAL.get(name.strip().lower())
        if canonical is None:
            drop.append(name)
            report.stats[f"unknown_column:{name}"] += 1
        elif canonical != name:
            renames[name] = canonical
    frame = frame.drop(drop).rename(renames)
    missing = [c for c in NEEDED if c not in frame.columns]
    if not {"SkuId", "SkuPriceId"} & set(frame.columns):
        missing.append("SkuId or SkuPriceId")
    if not {"PricingQuantity", "ConsumedQuantity"} & set(frame.columns):
        missing.append("PricingQuantity or ConsumedQuantity")
    if missing:
        raise SourceError(source, str(path), f"missing FOCUS column(s) {', '.join(missing)}", "is this a FOCUS export?")
    return frame


def _nulls(frame: pl.DataFrame) -> pl.DataFrame:
    text = [c for c, t in frame.schema.items() if c != LINE and t == pl.String]
    return frame.with_columns(
        pl.when(pl.col(c).str.strip_chars().is_in(NULL_LITERALS))
        .then(None)
        .otherwise(pl.col(c).str.strip_chars())
        .alias(c)
        for c in text
    )


def _in_period(frame: pl.DataFrame, period: BillingPeriod, report: _Report) -> pl.DataFrame:
    start = parse_datetime(pl.col("BillingPeriodStart"))
    inside = frame.filter((start >= period.start) & (start < period.end))
    report.stats["rows_outside_period"] += frame.height - inside.height
    return inside


def _typed(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.Series]:
    """Quantities, prices and dates typed; a reason per row whose value doesn't parse."""
    exprs, problems = [], []
    for name in (c for c in DECIMAL_COLUMNS if c in frame.columns and c not in COSTS):
        parsed = pl.col(name).cast(MONEY, strict=False)
        exprs.append(parsed.alias(name))
        problems.append(pl.when(pl.col(name).is_not_null() & parsed.is_null()).then(
            pl.format(f"{name}: '{{}}' is not a decimal number", pl.col(name))))  # fmt: skip
    for name in (c for c in DATETIMES if c in frame.columns):
        parsed = parse_datetime(pl.col(name))
        exprs.append(parsed.alias(name))
        problems.append(pl.when(parsed.is_null()).then(
            pl.format(f"{name}: '{{}}' is not a date/time", pl.col(name).fill_null("NULL"))))  # fmt: skip
    reasons = frame.select(pl.concat_str(problems, separator="; ", ignore_nulls=True).alias("r")).to_series()
    return frame.with_columns(exprs), reasons.replace("", None)


def _priced(
    source: CoreWeaveSource, frame: pl.DataFrame, reasons: pl.Series, report: _Report
) -> tuple[pl.DataFrame, pl.Series]:
    """Rate, quantity and costs per row (exact, in Python decimals); reasons for rows that can't be priced."""
    price_ids = _column(frame, "SkuPriceId")
    skus = _column(frame, "SkuId")
    pricing = _column(frame, "PricingQuantity")
    consumed = _column(frame, "ConsumedQuantity")
    rates, quantities, costs, why = [], [], [], []
    for price_id, sku, p_qty, c_qty, reason in zip(price_ids, skus, pricing, consumed, reasons, strict=True):
        rate = source.rate_card.get(price_id) if price_id is not None else None
        rate = rate if rate is not None else (source.rate_card.get(sku) if sku is not None else None)
        quantity = p_qty if p_qty is not None else c_qty
        problem = reason
        if reason is None and rate is None:
            problem = f"no rate_card price for SkuPriceId {price_id!r} or SkuId {sku!r}"
        elif reason is None and quantity is None:
            problem = "PricingQuantity and ConsumedQuantity are both NULL: nothing to price"
        ok = problem is None
        cost = (rate * quantity).quantize(QUANTUM, ROUND_HALF_EVEN) if ok else None
        rates.append(rate if ok else None)
        quantities.append(quantity if ok else None)
        costs.append(cost)
        why.append(problem)
    report.repairs["pricing_quantity_from_consumed_quantity"] += sum(
        1 for p, q, r in zip(pricing, quantities, why, strict=True) if r is None and p is None and q is not None
    )
    provider_costs = [c for c in COSTS if c in frame.columns]
    if provider_costs:
        report.stats["provider_cost_values_ignored"] += int(
            frame.select(pl.sum_horizontal(pl.col(c).is_not_null().sum() for c in provider_costs)).item()
        )
    priced = frame.drop(provider_costs).with_columns(
        pl.Series("__rate", rates, dtype=MONEY),
        pl.Series("__quantity", quantities, dtype=MONEY),
        pl.Series("__cost", costs, dtype=MONEY),
    )
    return priced, pl.Series("r", why, dtype=pl.String)


def _filled(source: CoreWeaveSource, frame: pl.DataFrame, report: _Report) -> pl.DataFrame:
    """Costs and prices set, empty mandatory columns filled (each fill counted)."""
    unit = pl.col("PricingUnit") if "PricingUnit" in frame.columns else pl.lit(None, pl.String)
    consumed_unit = pl.col("ConsumedUnit") if "ConsumedUnit" in frame.columns else pl.lit(None, pl.String)
    frame = frame.with_columns(
        *[pl.col("__cost").alias(c) for c in COSTS],
        pl.col("__rate").alias("ListUnitPrice"),
        pl.col("__rate").alias("ContractedUnitPrice"),
        pl.col("__quantity").alias("PricingQuantity"),
        pl.coalesce(unit, consumed_unit).alias("PricingUnit"),
    ).drop("__rate", "__quantity", "__cost")
    for name, value in {**DEFAULTS, "BillingCurrency": source.currency, "BillingAccountId": source.name}.items():
        current = pl.col(name) if name in frame.columns else pl.lit(None, pl.String)
        report.repairs[f"filled_missing:{name}"] += int(frame.select(current.is_null().sum()).item())
        frame = frame.with_columns(current.fill_null(value).alias(name))
    frame = _named(frame, report)
    other = int(frame.select((pl.col("BillingCurrency") != source.currency).sum()).item())
    if other:
        raise SourceError(
            source.name,
            "BillingCurrency",
            f"{other} row(s) are billed in another currency than the rate card's {source.currency}",
            "set currency to the export's BillingCurrency (one rate card per currency)",
        )
    return frame


def _named(frame: pl.DataFrame, report: _Report) -> pl.DataFrame:
    """RegionName and ChargeDescription, which the export leaves blank, from the row's own ids (counted).

    FOCUS 1.2 RegionName-C-005-C: RegionName MUST NOT be null when RegionId is not null (CoreWeave names its
    regions by their ids); ChargeDescription-C-003-O: it SHOULD NOT be null (the SKU and its meter say what
    was charged).
    """

    def column(name: str) -> pl.Expr:
        return pl.col(name) if name in frame.columns else pl.lit(None, pl.String)

    filled = {
        "RegionName": pl.when(column("RegionId").is_not_null()).then(column("RegionId")),
        "ChargeDescription": pl.concat_str(
            pl.lit(f"{PROVIDER} "), pl.coalesce(column("SkuId"), column("SkuPriceId")),
            pl.when(column("SkuMeter").is_not_null()).then(pl.lit(" (") + column("SkuMeter") + pl.lit(")")),
            ignore_nulls=True,
        ),
    }  # fmt: skip
    for name, value in filled.items():
        missing = column(name).is_null() & value.is_not_null()
        report.repairs[f"filled_missing:{name}"] += int(frame.select(missing.sum()).item())
        frame = frame.with_columns(pl.coalesce(column(name), value).alias(name))
    return frame


def raw_total(source: CoreWeaveSource, frame: pl.DataFrame) -> Decimal:
    """Σ rate × quantity from the rows' text (not the typed frame): the total the mapping must reach."""
    total = Decimal(0)
    rows = zip(
        *(_column(frame, c) for c in ("SkuPriceId", "SkuId", "PricingQuantity", "ConsumedQuantity")), strict=True
    )
    for price_id, sku, pricing, consumed in rows:
        rate = source.rate_card.get(price_id) if price_id is not None else None
        rate = rate if rate is not None else source.rate_card.get(sku) if sku is not None else None
        quantity = _decimal(pricing) if pricing is not None else _decimal(consumed)
        if rate is not None and quantity is not None:
            total += (rate * quantity).quantize(QUANTUM, ROUND_HALF_EVEN)
    return total


def _column(frame: pl.DataFrame, name: str) -> list[Any]:
    return frame[name].to_list() if name in frame.columns else [None] * frame.height


def _decimal(text: str | None) -> Decimal | None:
    if text is None:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None
