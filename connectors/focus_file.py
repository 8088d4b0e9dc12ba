"""FOCUS 1.0–1.3 exports as CSV (``.csv``, ``.csv.gz``) or Parquet files → FOCUS 1.2 rows.

Follows the FOCUS specification (FinOps Foundation, FOCUS_Spec tags v1.0–v1.2 ``CHANGELOG.md`` "Columns
History"; v1.3 ``provider.md``/``serviceprovidername.md``; the validator's 1.2 requirements model) and what
real exports contain: the FinOps Foundation's FOCUS 1.0 sample (AWS, Microsoft, Oracle rows), Nebius' hourly
FOCUS 1.2 CSV (docs.nebius.com "Exporting usage data"), AWS Data Exports "FOCUS 1.2 with AWS columns" (Parquet,
``double`` costs, ``map`` tags, ``x_Discounts``/``x_Operation``/``x_ServiceCode``; its "conformance gaps" page
lists NULL InvoiceIssuerName/PublisherName), Microsoft's "FOCUS cost and usage details file schema"
(learn.microsoft.com, versions 1.0, 1.0r2, 1.2-preview) and the FinOps toolkit's FOCUS ingestion transform
(microsoft/finops-toolkit ``IngestionSetup_v1_2.kql``), whose known-bug fixes are repeated here.

Upgrade to FOCUS 1.2, each change counted in ``LoadResult.repairs``:

- column names: pre-1.0 ``AmortizedCost``/``ChargeType``/``UsageQuantity``/``UsageUnit``/``Region``/
  ``Provider``/``Publisher``/``InvoiceIssuer``; 1.3's ``ServiceProviderName``→``ProviderName``; Microsoft's
  FOCUS 1.0 ``x_InvoiceId``/``x_PricingCurrency``/``x_SkuMeterName``, which 1.2 adopted as ``InvoiceId``/
  ``PricingCurrency``/``SkuMeter``; names matched case-insensitively;
- NULL written as ``NULL``/``null`` or as a quoted empty string (an unquoted empty CSV field is CSV's own
  null and not counted);
- date/times not in ``YYYY-MM-DDTHH:mm:ssZ`` form (``2024-09-01 00:00:00``, Microsoft 1.0's ``…T00:00Z``)
  are read as UTC; allowed values in the wrong case (Oracle's ``Usage-based``) get the spec's casing, and
  1.0-preview's PricingCategory ``On-Demand``/``Commitment-Based`` (still written by Microsoft on unused
  commitment rows) become ``Standard``/``Committed``;
- decimals with more places than the warehouse keeps are rounded half-even;
- NULL ContractedCost/ListCost: the unit price × PricingQuantity when both are known, else BilledCost (1.2
  ``ContractedCost-C-008-C``/``ListCost-C-008-C``: a charge unrelated to other charges matches BilledCost);
  NULL PublisherName/InvoiceIssuerName: ProviderName (AWS's documented conformance gaps);
- ConsumedQuantity/ConsumedUnit set to NULL on non-Usage rows and on unused-commitment rows
  (``ConsumedQuantity-C-004-C``); commitment purchases get EffectiveCost 0 (``EffectiveCost-C-005-C``) and
  ChargeFrequency ``Recurring`` instead of ``Usage-Based`` (toolkit: Microsoft 1.0 bugs);
- columns 1.1/1.2 added, when an older file lacks them: PricingCurrency is the BillingCurrency (1.0 prices are
  denominated in it), the PricingCurrency* amounts of a row priced in its billing currency are its billing ones,
  ServiceSubcategory is "Other (<ServiceCategory>)";
- Tags without their outer braces are wrapped (a Microsoft Cost Management bug, FinOps toolkit data
  dictionary).

Schema drift: a file without one of the 1.2 Mandatory, non-nullable columns (all present since 1.0) raises
``SourceError`` naming the file and the columns; columns that are neither FOCUS 1.2 nor known are dropped and
counted in ``stats`` (``unknown_column:<name>``), so are 1.3's HostProviderName and Allocated* columns and the
providers' ``x_`` columns, which the warehouse does not store (``x_column_not_stored:<name>``).

Rows are kept when BillingPeriodStart falls in the period. A row is quarantined with its file, line and reason
when a money, quantity or date/time value doesn't parse, BilledCost/EffectiveCost is NULL, Tags isn't a JSON
object, or a Usage row has a negative ConsumedQuantity while its cost is positive (a Usage row whose quantity
and costs are all negative is a reversal of earlier usage, as Microsoft's rows in the FOCUS sample are: kept,
counted in ``stats``). ``load_batches`` streams one CSV file or one Parquet row group at a time.
"""

