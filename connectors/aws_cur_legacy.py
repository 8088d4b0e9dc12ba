"""Legacy AWS Cost and Usage Report (CUR) CSV → FOCUS 1.2 rows, through the CUR 2.0 mapping.

Follows the AWS Cost and Usage Reports User Guide:
- "Accessing your Cost and Usage Reports in Amazon S3" (docs.aws.amazon.com/cur/latest/userguide/access-cur-s3.html,
  awsdocs/aws-cur-user-guide ``doc_source/access-cur-s3.md``): a report is delivered to
  ``<prefix>/<report-name>/<yyyymmdd-yyyymmdd>/<assemblyId>/<report-name>-<n>.csv.<gz|zip>`` ("create new
  report version") or ``<prefix>/<report-name>/<yyyymmdd-yyyymmdd>/<report-name>-<n>.csv.<gz|zip>``
  ("overwrite"); each update overwrites ``<yyyymmdd-yyyymmdd>/<report-name>-Manifest.json``, which lists
  the update's ``reportKeys`` (bucket keys) and its ``assemblyId`` ("An ID that AWS creates each time that
  the report is updated"), and whose ``billingPeriod.start`` reads ``20231101T000000.000Z``. Only the
  manifest's files are read, so the files of older updates never are; ``assemblyId`` names the delivery
  (``current_delivery``; the sensor watches it).
- The data dictionary ("Line item details", "Reservation details", "Savings Plans details", "Resource tags"):
  headers are ``<category>/<Column>`` (``lineItem/UnblendedCost``, ``savingsPlan/SavingsPlanARN``),
  user-defined cost allocation tags are ``resourceTags/user:<key>`` columns (AWS-generated ones
  ``resourceTags/aws:<key>``), cost categories ``costCategory/<name>``; a blank tag cell means the
  resource has no such tag. The schema is dynamic: columns appear as services start billing.

Each header is renamed to its CUR 2.0 name the way Athena/Data Exports name them (``lineItem/UnblendedCost``
→ ``line_item_unblended_cost``, ``savingsPlan/SavingsPlanARN`` → ``savings_plan_savings_plan_a_r_n``; see
the "Migrating from CUR to Data Exports CUR 2.0" page), tag and cost-category columns become the CUR 2.0
``resource_tags`` / ``cost_category`` maps, and ``connectors.aws_cur2`` maps the lines: the rules, their
sources and the quarantine are the same for both (see that module's table). Messages name the file's own
header (``lineItem/UnblendedCost``).

Account names: legacy CUR has no account name columns. "CUR 2.0 contains two additional columns:
bill_payer_account_name and line_item_usage_account_name" ("Migrating from CUR to Data Exports CUR 2.0",
docs.aws.amazon.com/cur/latest/userguide/dataexports-migrate.html). AWS accounts do have names, and FOCUS 1.2
requires them where the provider supports naming ("BillingAccountName MUST NOT be null when the provider
supports assigning a display name for the billing account", BillingAccountName-C-003-C; "SubAccountName MUST
NOT be null when SubAccountId is not null", SubAccountName-C-005-C), so a line without a name is named by
its account id (``bill/PayerAccountId``, ``lineItem/UsageAccountId``), as the reserved_capacity connector
does; each fill is counted in ``repairs`` (``filled_missing:BillingAccountName`` / ``…:SubAccountName``).

``path`` is a report folder (``s3://bucket/prefix/report-name`` or a local copy of it), or plain CSV files:
one file, a folder of ``.csv``/``.csv.gz`` files, or a local glob. Plain files may hold several months:
the period's lines are kept and the others skipped (counted as ``rows_of_other_periods``).
"""

from __future__ import annotations

import glob
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl

from connectors.aws_cur2 import (
    BATCH_ROWS,
    KEY_VALUE,
    USED_COLUMNS,
    Delivery,
    Dialect,
    NoManifestError,
    Store,
    concat_results,
    map_file,
)
from connectors.base import BillingPeriod, LoadResult, SourceError
from models.config import AwsCurLegacySource

