"""FOCUS exports as CSV (``.csv``, ``.csv.gz``) or Parquet files → FOCUS 1.2 rows.

Follows the FOCUS specification (FinOps Foundation, FOCUS_Spec tags v1.0–v1.2, ``CHANGELOG.md``
"Columns History") and reads what real exports contain, e.g. the FinOps Foundation's FOCUS 1.0
sample data (FOCUS-Sample-Data) and Nebius' hourly FOCUS 1.2 export (docs.nebius.com
"Exporting usage data", "FOCUS conformance"). Repairs, each counted in ``LoadResult.repairs``:

- columns renamed between versions: ``AmortizedCost``→``EffectiveCost``, ``ChargeType``→
  ``ChargeCategory`` (1.0-preview), ``UsageQuantity``/``UsageUnit``→``ConsumedQuantity``/``Unit``,
  ``Region``→``RegionId`` (1.0), pre-1.0 ``Provider``/``Publisher``/``InvoiceIssuer``, and 1.3's
  ``ServiceProviderName``→``ProviderName``; column names matched case-insensitively;
- NULL written as the string ``NULL`` or as a quoted empty string (an unquoted empty CSV field is
  CSV's own null and not counted);
- date/times not in FOCUS' ``YYYY-MM-DDTHH:mm:ssZ`` form (``2024-09-01 00:00:00``) are read as UTC;
- allowed values in the wrong case (Oracle's ``Usage-based``) get the spec's casing;
- decimals with more than 10 decimal places are rounded half-even to the warehouse scale.

Rows are kept when BillingPeriodStart falls in the period. A row whose money, quantity or
date/time value doesn't parse is quarantined with its file, line and the reason. Columns that are
neither FOCUS 1.2 nor ``x_``-prefixed are dropped and reported in ``stats``.
"""

from __future__ import annotations

import csv
import glob
import gzip
import io
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

import polars as pl

from connectors.base import QUARANTINE_SCHEMA, BillingPeriod, LoadResult, SourceError
from models.config import FocusFileSource
from models.focus import (
    DECIMAL_COLUMNS,
    FOCUS_COLUMN_NAMES,
    FOCUS_COSTS_SCHEMA,
    MONEY,
    MONEY_SCALE,
    TIMESTAMP,
    X_COLUMNS,
)

SUFFIXES = (".csv", ".csv.gz", ".parquet")
DATETIME_COLUMNS = ("BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd")
NEEDED_COLUMNS = ("BilledCost", "BillingPeriodStart")  # without these a row can't be placed or reconciled
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

_ISO_UTC = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$"
_MORE_THAN_SCALE = rf"\.\d{{{MONEY_SCALE}}}\d*[1-9]"  # a non-zero digit past the warehouse scale
_RESERVED = {c.name for c in X_COLUMNS}
EMPTY_SCHEMA = {c: FOCUS_COSTS_SCHEMA[c] for c in (*FOCUS_COLUMN_NAMES, "x_source_file", "x_source_line")}
_CANONICAL = {name.lower(): name for name in (*FOCUS_COLUMN_NAMES, *RENAMED_COLUMNS)}


@dataclass
class _Report:
    """What happened while reading: repairs, stats, quarantined rows, the provider's own total."""

    repairs: Counter[str] = field(default_factory=Counter)
    stats: Counter[str] = field(default_factory=Counter)
    quarantine: list[pl.DataFrame] = field(default_factory=list)
    total: Decimal = Decimal(0)

    def quarantine_rows(self, file: str, lines: pl.Series, reasons: pl.Series) -> None:
        self.quarantine.append(
            pl.DataFrame({"file": file, "line": lines.cast(pl.String), "reason": reasons}, schema=QUARANTINE_SCHEMA)
        )


def load(source: FocusFileSource, period: BillingPeriod) -> LoadResult:
    """All rows of ``period`` from every FOCUS file under ``source.path``."""
    files = find_files(source)
    report = _Report()
    frames = [_load_file(source.name, path, period, report) for path in files]
    frames = [f for f in frames if f.height]
    frame = pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame(schema=EMPTY_SCHEMA)
    quarantine = pl.concat(report.quarantine) if report.quarantine else pl.DataFrame(schema=QUARANTINE_SCHEMA)
    report.stats["files"] = len(files)
    report.stats["rows"] = frame.height
    return LoadResult(
        frame=frame,
        quarantine=quarantine,
        files=[str(p) for p in files],
        source_total=report.total,
        repairs={k: v for k, v in sorted(report.repairs.items()) if v},
        stats={k: v for k, v in sorted(report.stats.items()) if v},
    )


def find_files(source: FocusFileSource) -> list[Path]:
    """The export files named by ``source.path``: a folder (searched recursively) or a glob."""
    root = Path(source.path).expanduser()
    if root.is_dir():
        candidates: Iterable[Path] = root.rglob("*")
    elif root.is_file():
        candidates = [root]
    else:
        candidates = (Path(p) for p in glob.glob(str(root), recursive=True))
    files = sorted(p for p in candidates if p.is_file() and p.name.lower().endswith(SUFFIXES))
    if not files:
        raise SourceError(
            source.name,
            source.path,
            f"no {', '.join(SUFFIXES)} files found",
            "point path at the export folder or a glob such as 'exports/**/*.csv.gz'",
        )
    return files