from __future__ import annotations

import csv
import glob
import gzip
import io
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from connectors.base import QUARANTINE_SCHEMA, BillingPeriod, LoadResult, SourceError
from models.config import FocusFileSource
from models.focus import (
    DECIMAL_COLUMNS,
    FOCUS_COLUMN_NAMES,
    FOCUS_COSTS_SCHEMA,
    MONEY,
    MONEY_SCALE,
    REQUIRED_COLUMNS,
    TIMESTAMP,
)

SUFFIXES = (".csv", ".csv.gz", ".parquet")
DATETIME_COLUMNS = ("BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd")
LINE = "__line"  # internal: the row's line in its file

# Old or newer names → the FOCUS 1.2 name (FOCUS_Spec CHANGELOG "Columns History"; 1.3 provider.md).
RENAMED_COLUMNS = {
    "AmortizedCost": "EffectiveCost",
    "ChargeType": "ChargeCategory",
    "UsageQuantity": "ConsumedQuantity",
    "UsageUnit": "ConsumedUnit",
    "Region": "RegionId",
    "Provider": "ProviderName",
    "Publisher": "PublisherName",
    "InvoiceIssuer": "InvoiceIssuerName",
    "ServiceProviderName": "ProviderName",
}
# Microsoft's FOCUS 1.0 extension columns that FOCUS 1.2 adopted (learn.microsoft.com FOCUS schema 1.2-preview:
# "Renamed from x_InvoiceId in FOCUS 1.0", likewise x_PricingCurrency and x_SkuMeterName).
ADOPTED_X_COLUMNS = {"x_InvoiceId": "InvoiceId", "x_PricingCurrency": "PricingCurrency", "x_SkuMeterName": "SkuMeter"}
# FOCUS 1.3 columns that 1.2 lacks (FOCUS_Spec 1.3 cost_and_usage columns); not stored, counted.
FOCUS_1_3_COLUMNS = (
    "HostProviderName",
    "AllocatedMethodDetails",
    "AllocatedMethodId",
    "AllocatedResourceId",
    "AllocatedResourceName",
    "AllocatedTags",
    "ContractApplied",
)

# Columns with allowed values, in the spec's casing (FOCUS 1.2 column definitions).
ALLOWED_VALUES: dict[str, tuple[str, ...]] = {
    "ChargeCategory": ("Usage", "Purchase", "Tax", "Credit", "Adjustment"),
    "ChargeClass": ("Correction",),
    "ChargeFrequency": ("One-Time", "Recurring", "Usage-Based"),
    "CommitmentDiscountCategory": ("Spend", "Usage"),
    "CommitmentDiscountStatus": ("Used", "Unused"),
    "CapacityReservationStatus": ("Used", "Unused"),
    "PricingCategory": ("Standard", "Dynamic", "Committed", "Other"),
}
# FOCUS 1.0-preview values (toolkit transform: "Handle FOCUS 1.0-preview"), lower-cased → the 1.2 value.
RENAMED_VALUES: dict[str, dict[str, str]] = {
    "PricingCategory": {"on-demand": "Standard", "commitment-based": "Committed"},
}
NULL_LITERALS = ("NULL", "null", "")
# Stats and repairs about a file's header, counted once per file.
COLUMN_STATS = ("unknown_column:", "x_column_not_stored:", "focus_1_3_column_not_stored:", "duplicate_column_dropped:",
                "column_name_casing:", "renamed_column:")  # fmt: skip

_ISO_UTC = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$"
_MORE_THAN_SCALE = rf"\.\d{{{MONEY_SCALE}}}\d*[1-9]"  # a non-zero digit past the warehouse scale
_CANONICAL = {name.lower(): name for name in (*FOCUS_COLUMN_NAMES, *RENAMED_COLUMNS, *ADOPTED_X_COLUMNS)}
EMPTY_SCHEMA = {c: FOCUS_COSTS_SCHEMA[c] for c in (*FOCUS_COLUMN_NAMES, "x_source_file", "x_source_line")}