TAG_PREFIX = "resourceTags/"
COST_CATEGORY_PREFIX = "costCategory/"
KNOWN_CATEGORIES = frozenset(
    {"identity", "bill", "lineItem", "product", "pricing", "reservation", "savingsPlan", "discount",
     "splitLineItem", "resourceTags", "costCategory"}
)  # fmt: skip
CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.zip")
_RANGE_FOLDER = re.compile(r"(?:^|/)((\d{8})-\d{8}/.+)$")
_MISSING_REPORT_FILE = (
    "report file named in the manifest is missing",
    "the update is incomplete or files were removed; re-run after AWS's next update of the report",
)
# The legacy headers of the columns the mapping requires (messages about a missing column name these).
REQUIRED_HEADERS = (
    "bill/BillingPeriodStartDate", "bill/BillingPeriodEndDate", "bill/PayerAccountId", "lineItem/LineItemType",
    "lineItem/UsageStartDate", "lineItem/UsageEndDate", "lineItem/UnblendedCost", "lineItem/CurrencyCode",
    "lineItem/ProductCode", "lineItem/UsageAmount", "savingsPlan/SavingsPlanEffectiveCost",
    "savingsPlan/SavingsPlanARN", "savingsPlan/TotalCommitmentToDate", "savingsPlan/UsedCommitment",
    "reservation/EffectiveCost", "reservation/ReservationARN", "reservation/UnusedAmortizedUpfrontFeeForBillingPeriod",
    "reservation/UnusedRecurringFee",
)  # fmt: skip


def load(source: AwsCurLegacySource, period: BillingPeriod) -> LoadResult:
    """The period's latest report (or the period's lines of plain CSV files) as FOCUS rows."""
    return concat_results(load_batches(source, period))


def load_batches(
    source: AwsCurLegacySource, period: BillingPeriod, batch_rows: int = BATCH_ROWS
) -> Iterator[LoadResult]:
    """The same, one ``LoadResult`` per ``batch_rows`` rows of each report file (bounded memory)."""
    report = Report.open(source)
    files, plain = report.files(period)
    kept = 0
    for location in files:
        with report.store.local_copy(location, missing=_MISSING_REPORT_FILE) as path:
            for result in map_file(
                source.name, location, path, period, dialect=LEGACY, batch_rows=batch_rows, only_period=plain
            ):
                kept += result.stats.get("rows", 0)
                yield _named_accounts(result)
    if plain and not kept:
        raise SourceError(
            source.name, source.path, f"no line item of billing period {period.key} in {len(files)} CSV file(s)",
            "plain CSV files must hold the period's lines (bill/BillingPeriodStartDate); check path",
        )  # fmt: skip


# FOCUS name column → the id column that names the account when the CUR has no name for it.
_NAME_FALLBACKS = {"BillingAccountName": "BillingAccountId", "SubAccountName": "SubAccountId"}


def _named_accounts(result: LoadResult) -> LoadResult:
    """Account names the legacy CUR does not carry, filled with the account ids (counted as repairs)."""
    frame = result.frame
    if frame.height == 0:
        return result
    repairs = dict(result.repairs)
    for name, account_id in _NAME_FALLBACKS.items():
        missing = pl.col(name).is_null() & pl.col(account_id).is_not_null()
        filled = int(frame.select(missing.sum()).item())
        if filled:
            repairs[f"filled_missing:{name}"] = repairs.get(f"filled_missing:{name}", 0) + filled
            frame = frame.with_columns(pl.when(missing).then(pl.col(account_id)).otherwise(pl.col(name)).alias(name))
    return replace(result, frame=frame, repairs=repairs)