# --- one file -------------------------------------------------------------------------------


def _load_file(source: str, path: Path, period: BillingPeriod, report: _Report) -> pl.DataFrame:
    raw = _read_strings(source, path, report)
    raw = _normalize_columns(source, path, raw, report)
    raw = _in_period(source, path, raw, period, report)
    raw = _nulls(raw, report)
    if raw.height == 0:
        return raw
    report.total += _provider_total(raw["BilledCost"])
    typed, reasons = _typed(raw, report)
    bad = reasons.is_not_null()
    if bad.any():
        report.quarantine_rows(str(path), raw[LINE].filter(bad), reasons.filter(bad))
    typed = typed.filter(~bad)
    label = "row" if path.suffix == ".parquet" else "line"
    return typed.with_columns(
        pl.lit(str(path)).alias("x_source_file"),
        (pl.lit(f"{label} ") + pl.col(LINE).cast(pl.String)).alias("x_source_line"),
    ).drop(LINE)


def _read_strings(source: str, path: Path, report: _Report) -> pl.DataFrame:
    """The file with every value as a string, plus its line number (CSV) or row number (Parquet)."""
    try:
        if path.suffix == ".parquet":
            frame = _stringify(pl.read_parquet(path), report)
            return frame.with_row_index(LINE, offset=1)
        data = gzip.decompress(path.read_bytes()) if path.name.lower().endswith(".gz") else path.read_bytes()
        frame = pl.read_csv(io.BytesIO(data), infer_schema=False)
    except (OSError, pl.exceptions.PolarsError, gzip.BadGzipFile) as exc:
        raise SourceError(source, str(path), f"cannot be read as {_kind(path)}: {exc}") from None
    frame = frame.rename({c: c.lstrip("\ufeff").strip() for c in frame.columns})
    return frame.with_columns(_line_numbers(data, frame.height, report).alias(LINE))


def _line_numbers(data: bytes, records: int, report: _Report) -> pl.Series:
    """The physical line each CSV record starts on (quoted fields may span lines; header is line 1)."""
    lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    if lines == records + 1:  # no record spans lines: record n is on line n + 1
        return pl.int_range(2, records + 2, eager=True, dtype=pl.Int64)
    reader = csv.reader(io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline=""))
    starts, start = [], 1
    for _ in reader:
        starts.append(start)
        start = reader.line_num + 1
    if len(starts) != records + 1:  # the two parsers disagree (blank lines?): fall back to record numbers
        report.stats["line_numbers_are_record_numbers"] += 1
        return pl.int_range(2, records + 2, eager=True, dtype=pl.Int64)
    return pl.Series(starts[1:], dtype=pl.Int64)


def _stringify(frame: pl.DataFrame, report: _Report) -> pl.DataFrame:
    """Parquet columns as strings, exactly: decimals keep their digits, timestamps become ISO UTC."""
    columns = []
    for name, dtype in frame.schema.items():
        col = pl.col(name)
        if isinstance(dtype, pl.Datetime):
            utc = col.dt.replace_time_zone("UTC") if dtype.time_zone is None else col.dt.convert_time_zone("UTC")
            columns.append(utc.dt.strftime("%Y-%m-%dT%H:%M:%SZ").alias(name))
        elif isinstance(dtype, pl.Struct):
            columns.append(col.struct.json_encode().alias(name))
        elif isinstance(dtype, pl.List):  # a map<string,string> (tags) arrives as a list of key/value structs
            columns.append(col.map_elements(_pairs_to_json, return_dtype=pl.String()).alias(name))
        else:
            if dtype in (pl.Float32, pl.Float64):
                report.stats[f"float_column:{name}"] += 1  # binary floats can't be exact money
            columns.append(col.cast(pl.String).alias(name))
    return frame.select(columns)


def _pairs_to_json(pairs: pl.Series) -> str:
    items = pairs.to_list()
    if items and isinstance(items[0], dict) and {"key", "value"} <= set(items[0]):
        return json.dumps({i["key"]: i["value"] for i in items})
    return json.dumps(items)