@dataclass
class _Report:
    """What happened while reading one batch: repairs, stats, quarantined rows, the provider's own total."""

    repairs: Counter[str] = field(default_factory=Counter)
    stats: Counter[str] = field(default_factory=Counter)
    quarantine: list[pl.DataFrame] = field(default_factory=list)
    total: Decimal = Decimal(0)

    def quarantine_rows(self, file: str, lines: pl.Series, reasons: pl.Series) -> None:
        self.quarantine.append(
            pl.DataFrame({"file": file, "line": lines.cast(pl.String), "reason": reasons}, schema=QUARANTINE_SCHEMA)
        )

    def result(self, frame: pl.DataFrame) -> LoadResult:
        quarantine = pl.concat(self.quarantine) if self.quarantine else pl.DataFrame(schema=QUARANTINE_SCHEMA)
        self.stats["rows"] += frame.height
        return LoadResult(
            frame=frame,
            quarantine=quarantine,
            source_total=self.total,
            repairs={k: v for k, v in sorted(self.repairs.items()) if v},
            stats={k: v for k, v in sorted(self.stats.items()) if v},
        )


def load(source: FocusFileSource, period: BillingPeriod) -> LoadResult:
    """All rows of ``period`` from every FOCUS file under ``source.path``."""
    return combine(load_batches(source, period))


def load_batches(source: FocusFileSource, period: BillingPeriod) -> Iterator[LoadResult]:
    """The rows of ``period``, one CSV file or one Parquet row group at a time (bounded memory)."""
    yield from read_batches(source.name, find_files(source.name, source.path), period)


def read_batches(
    source: str, files: Sequence[Path], period: BillingPeriod, required: Sequence[str] = REQUIRED_COLUMNS
) -> Iterator[LoadResult]:
    """Each file's rows of ``period`` as FOCUS 1.2, batch by batch; ``required`` columns must be in every file."""
    for path in files:
        for number, raw in enumerate(raw_batches(source, path)):
            report = _Report()
            frame = _to_focus(source, path, raw, period, required, report)
            result = report.result(frame)
            if number == 0:  # count each file (and what its header needed) once, however many batches it has
                result.files = [str(path)]
                result.stats = {**result.stats, "files": 1}
            else:
                result.stats = {k: v for k, v in result.stats.items() if not k.startswith(COLUMN_STATS)}
                result.repairs = {k: v for k, v in result.repairs.items() if not k.startswith(COLUMN_STATS)}
            yield result


def combine(results: Iterable[LoadResult]) -> LoadResult:
    """Batches concatenated into one result: frames, quarantine, files, totals, repairs and stats."""
    frames, quarantines, files = [], [], []
    total, repairs, stats = Decimal(0), Counter[str](), Counter[str]()
    for result in results:
        if result.frame.height:
            frames.append(result.frame)
        quarantines.append(result.quarantine)
        files += result.files
        total += result.source_total or 0
        repairs.update(result.repairs)
        stats.update(result.stats)
    return LoadResult(
        frame=pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame(schema=EMPTY_SCHEMA),
        quarantine=pl.concat([pl.DataFrame(schema=QUARANTINE_SCHEMA), *quarantines]),
        files=files,
        source_total=total,
        repairs=dict(sorted(repairs.items())),
        stats=dict(sorted(stats.items())),
    )


def find_files(source: str, path: str) -> list[Path]:
    """The export files named by ``path``: a folder (searched recursively), a file or a glob."""
    root = Path(path).expanduser()
    if root.is_dir():
        candidates: Iterable[Path] = root.rglob("*")
    elif root.is_file():
        candidates = [root]
    else:
        candidates = (Path(p) for p in glob.glob(str(root), recursive=True))
    files = sorted(p for p in candidates if p.is_file() and p.name.lower().endswith(SUFFIXES))
    if not files:
        raise SourceError(
            source,
            path,
            f"no {', '.join(SUFFIXES)} files found",
            "point path at the export folder or a glob such as 'exports/**/*.csv.gz'",
        )
    return files


# --- reading ---------------------------------------------------------------------------------------


def raw_batches(source: str, path: Path) -> Iterator[pl.DataFrame]:
    """The file as string frames with each row's line (CSV) or row number (Parquet): one per row group."""
    if path.suffix.lower() == ".parquet":
        yield from _parquet_batches(source, path)
    else:
        yield _read_csv(source, path)