def current_delivery(source: AwsCurLegacySource, period: BillingPeriod) -> Delivery | None:
    """The period's current report update (its manifest's ``assemblyId``), or None before the first one.

    Plain CSV files have no manifest: their delivery id is a digest of the files' versions."""
    report = Report.open(source)
    found = report.find_manifest(period)
    if found is not None:
        location, manifest = found
        assembly = manifest.get("assemblyId")
        delivery_id = assembly if isinstance(assembly, str) and assembly else report.store.fingerprint(location)
        return Delivery(period.key, delivery_id, location)
    files = [] if report.is_report_folder() else report.plain_files()
    if not files:
        return None
    digest = hashlib.sha256("\n".join(f"{f}@{report.store.fingerprint(f)}" for f in files).encode())
    return Delivery(period.key, digest.hexdigest()[:32], source.path)


# --- legacy headers → CUR 2.0 columns -----------------------------------------------------------------


def cur2_name(header: str) -> str:
    """``lineItem/UnblendedCost`` → ``line_item_unblended_cost``: every capital starts a snake-case word."""
    category, _, name = header.partition("/")
    return f"{_snake(category)}_{_snake(name)}"


def _snake(word: str) -> str:
    return re.sub(r"[A-Z]", lambda m: "_" + m.group().lower(), word).lstrip("_")


def _is_tag_column(header: str) -> bool:
    return header.startswith((TAG_PREFIX, COST_CATEGORY_PREFIX))


def _wanted(header: str) -> bool:
    return _is_tag_column(header) or ("/" in header and cur2_name(header) in USED_COLUMNS)


def _known(header: str) -> bool:
    return header.partition("/")[0] in KNOWN_CATEGORIES


def _present(header: list[str]) -> set[str]:
    return {cur2_name(h) for h in header if "/" in h and not _is_tag_column(h)}


def _spelling(column: str, header: list[str]) -> str:
    """How this file (else legacy CUR in general) spells a CUR 2.0 column."""
    in_file = next((h for h in header if "/" in h and cur2_name(h) == column), None)
    return in_file or _LEGACY_SPELLING.get(column, column)


def _prepare(frame: pl.DataFrame, header: list[str]) -> pl.DataFrame:
    """Rename to CUR 2.0 columns; tag and cost-category columns become the maps CUR 2.0 has."""
    tags = [c for c in frame.columns if c.startswith(TAG_PREFIX)]
    categories = [c for c in frame.columns if c.startswith(COST_CATEGORY_PREFIX)]
    renamed = frame.rename({c: cur2_name(c) for c in frame.columns if not _is_tag_column(c)})
    return renamed.with_columns(
        _entries(tags, TAG_PREFIX).alias("resource_tags"),
        _entries(categories, COST_CATEGORY_PREFIX).alias("cost_category"),
    ).drop(tags + categories)


def _entries(columns: list[str], prefix: str) -> pl.Expr:
    """Tag columns → key/value entries of the tags the line has (a blank cell: the resource lacks it)."""
    if not columns:
        return pl.lit([], dtype=KEY_VALUE)
    structs = [pl.struct(key=pl.lit(c[len(prefix) :]), value=pl.col(c).cast(pl.String)) for c in columns]
    value = pl.element().struct.field("value")
    return pl.concat_list(structs).list.eval(pl.element().filter(value.is_not_null() & (value != "")))


_LEGACY_SPELLING = {cur2_name(h): h for h in REQUIRED_HEADERS}
LEGACY = Dialect(
    name="legacy CUR", wanted=_wanted, known=_known, prepare=_prepare, spelling=_spelling, present=_present
)


# --- where the report lives ---------------------------------------------------------------------------