def _normalize_columns(source: str, path: Path, frame: pl.DataFrame, report: _Report) -> pl.DataFrame:
    """FOCUS 1.2 names for old/renamed columns; unknown columns dropped and reported."""
    renames: dict[str, str] = {}
    drop: list[str] = []
    for name in frame.columns:
        if name == LINE:
            continue
        canonical = _CANONICAL.get(name.lower())
        if canonical is None:
            if name.startswith("x_") and name not in _RESERVED:
                continue  # provider's own extension columns are legal FOCUS; keep them
            drop.append(name)
            report.stats[f"unknown_column:{name}"] += 1
            continue
        if canonical != name:
            report.repairs[f"column_name_casing:{name}"] += 1
        target = RENAMED_COLUMNS.get(canonical, canonical)
        if target != canonical:
            if target in frame.columns or target in renames.values():
                drop.append(name)  # both spellings present (1.3 keeps ProviderName): the 1.2 one wins
                report.stats[f"duplicate_column_dropped:{name}"] += 1
                continue
            report.repairs[f"renamed_column:{canonical}->{target}"] += 1
        if target != name:
            renames[name] = target
    frame = frame.drop(drop).rename(renames)
    missing = [c for c in NEEDED_COLUMNS if c not in frame.columns]
    if missing:
        raise SourceError(source, str(path), f"missing FOCUS column(s) {', '.join(missing)}", "is this a FOCUS export?")
    return frame


def _nulls(frame: pl.DataFrame, report: _Report) -> pl.DataFrame:
    """NULL literals and quoted empty strings → real nulls, counting each."""
    columns = [c for c in frame.columns if c != LINE and frame.schema[c] == pl.String]
    counts = (
        frame.select(
            *[(pl.col(c) == "NULL").sum().alias(f"null:{c}") for c in columns],
            *[(pl.col(c) == "").sum().alias(f"empty:{c}") for c in columns],
        ).row(0, named=True)
        if columns
        else {}
    )
    report.repairs["null_literal"] += sum(v for k, v in counts.items() if k.startswith("null:"))
    report.repairs["empty_string_as_null"] += sum(v for k, v in counts.items() if k.startswith("empty:"))
    return frame.with_columns(
        pl.when(pl.col(c).is_in(["NULL", ""])).then(None).otherwise(pl.col(c)).alias(c) for c in columns
    )


def _in_period(source: str, path: Path, frame: pl.DataFrame, period: BillingPeriod, report: _Report) -> pl.DataFrame:
    """Rows whose BillingPeriodStart is in ``period``; rows whose start can't be read are quarantined."""
    start = _parse_datetime(pl.col("BillingPeriodStart"))
    frame = frame.with_columns(start.alias("__bps"))
    unreadable = frame.filter(pl.col("__bps").is_null())
    if unreadable.height:
        reasons = unreadable.select(
            pl.format("BillingPeriodStart: {} is not a date/time", pl.col("BillingPeriodStart").fill_null("NULL"))
        ).to_series()
        report.quarantine_rows(str(path), unreadable[LINE], reasons)
    kept = frame.filter((pl.col("__bps") >= period.start) & (pl.col("__bps") < period.end))
    report.stats["rows_outside_period"] += frame.height - unreadable.height - kept.height
    return kept.drop("__bps")


def _typed(frame: pl.DataFrame, report: _Report) -> tuple[pl.DataFrame, pl.Series]:
    """Decimal, date/time and allowed-value columns typed; a reason per row that failed, else null."""
    exprs, problems = [], []
    for name in (c for c in DECIMAL_COLUMNS if c in frame.columns):
        text = pl.col(name).str.strip_chars()
        parsed = text.cast(MONEY, strict=False)
        report.repairs[f"decimal_rounded_to_{MONEY_SCALE}_places:{name}"] += _count(
            frame, text.str.contains(_MORE_THAN_SCALE)
        )
        exprs.append(parsed.alias(name))
        problems.append(
            pl.when(pl.col(name).is_not_null() & parsed.is_null()).then(
                pl.format(f"{name}: '{{}}' is not a decimal number", pl.col(name))
            )
        )
    for name in (c for c in DATETIME_COLUMNS if c in frame.columns):
        parsed = _parse_datetime(pl.col(name))
        report.repairs["datetime_not_iso8601_utc"] += _count(
            frame, parsed.is_not_null() & ~pl.col(name).str.contains(_ISO_UTC)
        )
        exprs.append(parsed.alias(name))
        problems.append(
            pl.when(pl.col(name).is_not_null() & parsed.is_null()).then(
                pl.format(f"{name}: '{{}}' is not a date/time", pl.col(name))
            )
        )
    for name, allowed in ((c, v) for c, v in ALLOWED_VALUES.items() if c in frame.columns):
        recased = pl.col(name).str.to_lowercase().replace_strict({v.lower(): v for v in allowed}, default=pl.col(name))
        report.repairs[f"value_casing:{name}"] += _count(frame, pl.col(name).is_not_null() & (recased != pl.col(name)))
        exprs.append(recased.alias(name))
    if not problems:
        return frame.with_columns(exprs), pl.Series("r", [None] * frame.height, dtype=pl.String)
    reasons = frame.select(pl.concat_str(problems, separator="; ", ignore_nulls=True).alias("r")).to_series()
    reasons = reasons.replace("", None)
    return frame.with_columns(exprs), reasons


def _parse_datetime(text: pl.Expr) -> pl.Expr:
    """FOCUS date/time text as UTC: ``...T...Z``, offsets, and the common ``YYYY-MM-DD HH:MM:SS``."""
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


def _kind(path: Path) -> str:
    return "Parquet" if path.suffix == ".parquet" else "CSV"