def _parquet_batches(source: str, path: Path) -> Iterator[pl.DataFrame]:
    try:
        parquet = pq.ParquetFile(path)
        offset = 1
        for group in range(parquet.num_row_groups):
            table = parquet.read_row_group(group)
            frame = _stringify(pl.from_arrow(table)).with_row_index(LINE, offset=offset)  # type: ignore[arg-type]
            offset += table.num_rows
            yield frame
    except (OSError, pa.ArrowException, pl.exceptions.PolarsError) as exc:
        raise SourceError(source, str(path), f"cannot be read as Parquet: {exc}", "is the file complete?") from None


def _read_csv(source: str, path: Path) -> pl.DataFrame:
    try:
        data = gzip.decompress(path.read_bytes()) if path.name.lower().endswith(".gz") else path.read_bytes()
        frame = pl.read_csv(io.BytesIO(data), infer_schema=False)
    except (OSError, pl.exceptions.PolarsError, gzip.BadGzipFile, EOFError) as exc:
        raise SourceError(source, str(path), f"cannot be read as CSV: {exc}") from None
    frame = frame.rename({c: c.lstrip("\ufeff").strip() for c in frame.columns})
    frame = frame.filter(~pl.all_horizontal(pl.all().is_null()))  # blank lines (the FOCUS spec examples have them)
    return frame.with_columns(_line_numbers(data, frame.height).alias(LINE))


def _line_numbers(data: bytes, records: int) -> pl.Series:
    """The physical line each CSV record starts on (quoted fields may span lines; header is line 1)."""
    lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    if lines == records + 1:  # no record spans lines: record n is on line n + 1
        return pl.int_range(2, records + 2, eager=True, dtype=pl.Int64)
    reader = csv.reader(io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline=""))
    starts, start = [], 1
    for row in reader:
        if row:  # blank lines hold no record (the FOCUS spec's examples have them)
            starts.append(start)
        start = reader.line_num + 1
    if len(starts) != records + 1:  # the two parsers disagree: fall back to record numbers
        return pl.int_range(2, records + 2, eager=True, dtype=pl.Int64)
    return pl.Series(starts[1:], dtype=pl.Int64)


def _stringify(frame: pl.DataFrame) -> pl.DataFrame:
    """Parquet columns as strings, exactly: decimals keep their digits, timestamps become ISO UTC, maps JSON.

    Columns the warehouse doesn't store are not converted (a NULL placeholder keeps their name for the stats).
    """
    columns = []
    for name, dtype in frame.schema.items():
        col = pl.col(name)
        if _CANONICAL.get(name.lower()) is None:
            columns.append(pl.lit(None, pl.String).alias(name))
        elif isinstance(dtype, pl.Datetime):
            utc = col.dt.replace_time_zone("UTC") if dtype.time_zone is None else col.dt.convert_time_zone("UTC")
            columns.append(utc.dt.strftime("%Y-%m-%dT%H:%M:%SZ").alias(name))
        elif isinstance(dtype, pl.Struct):
            columns.append(col.struct.json_encode().alias(name))
        elif isinstance(dtype, (pl.Map, pl.List)):  # AWS's map<string,string> Tags (a Map, or a list of key/value)
            entries = col.to_physical() if isinstance(dtype, pl.Map) else col
            columns.append(_map_as_json(entries).alias(name))
        else:
            columns.append(col.cast(pl.String).alias(name))
    return frame.select(columns)


def _map_as_json(entries: pl.Expr) -> pl.Expr:
    """A list of ``{key, value}`` structs as a JSON object's text, e.g. ``{"team":"ml"}``; an empty map is ``{}``.

    Each entry is JSON-encoded by polars (``{"key":"team","value":"ml"}``) and rewritten as ``"team":"ml"``: inside
    a JSON string a quote is always escaped, so ``,"value":`` can only be the separator.
    """
    pair = pl.element().struct.json_encode().str.replace(r'^\{"key":(.*?),"value":(.*)\}$', "$1:$2")
    return pl.concat_str(pl.lit("{"), entries.list.eval(pair).list.join(","), pl.lit("}"))


# --- one batch -------------------------------------------------------------------------------------