@dataclass
class Report:
    """A legacy CUR report folder (``s3://bucket/prefix/report-name`` or local), or plain CSV files."""

    source: str
    path: str
    store: Store

    @classmethod
    def open(cls, source: AwsCurLegacySource) -> Report:
        root = source.path if not _is_pattern(source.path) else str(Path(source.path).parent)
        return cls(source.name, source.path, Store.open(source.name, root, source.endpoint_url, source.region))

    @property
    def name(self) -> str:
        return self.store.root.rsplit("/", 1)[-1]

    def files(self, period: BillingPeriod) -> tuple[list[str], bool]:
        """The files to read for the period, and whether they are plain files (rows of any period)."""
        found = self.find_manifest(period)
        if found is not None:
            return self.report_files(*found, period), False
        if self.is_report_folder():
            self.manifest(period)  # raises: the report has no manifest for this period (yet)
        return self._plain_or_fail(), True

    def find_manifest(self, period: BillingPeriod) -> tuple[str, dict[str, Any]] | None:
        if _is_pattern(self.path) or self.path.lower().endswith(CSV_SUFFIXES):
            return None
        try:
            return self.manifest(period)
        except NoManifestError:
            return None

    def is_report_folder(self) -> bool:
        """Whether ``path`` holds ``yyyymmdd-yyyymmdd/`` folders (lists the tree: asked when a manifest is missing)."""
        if _is_pattern(self.path) or self.path.lower().endswith(CSV_SUFFIXES):
            return False
        return any(_RANGE_FOLDER.search(f[len(self.store.root) :]) for f in self.store.list())

    def _plain_or_fail(self) -> list[str]:
        files = self.plain_files()
        if not files:
            raise SourceError(
                self.source, self.path, "no CUR report folder and no .csv/.csv.gz files",
                "path must be s3://bucket/prefix/report-name (holding yyyymmdd-yyyymmdd/ folders) or CSV files",
            )  # fmt: skip
        return files

    def plain_files(self) -> list[str]:
        if _is_pattern(self.path):
            return sorted(f for f in glob.glob(self.path, recursive=True) if f.lower().endswith(CSV_SUFFIXES))
        if self.path.lower().endswith(CSV_SUFFIXES):
            return [self.path]
        return [f for f in self.store.list() if f.lower().endswith(CSV_SUFFIXES)]

    def manifest(self, period: BillingPeriod) -> tuple[str, dict[str, Any]]:
        """``<yyyymmdd-yyyymmdd>/<report>-Manifest.json`` (the range ends on the next month's 1st, or the
        month's last day as the guide's example writes it)."""
        candidates = [self.store.location(f"{folder}/{self.name}-Manifest.json") for folder in _range_folders(period)]
        if found := self.store.read_first(candidates):
            return found[0], self._parse_manifest(*found, period)
        raise NoManifestError(
            self.source, candidates[0], f"no legacy CUR manifest for billing period {period.key}",
            "AWS writes it with the period's first report; path must be the report folder (prefix/report-name)",
        )  # fmt: skip

    def _parse_manifest(self, location: str, content: bytes, period: BillingPeriod) -> dict[str, Any]:
        try:
            manifest = json.loads(content)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SourceError(self.source, location, f"manifest is not valid JSON ({exc})") from None
        keys = manifest.get("reportKeys") if isinstance(manifest, dict) else None
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise SourceError(self.source, location, "manifest field 'reportKeys' must be a list of object keys")
        start = (manifest.get("billingPeriod") or {}).get("start")
        if isinstance(start, str) and not start.startswith(f"{period.start:%Y%m%d}"):
            raise SourceError(self.source, location, f"manifest billingPeriod.start is {start}, expected {period.key}")
        return manifest

    def report_files(self, manifest_at: str, manifest: dict[str, Any], period: BillingPeriod) -> list[str]:
        """The manifest's report keys, located under this report folder by their date-range part."""
        files = []
        for key in manifest["reportKeys"]:
            match = _RANGE_FOLDER.search(key)
            if not match or match.group(2) != f"{period.start:%Y%m%d}":
                raise SourceError(
                    self.source, manifest_at, f"manifest reportKeys entry {key!r} is not in the {period.key} folder"
                )
            files.append(self.store.location(match.group(1)))
        return files


def _range_folders(period: BillingPeriod) -> list[str]:
    last_day = period.end - timedelta(days=1)
    return [f"{period.start:%Y%m%d}-{period.end:%Y%m%d}", f"{period.start:%Y%m%d}-{last_day:%Y%m%d}"]


def _is_pattern(path: str) -> bool:
    return not path.startswith("s3://") and any(ch in path for ch in "*?[")