def _to_focus(
    source: str, path: Path, raw: pl.DataFrame, period: BillingPeriod, required: Sequence[str], report: _Report
) -> pl.DataFrame:
    raw = _normalize_columns(source, path, raw, required, report)
    raw = _in_period(path, raw, period, report)
    raw = _nulls(raw, report)
    if raw.height == 0:
        return pl.DataFrame(schema=EMPTY_SCHEMA)
    report.total += _provider_total(raw["BilledCost"])
    typed, reasons = _typed(raw, report)
    typed = _repaired(typed, report)
    reasons = _combine_reasons(reasons, _row_problems(typed, report))
    typed, tag_reasons = _tags(typed, report)
    reasons = _combine_reasons(reasons, tag_reasons)
    bad = reasons.is_not_null()
    if bad.any():
        report.quarantine_rows(str(path), typed[LINE].filter(bad), reasons.filter(bad))
    label = "row" if path.suffix.lower() == ".parquet" else "line"
    return (
        typed.filter(~bad)
        .with_columns(
            pl.lit(str(path)).alias("x_source_file"),
            (pl.lit(f"{label} ") + pl.col(LINE).cast(pl.String)).alias("x_source_line"),
        )
        .drop(LINE)
    )


def _normalize_columns(
    source: str, path: Path, frame: pl.DataFrame, required: Sequence[str], report: _Report
) -> pl.DataFrame:
    """FOCUS 1.2 names for old/renamed columns; columns the warehouse doesn't store dropped and counted."""
    renames: dict[str, str] = {}
    drop: list[str] = []
    for name in frame.columns:
        if name == LINE:
            continue
        canonical = _CANONICAL.get(name.lower())
        if canonical is None:
            drop.append(name)
            report.stats[_not_stored_stat(name)] += 1
            continue
        if canonical != name:
            report.repairs[f"column_name_casing:{name}"] += 1
        target = RENAMED_COLUMNS.get(canonical) or ADOPTED_X_COLUMNS.get(canonical) or canonical
        if target != canonical:
            if target in frame.columns or target in renames.values():
                drop.append(name)  # both spellings present (1.3 keeps ProviderName): the 1.2 one wins
                report.stats[f"duplicate_column_dropped:{name}"] += 1
                continue
            report.repairs[f"renamed_column:{canonical}->{target}"] += 1
        if target != name:
            renames[name] = target
    frame = frame.drop(drop).rename(renames)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise SourceError(
            source,
            str(path),
            f"missing mandatory FOCUS column(s) {', '.join(missing)}",
            "the export's schema changed or it is not a FOCUS 1.0-1.3 export; the warehouse keeps the previous load",
        )
    return frame


def _not_stored_stat(name: str) -> str:
    if name.startswith("x_"):
        return f"x_column_not_stored:{name}"
    if name in FOCUS_1_3_COLUMNS:
        return f"focus_1_3_column_not_stored:{name}"
    return f"unknown_column:{name}"


def _nulls(frame: pl.DataFrame, report: _Report) -> pl.DataFrame:
    """NULL literals and quoted empty strings → real nulls, counting each."""
    columns = [c for c in frame.columns if c != LINE and frame.schema[c] == pl.String]
    if not columns:
        return frame
    counts = frame.select(
        pl.sum_horizontal(pl.col(c).is_in(["NULL", "null"]).sum() for c in columns).alias("literal"),
        pl.sum_horizontal((pl.col(c) == "").sum() for c in columns).alias("empty"),
    ).row(0, named=True)
    report.repairs["null_literal"] += int(counts["literal"] or 0)
    report.repairs["empty_string_as_null"] += int(counts["empty"] or 0)
    return frame.with_columns(
        pl.when(pl.col(c).is_in(NULL_LITERALS)).then(None).otherwise(pl.col(c)).alias(c) for c in columns
    )


def _in_period(path: Path, frame: pl.DataFrame, period: BillingPeriod, report: _Report) -> pl.DataFrame:
    """Rows whose BillingPeriodStart is in ``period``; rows whose start can't be read are quarantined.

    Date/time columns are parsed here, once per distinct value (an export repeats a few hundred hours), into
    ``__dt_<name>`` columns that ``_typed`` uses.
    """
    frame = _parsed_datetimes(frame)
    start = pl.col("__dt_BillingPeriodStart")
    unreadable = frame.filter(start.is_null())
    if unreadable.height:
        reasons = unreadable.select(
            pl.format("BillingPeriodStart: {} is not a date/time", pl.col("BillingPeriodStart").fill_null("NULL"))
        ).to_series()
        report.quarantine_rows(str(path), unreadable[LINE], reasons)
    kept = frame.filter((start >= period.start) & (start < period.end))
    report.stats["rows_outside_period"] += frame.height - unreadable.height - kept.height
    return kept


def _parsed_datetimes(frame: pl.DataFrame) -> pl.DataFrame:
    exprs = []
    for name in (c for c in DATETIME_COLUMNS if c in frame.columns):
        values = frame[name].drop_nulls().unique()
        parsed = values.to_frame().select(parse_datetime(pl.col(name))).to_series()
        exprs.append(
            pl.col(name).replace_strict(values, parsed, default=None, return_dtype=TIMESTAMP).alias(f"__dt_{name}")
        )
    return frame.with_columns(exprs)


def _typed(frame: pl.DataFrame, report: _Report) -> tuple[pl.DataFrame, pl.Series]:
    """Decimal, date/time and allowed-value columns typed; a reason per row that failed, else null."""
    exprs, problems, tallies = [], [], []
    for name in (c for c in DECIMAL_COLUMNS if c in frame.columns):
        text = pl.col(name).str.strip_chars()
        parsed = text.cast(MONEY, strict=False)
        tallies.append((f"decimal_rounded_to_{MONEY_SCALE}_places:{name}", text.str.contains(_MORE_THAN_SCALE)))
        exprs.append(parsed.alias(name))
        problem = pl.when(pl.col(name).is_not_null() & parsed.is_null()).then(
            pl.format(f"{name}: '{{}}' is not a decimal number", pl.col(name))
        )
        if name in ("BilledCost", "EffectiveCost"):  # no amount to load or reconcile
            problem = problem.when(pl.col(name).is_null()).then(pl.lit(f"{name}: NULL in a mandatory column"))
        problems.append(problem)
    for name in (c for c in DATETIME_COLUMNS if c in frame.columns):
        parsed = pl.col(f"__dt_{name}")
        tallies.append(("datetime_not_iso8601_utc", parsed.is_not_null() & ~pl.col(name).str.contains(_ISO_UTC)))
        exprs.append(parsed.alias(name))
        problems.append(
            pl.when(pl.col(name).is_not_null() & parsed.is_null()).then(
                pl.format(f"{name}: '{{}}' is not a date/time", pl.col(name))
            )
        )
    for name, allowed in ((c, v) for c, v in ALLOWED_VALUES.items() if c in frame.columns):
        lower = pl.col(name).str.to_lowercase()
        renamed = RENAMED_VALUES.get(name, {})
        recased = lower.replace_strict({v.lower(): v for v in allowed} | renamed, default=pl.col(name))
        tallies.append((f"value_renamed:{name}", lower.is_in(list(renamed))))
        tallies.append(
            (
                f"value_casing:{name}",
                pl.col(name).is_not_null() & (recased != pl.col(name)) & ~lower.is_in(list(renamed)),
            )
        )
        exprs.append(recased.alias(name))
    _tally(frame, tallies, report)
    reasons = (
        frame.select(pl.concat_str(problems, separator="; ", ignore_nulls=True).alias("r"))
        .to_series()
        .replace("", None)
        if problems
        else pl.Series("r", [None] * frame.height, dtype=pl.String)
    )
    temporary = [c for c in frame.columns if c.startswith("__dt_")]
    return frame.with_columns(exprs).drop(temporary), reasons


def _tally(frame: pl.DataFrame, tallies: list[tuple[str, pl.Expr]], report: _Report) -> None:
    """Count the rows meeting each condition, all in one pass; repeated keys add up."""
    if not tallies:
        return
    sums = frame.select(condition.fill_null(False).sum().alias(str(i)) for i, (_, condition) in enumerate(tallies))
    for (key, _), value in zip(tallies, sums.row(0), strict=True):
        report.repairs[key] += int(value)


def _repaired(frame: pl.DataFrame, report: _Report) -> pl.DataFrame:
    """FOCUS 1.2 rules that real exports break, fixed where the spec says what the value must be."""
    frame = _fill_cost(frame, "ContractedCost", "ContractedUnitPrice", report)
    frame = _fill_cost(frame, "ListCost", "ListUnitPrice", report)
    frame = _columns_1_2_added(frame, report)
    if "ProviderName" in frame.columns:
        for name in ("PublisherName", "InvoiceIssuerName"):
            if name in frame.columns:
                report.repairs[f"filled_from_provider_name:{name}"] += _count(frame, pl.col(name).is_null())
                frame = frame.with_columns(pl.col(name).fill_null(pl.col("ProviderName")))
    category = pl.col("ChargeCategory") if "ChargeCategory" in frame.columns else pl.lit(None, pl.String)
    not_consumption = category != "Usage"
    if "CommitmentDiscountStatus" in frame.columns:
        not_consumption = not_consumption | (pl.col("CommitmentDiscountStatus") == "Unused")
    for name in ("ConsumedQuantity", "ConsumedUnit"):
        if name in frame.columns:
            report.repairs[f"nulled_on_non_consumption_row:{name}"] += _count(
                frame, not_consumption & pl.col(name).is_not_null()
            )
            frame = frame.with_columns(pl.when(not_consumption).then(None).otherwise(pl.col(name)).alias(name))
    if {"CommitmentDiscountStatus", "PricingCategory"} <= set(frame.columns):
        committed = (category == "Usage") & pl.col("CommitmentDiscountStatus").is_not_null()
        frame = _set_where(frame, committed & (pl.col("PricingCategory") != "Committed"), "PricingCategory",
                           pl.lit("Committed"), "pricing_category_of_commitment_usage", report)  # fmt: skip
    if "CommitmentDiscountId" in frame.columns:
        purchase = (category == "Purchase") & pl.col("CommitmentDiscountId").is_not_null()
        frame = _set_where(frame, purchase & (pl.col("EffectiveCost") != 0), "EffectiveCost", pl.lit(0).cast(MONEY),
                           "effective_cost_zeroed_on_commitment_purchase", report)  # fmt: skip
        if "ChargeFrequency" in frame.columns:
            frame = _set_where(frame, purchase & (pl.col("ChargeFrequency") == "Usage-Based"), "ChargeFrequency",
                               pl.lit("Recurring"), "charge_frequency_of_commitment_purchase", report)  # fmt: skip
    return frame


def _columns_1_2_added(frame: pl.DataFrame, report: _Report) -> pl.DataFrame:
    """Columns FOCUS 1.1/1.2 added, filled where the export's own rules or the spec say what they are.

    FOCUS 1.0 prices are denominated in the BillingCurrency, so a file without PricingCurrency prices in it; on a
    row priced in its billing currency the PricingCurrency* amounts are the billing ones (``models.focus.conform``
    fills rows whose PricingCurrency is NULL; this also covers Microsoft's 1.0 ``x_PricingCurrency`` rows).
    ServiceSubcategory (1.1; NOT NULL) is "Other (<ServiceCategory>)" when the export has none: ServiceName-C-009-C
    associates a service with "Other" when no suitable subcategory is known.
    """
    if "PricingCurrency" not in frame.columns and "BillingCurrency" in frame.columns:
        report.repairs["filled_from_billing_currency:PricingCurrency"] += frame.height
        frame = frame.with_columns(pl.col("BillingCurrency").alias("PricingCurrency"))
    if {"PricingCurrency", "BillingCurrency"} <= set(frame.columns):
        same = pl.col("PricingCurrency") == pl.col("BillingCurrency")
        for target, billed in (
            ("PricingCurrencyEffectiveCost", "EffectiveCost"),
            ("PricingCurrencyListUnitPrice", "ListUnitPrice"),
            ("PricingCurrencyContractedUnitPrice", "ContractedUnitPrice"),
        ):
            if billed in frame.columns:
                current = pl.col(target) if target in frame.columns else pl.lit(None, MONEY)
                fill = same & current.is_null() & pl.col(billed).is_not_null()
                report.repairs[f"filled_in_pricing_currency:{target}"] += _count(frame, fill)
                frame = frame.with_columns(pl.when(fill).then(pl.col(billed)).otherwise(current).alias(target))
    if "ServiceSubcategory" not in frame.columns and "ServiceCategory" in frame.columns:
        report.repairs["filled_as_other:ServiceSubcategory"] += _count(frame, pl.col("ServiceCategory").is_not_null())
        frame = frame.with_columns(pl.format("Other ({})", pl.col("ServiceCategory")).alias("ServiceSubcategory"))
    return frame


def _fill_cost(frame: pl.DataFrame, cost: str, unit_price: str, report: _Report) -> pl.DataFrame:
    """A NULL cost column: unit price × PricingQuantity when both are known, else BilledCost."""
    if cost not in frame.columns:
        return frame
    priced = (
        pl.col(unit_price) * pl.col("PricingQuantity")
        if {unit_price, "PricingQuantity"} <= set(frame.columns)
        else pl.lit(None, MONEY)
    )
    missing = pl.col(cost).is_null()
    report.repairs[f"cost_from_unit_price:{cost}"] += _count(frame, missing & priced.is_not_null())
    report.repairs[f"cost_from_billed_cost:{cost}"] += _count(frame, missing & priced.is_null())
    return frame.with_columns(pl.coalesce(pl.col(cost), priced, pl.col("BilledCost")).cast(MONEY).alias(cost))


def _set_where(
    frame: pl.DataFrame, condition: pl.Expr, name: str, value: pl.Expr, repair: str, report: _Report
) -> pl.DataFrame:
    report.repairs[repair] += _count(frame, condition)
    return frame.with_columns(pl.when(condition.fill_null(False)).then(value).otherwise(pl.col(name)).alias(name))


def _row_problems(frame: pl.DataFrame, report: _Report) -> pl.Series:
    """Reasons for rows whose values parse but can't be loaded: negative usage that isn't a reversal."""
    problems = []
    if {"ChargeCategory", "ConsumedQuantity"} <= set(frame.columns):
        correction = pl.col("ChargeClass") == "Correction" if "ChargeClass" in frame.columns else pl.lit(False)
        negative = (
            (pl.col("ChargeCategory") == "Usage") & (pl.col("ConsumedQuantity") < 0) & ~correction.fill_null(False)
        )
        reversal = negative & (pl.col("BilledCost") <= 0) & (pl.col("EffectiveCost") <= 0)
        report.stats["usage_reversal_rows"] += _count(frame, reversal)
        problems.append(
            pl.when(negative & ~reversal).then(
                pl.format(
                    "ConsumedQuantity: {} is negative on a Usage row with a positive cost", pl.col("ConsumedQuantity")
                )
            )
        )
    if not problems:
        return pl.Series("r", [None] * frame.height, dtype=pl.String)
    return (
        frame.select(pl.concat_str(problems, separator="; ", ignore_nulls=True).alias("r"))
        .to_series()
        .replace("", None)
    )


def _tags(frame: pl.DataFrame, report: _Report) -> tuple[pl.DataFrame, pl.Series]:
    """Tags as JSON objects: missing outer braces added; a row whose Tags can't be read gets a reason."""
    none = pl.Series("r", [None] * frame.height, dtype=pl.String)
    if "Tags" not in frame.columns:
        return frame, none
    fixes = {value: repair_tags(value) for value in frame["Tags"].drop_nulls().unique().to_list()}
    changed = {k: v for k, v in fixes.items() if v is not None and v != k}
    bad = [k for k, v in fixes.items() if v is None]
    report.repairs["tags_outer_braces_added"] += _count(frame, pl.col("Tags").is_in(list(changed)))
    reasons = frame.select(
        pl.when(pl.col("Tags").is_in(bad)).then(pl.lit("Tags: not a JSON object")).alias("r")
    ).to_series()
    return frame.with_columns(pl.col("Tags").replace(changed)), reasons


def repair_tags(text: str) -> str | None:
    """A JSON object's text; one written without its outer braces gets them; None when it isn't one."""
    stripped = text.strip()
    for candidate in (stripped, "{" + stripped + "}"):
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            return candidate
    return None


def _combine_reasons(first: pl.Series, second: pl.Series) -> pl.Series:
    both = pl.DataFrame({"a": first, "b": second})
    return both.select(pl.concat_str("a", "b", separator="; ", ignore_nulls=True).replace("", None)).to_series()


def parse_datetime(text: pl.Expr) -> pl.Expr:
    """FOCUS date/time text as UTC: ``...T...Z``, offsets, ``YYYY-MM-DD HH:MM:SS`` and ``…T00:00Z``."""
    iso = text.str.strip_chars().str.replace(" ", "T", literal=True)
    return pl.coalesce(
        iso.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%#z", strict=False, time_zone="UTC", time_unit="us"),
        iso.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f", strict=False, time_zone="UTC", time_unit="us"),
        iso.str.to_datetime("%Y-%m-%dT%H:%M%#z", strict=False, time_zone="UTC", time_unit="us"),
        iso.str.to_datetime("%Y-%m-%d", strict=False, time_zone="UTC", time_unit="us"),
    ).cast(TIMESTAMP)


def _provider_total(billed: pl.Series) -> Decimal:
    """The file's own BilledCost total: every parseable value, summed exactly with ``decimal``."""
    total = Decimal(0)
    for value in billed.drop_nulls().to_list():
        try:
            amount = Decimal(value.strip())
        except InvalidOperation:
            continue  # quarantined; it has no amount to add
        if amount.is_finite():
            total += amount
    return total


def _count(frame: pl.DataFrame, condition: pl.Expr) -> int:
    return int(frame.select(condition.fill_null(False).sum()).item())
