"""Cost anomaly detection: daily, explainable, on spend and on unit cost (pure: no I/O).

Baseline. AI traffic is weekly-seasonal, so a day is compared with the same weekday of the previous
``baseline_weeks`` weeks: expected = their median (one earlier incident among them does not move it). With
fewer than ``min_same_weekday`` of those (a short history, e.g. the first month), it is compared with the
same kind of day (weekday or weekend) of the previous ``fallback_window_days`` days instead. A growing
series runs above a baseline of past weeks: when the last ``noise_window_days`` days ran a median X% above
their own baselines, the expected value is raised by X% (``trend_adjust``; never lowered).

Score. The spread is the series' own noise: 1.4826 × the median absolute deviation of those recent days'
relative deviations (a robust standard deviation), at least ``spread_floor`` of the baseline; while fewer
than ``min_noise_days`` days were scored, the reference days' own MAD. score = excess / spread. A day is
anomalous when the score reaches ``score_threshold`` AND the excess costs at least ``min_impact_usd`` AND
actual is at least ``min_relative_change`` above expected. Only increases are flagged: a drop in spend is
not an incident.

Metrics. ``spend`` is the day's cost. ``unit_cost`` is cost per unit of useful output (a feature: per
useful output; a provider's service: per pricing unit, e.g. per 1M tokens or per hour): when spend rises
with unit cost flat, traffic grew; when unit cost rises, each output got dearer. A unit-cost excess is
priced at the day's volume (excess per unit × units).

Runs. Consecutive anomalous days of one series are one anomaly, identified by the series and its first
day, with the total impact; a re-run on restated data recomputes it under the same id.

Drivers. For each child dimension (provider/service, model, region, customer, line item, feature) the
children whose cost rose most over the anomaly's days, against the same reference days as the baseline.

Incidents. A provider/service anomaly is folded into the feature anomaly that explains it (same days, the
feature's top provider/service driver is that service and, for spend, its rise is at least half of the
service's) and listed under ``related``: one incident, one alert.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from statistics import median

import polars as pl

from models.config import AnomalyConfig

MAD_TO_SIGMA = 1.4826
FEATURE, PROVIDER_SERVICE = "feature", "provider_service"
SPEND, UNIT_COST = "spend", "unit_cost"
USEFUL_OUTPUT = "useful output"
# Driver dimensions, in the order they are listed (the first is the one a reader looks at first).
FEATURE_DRIVERS = (PROVIDER_SERVICE, "model", "region", "customer", "line_item")
SERVICE_DRIVERS = (FEATURE, "region", "line_item")
ESTIMATED_DRIVERS = ("model", "customer")  # cost split by the child's share of the feature's tokens that day
FOLD_SHARE = 0.5
NONE = "(none)"  # a child without a value (no region, no customer)

ANOMALY_SCHEMA: dict[str, pl.DataType] = {
    "anomaly_id": pl.String(),
    "series_id": pl.String(),
    "dimension": pl.String(),
    "dimension_value": pl.String(),
    "metric": pl.String(),
    "unit": pl.String(),
    "start_date": pl.Date(),
    "end_date": pl.Date(),
    "days": pl.Int64(),
    "actual": pl.Float64(),
    "expected": pl.Float64(),
    "impact_usd": pl.Float64(),
    "max_score": pl.Float64(),
    "relative_change": pl.Float64(),
    "basis": pl.String(),
    "drivers": pl.String(),
    "related": pl.String(),
}

SCORED_SCHEMA: dict[str, pl.DataType] = {
    "date": pl.Date(),
    "actual": pl.Float64(),
    "expected": pl.Float64(),
    "score": pl.Float64(),
    "impact": pl.Float64(),
    "relative": pl.Float64(),
    "volume": pl.Float64(),
    "flagged": pl.Boolean(),
    "basis": pl.String(),
    "references": pl.List(pl.Date()),
}


@dataclass(frozen=True)
class Series:
    """One daily series: a dimension's value (a feature, a provider's service) and a metric."""

    dimension: str
    value: str
    metric: str  # spend | unit_cost
    unit: str | None = None  # unit_cost: what one unit of output is

    @property
    def id(self) -> str:
        base = f"{self.dimension}={self.value}/{self.metric}"
        return f"{base}[{self.unit}]" if self.unit and self.dimension != FEATURE else base


@dataclass(frozen=True)
class Baseline:
    expected: float
    spread: float
    basis: str  # what the expected value is the median of, for the reader
    references: tuple[date, ...]


@dataclass
class Anomaly:
    """A run of consecutive anomalous days of one series."""

    series: Series
    days: list[date]
    actual: float
    expected: float
    impact_usd: float
    max_score: float
    basis: str
    references: dict[date, tuple[date, ...]]
    drivers: list[dict[str, object]] = field(default_factory=list)
    related: list[dict[str, object]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.series.id}@{self.start}"

    @property
    def start(self) -> date:
        return self.days[0]

    @property
    def end(self) -> date:
        return self.days[-1]

    def overlaps(self, other: Anomaly) -> bool:
        return self.start <= other.end and other.start <= self.end

    def row(self) -> dict[str, object]:
        return {
            "anomaly_id": self.id,
            "series_id": self.series.id,
            "dimension": self.series.dimension,
            "dimension_value": self.series.value,
            "metric": self.series.metric,
            "unit": self.series.unit,
            "start_date": self.start,
            "end_date": self.end,
            "days": len(self.days),
            "actual": self.actual,
            "expected": self.expected,
            "impact_usd": round(self.impact_usd, 2),
            "max_score": round(self.max_score, 2),
            "relative_change": round(self.actual / self.expected - 1, 4) if self.expected > 0 else None,
            "basis": self.basis,
            "drivers": json.dumps(self.drivers),
            "related": json.dumps(self.related, default=str),
        }


def complete_through(latest_end_by_source: Mapping[str, datetime]) -> date | None:
    """The last UTC day that every source has delivered in full: its data reaches the next midnight.

    ``latest_end_by_source``: per source, the end of its latest usage data (FOCUS ``ChargePeriodEnd`` of
    usage-based charges; the end of the latest telemetry hour). None: no source has data yet.
    """
    if not latest_end_by_source:
        return None
    return min(latest_end_by_source.values()).date() - timedelta(days=1)


def baseline(history: Mapping[date, float], day: date, config: AnomalyConfig) -> Baseline | None:
    """The expected value of ``day`` from earlier days (``history``: date → value); None if too few."""
    refs = [d for d in (day - timedelta(weeks=k) for k in range(1, config.baseline_weeks + 1)) if d in history]
    if len(refs) >= config.min_same_weekday:
        basis = f"median of the same weekday, {len(refs)} weeks"
    else:
        weekend = day.weekday() >= 5
        window = (day - timedelta(days=k) for k in range(1, config.fallback_window_days + 1))
        refs = [d for d in window if d in history and (d.weekday() >= 5) == weekend]
        if len(refs) < config.min_history_days:
            return None
        basis = f"median of {len(refs)} earlier {'weekend' if weekend else 'week'} days"
    values = [history[d] for d in refs]
    expected = median(values)
    mad = median(abs(v - expected) for v in values)
    spread = max(MAD_TO_SIGMA * mad, config.spread_floor * abs(expected), 1e-9)
    return Baseline(expected, spread, basis, tuple(sorted(refs)))


def score_days(series: pl.DataFrame, config: AnomalyConfig) -> pl.DataFrame:
    """Score every day of one series (columns ``date``, ``value``, ``volume``) against its baseline.

    ``volume`` prices an excess: 1 for spend, the day's units of output for unit cost. Days without a
    value, or without enough earlier days, are not scored. The spread is the series' own noise: the
    median absolute relative deviation of the previous ``noise_window_days`` days from their baselines
    (the reference days' own MAD while fewer than ``min_noise_days`` of those exist).
    """
    history: dict[date, float] = {}
    volumes: dict[date, float] = {}
    for day, value, volume in series.select("date", "value", "volume").sort("date").iter_rows():
        if value is not None:
            history[day] = float(value)
            volumes[day] = float(volume or 0)
    deviations: dict[date, float] = {}  # relative deviation of each scored day from its baseline
    rows = []
    for day, actual in history.items():
        base = baseline(history, day, config)  # it only looks back: later days never leak in
        if base is None:
            continue
        expected, relative_spread = base.expected, base.spread / base.expected if base.expected > 0 else math.inf
        basis = base.basis
        recent = [deviations[d] for d in (day - timedelta(days=k) for k in range(1, config.noise_window_days + 1))
                  if d in deviations]  # fmt: skip
        if len(recent) >= config.min_noise_days and expected > 0:
            typical = median(recent)
            if config.trend_adjust and typical > 0:  # running above its baseline lately: growth, not an incident
                expected *= 1 + typical
                basis += f", raised {typical:.0%} for the recent trend" if typical >= 0.005 else ""
            relative_spread = max(MAD_TO_SIGMA * median(abs(r - typical) for r in recent), config.spread_floor)
        if base.expected > 0:
            deviations[day] = actual / base.expected - 1
        excess = actual - expected
        impact = excess * volumes[day]
        relative = excess / expected if expected > 0 else (math.inf if excess > 0 else 0.0)
        score = excess / (relative_spread * expected) if expected > 0 else (excess / base.spread)
        flagged = (
            score >= config.score_threshold
            and impact >= config.min_impact_usd
            and relative >= config.min_relative_change
        )
        rows.append((day, actual, expected, score, impact, relative, volumes[day], flagged, basis, base.references))
    return pl.DataFrame(rows, schema=SCORED_SCHEMA, orient="row")


def group_runs(scored: pl.DataFrame, series: Series) -> list[Anomaly]:
    """Consecutive flagged days → one anomaly each, with totals (unit cost: volume-weighted means)."""
    runs: list[list[dict[str, object]]] = []
    for row in scored.filter(pl.col("flagged")).sort("date").iter_rows(named=True):
        if runs and (row["date"] - runs[-1][-1]["date"]).days == 1:  # type: ignore[operator]
            runs[-1].append(row)
        else:
            runs.append([row])
    return [_anomaly(run, series) for run in runs]


def _anomaly(run: list[dict[str, object]], series: Series) -> Anomaly:
    actual = sum(float(r["actual"]) for r in run)  # type: ignore[arg-type]
    expected = sum(float(r["expected"]) for r in run)  # type: ignore[arg-type]
    if series.metric == UNIT_COST:
        volume = sum(float(r["volume"]) for r in run) or 1.0  # type: ignore[arg-type]
        actual = sum(float(r["actual"]) * float(r["volume"]) for r in run) / volume  # type: ignore[arg-type]
        expected = sum(float(r["expected"]) * float(r["volume"]) for r in run) / volume  # type: ignore[arg-type]
    return Anomaly(
        series=series,
        days=[r["date"] for r in run],  # type: ignore[misc]
        actual=actual,
        expected=expected,
        impact_usd=sum(float(r["impact"]) for r in run),  # type: ignore[arg-type]
        max_score=max(float(r["score"]) for r in run),  # type: ignore[arg-type]
        basis=str(run[0]["basis"]),
        references={r["date"]: tuple(r["references"]) for r in run},  # type: ignore[arg-type, misc]
    )


def metric_frames(spend_daily: pl.DataFrame, unit_daily: pl.DataFrame) -> Iterable[tuple[Series, pl.DataFrame]]:
    """Every series to score, with its (date, value, volume) frame.

    ``spend_daily``: dimension, value, date, spend. ``unit_daily``: dimension, value, unit, date, cost,
    quantity (unit cost = cost / quantity on days with a positive quantity).
    """
    for (dimension, value), days in spend_daily.sort("dimension", "value").group_by(
        "dimension", "value", maintain_order=True
    ):
        frame = days.group_by("date").agg(value=pl.col("spend").cast(pl.Float64).sum()).with_columns(volume=1.0)
        yield Series(str(dimension), str(value), SPEND), frame
    for (dimension, value, unit), days in unit_daily.sort("dimension", "value", "unit").group_by(
        "dimension", "value", "unit", maintain_order=True
    ):
        frame = (
            days.group_by("date")
            .agg(cost=pl.col("cost").cast(pl.Float64).sum(), volume=pl.col("quantity").cast(pl.Float64).sum())
            .select(
                "date", value=pl.when(pl.col("volume") > 0).then(pl.col("cost") / pl.col("volume")), volume="volume"
            )
        )
        yield Series(str(dimension), str(value), UNIT_COST, str(unit)), frame


def detect(
    spend_daily: pl.DataFrame,
    unit_daily: pl.DataFrame,
    config: AnomalyConfig,
    *,
    through: date | None,
    keep_from: date | None = None,
    keep_to: date | None = None,
) -> list[Anomaly]:
    """Anomalies of every series, scored on complete days only (up to ``through``; None: none complete).

    Runs that touch [``keep_from``, ``keep_to``] are kept, whole (a run may begin before the period).
    """
    if through is None:
        return []
    found = []
    for series, frame in metric_frames(spend_daily, unit_daily):
        for anomaly in group_runs(score_days(frame.filter(pl.col("date") <= through), config), series):
            if (keep_to is None or anomaly.start <= keep_to) and (keep_from is None or anomaly.end >= keep_from):
                found.append(anomaly)
    return found


def rank_children(
    costs: Mapping[tuple[str, date], float], days: list[date], references: Mapping[date, tuple[date, ...]], top: int
) -> list[dict[str, object]]:
    """Children (``costs``: (child, date) → cost) whose cost rose most over ``days`` vs their reference days."""
    children = sorted({child for child, _ in costs})
    ranked = []
    for child in children:
        actual = sum(costs.get((child, d), 0.0) for d in days)
        expected = sum(
            median(costs.get((child, r), 0.0) for r in references[d]) if references.get(d) else 0.0 for d in days
        )
        ranked.append({"child": child, "actual": round(actual, 2), "expected": round(expected, 2),
                       "delta": round(actual - expected, 2)})  # fmt: skip
    ranked.sort(key=lambda r: (-r["delta"], r["child"]))  # type: ignore[operator]
    return [r for r in ranked if r["delta"] > 0][:top]  # type: ignore[operator]


def attach_drivers(anomalies: list[Anomaly], breakdown: pl.DataFrame, top: int) -> list[Anomaly]:
    """Drivers per child dimension for each anomaly.

    ``breakdown``: dimension, value (the parent, e.g. feature / support_chat), child_dimension, child, date,
    cost. Dimensions are listed in FEATURE_DRIVERS / SERVICE_DRIVERS order.
    """
    index: dict[tuple[str, str, str], dict[tuple[str, date], float]] = {}
    for dimension, value, child_dimension, child, day, cost in breakdown.select(
        "dimension", "value", "child_dimension", "child", "date", pl.col("cost").cast(pl.Float64)
    ).iter_rows():
        costs = index.setdefault((dimension, value, child_dimension), {})
        key = (child or NONE, day)
        costs[key] = costs.get(key, 0.0) + (cost or 0.0)
    out = []
    for anomaly in anomalies:
        s = anomaly.series
        order = FEATURE_DRIVERS if s.dimension == FEATURE else SERVICE_DRIVERS
        drivers = []
        for child_dimension in order:
            costs = index.get((s.dimension, s.value, child_dimension), {})
            if {child for child, _ in costs} <= {NONE}:  # e.g. no region at all: nothing to tell
                continue
            for ranked in rank_children(costs, anomaly.days, anomaly.references, top):
                estimated = {"estimated": True} if child_dimension in ESTIMATED_DRIVERS else {}
                drivers.append({"dimension": child_dimension, **ranked, **estimated})
        out.append(replace(anomaly, drivers=drivers))
    return out


def fold_incidents(anomalies: list[Anomaly]) -> list[Anomaly]:
    """Fold each provider/service anomaly into the feature anomaly that explains it (see module docstring)."""
    features = [a for a in anomalies if a.series.dimension == FEATURE]
    kept = []
    for anomaly in anomalies:
        if anomaly.series.dimension != PROVIDER_SERVICE:
            kept.append(anomaly)
            continue
        owner = _explaining_feature(anomaly, features)
        if owner is None:
            kept.append(anomaly)
        else:
            owner.related.append(
                {
                    "anomaly_id": anomaly.id,
                    "series_id": anomaly.series.id,
                    "start_date": str(anomaly.start),
                    "end_date": str(anomaly.end),
                    "impact_usd": round(anomaly.impact_usd, 2),
                }
            )
    return kept


def _explaining_feature(service: Anomaly, features: list[Anomaly]) -> Anomaly | None:
    candidates = []
    for feature in features:
        top = next((d for d in feature.drivers if d["dimension"] == PROVIDER_SERVICE), None)
        if top is not None and top["child"] == service.series.value and feature.overlaps(service):
            candidates.append((feature, float(top["delta"])))  # type: ignore[arg-type]
    if not candidates:
        return None
    if service.series.metric == SPEND:
        # Each feature's rise is counted once, whichever of its metrics found it.
        rise = sum({f.series.value: delta for f, delta in candidates}.values())
        if rise < FOLD_SHARE * service.impact_usd:
            return None
    candidates.sort(key=lambda c: (c[0].series.metric != SPEND, -c[1], c[0].series.value))
    return candidates[0][0]


def anomaly_frame(anomalies: list[Anomaly]) -> pl.DataFrame:
    return pl.DataFrame([a.row() for a in anomalies], schema=ANOMALY_SCHEMA)


def scored_series(frame: pl.DataFrame, config: AnomalyConfig) -> pl.DataFrame:
    """Backtesting: every scored day of one series (columns date, spend_usd, useful_outputs), both metrics.

    Returns metric, date, actual, expected, score, impact, relative, flagged, basis, references, run_start.
    """
    daily = frame.group_by("date").agg(
        spend=pl.col("spend_usd").cast(pl.Float64).sum(), outputs=pl.col("useful_outputs").cast(pl.Float64).sum()
    )
    metrics = {
        SPEND: daily.select("date", value="spend", volume=pl.lit(1.0)),
        UNIT_COST: daily.select(
            "date", value=pl.when(pl.col("outputs") > 0).then(pl.col("spend") / pl.col("outputs")), volume="outputs"
        ),
    }
    parts = []
    for metric, series_frame in metrics.items():
        scored = score_days(series_frame, config)
        starts = {day: run.start for run in group_runs(scored, Series("series", "", metric)) for day in run.days}
        parts.append(
            scored.with_columns(
                metric=pl.lit(metric),
                run_start=pl.col("date").replace_strict(starts, default=None, return_dtype=pl.Date),
            )
        )
    return pl.concat(parts)


# --- backtesting: daily series from a CSV (``cogs detect``) ------------------------------------------------

SERIES_COLUMNS = ("series_id", "date", "spend_usd", "useful_outputs")
DETECTION_COLUMNS = (
    "series_id",
    "date",
    "metric",
    "score",
    "expected",
    "actual",
    "impact_usd",
    "relative_change",
    "run_start",
    "basis",
    "drivers",
)


class SeriesError(ValueError):
    """The series CSV is unusable; the message names the file, the line and the column."""


def parse_series(text: str, origin: str) -> pl.DataFrame:
    """Validate a series CSV (SERIES_COLUMNS plus any dimension columns); line 1 is the header.

    Returns series_id, date, spend_usd (float), useful_outputs (float, null when empty), the dimension
    columns (strings) and ``line``. Rows of one series and date are summed later (e.g. one row per model).
    """
    try:
        raw = pl.read_csv(text.encode(), infer_schema=False)
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError) as exc:
        raise SeriesError(f"{origin}: not a readable CSV file: {str(exc).splitlines()[0]}") from None
    missing = [c for c in SERIES_COLUMNS if c not in raw.columns]
    if missing:
        raise SeriesError(
            f"{origin}: missing column(s) {', '.join(missing)}; the header must have {', '.join(SERIES_COLUMNS)} "
            f"(plus any dimension columns), got {', '.join(raw.columns) or 'nothing'}"
        )
    raw = raw.with_row_index("line", offset=2).with_columns(pl.col(c).str.strip_chars() for c in SERIES_COLUMNS)
    parsed = raw.with_columns(
        date=pl.col("date").str.strptime(pl.Date, "%Y-%m-%d", strict=False),
        spend_usd=pl.col("spend_usd").cast(pl.Float64, strict=False),
        useful_outputs=pl.col("useful_outputs").cast(pl.Float64, strict=False),
    )
    checks = (
        ("series_id", raw["series_id"].is_null() | (raw["series_id"] == ""), "a non-empty series id"),
        ("date", parsed["date"].is_null(), "a date like 2026-10-17"),
        ("spend_usd", parsed["spend_usd"].is_null() | parsed["spend_usd"].is_nan(), "a number (USD)"),
        (
            "useful_outputs",
            (raw["useful_outputs"].is_not_null() & (raw["useful_outputs"] != ""))
            & (parsed["useful_outputs"].is_null() | (parsed["useful_outputs"] < 0)),
            "a count ≥ 0 or empty",
        ),
    )
    for column, bad, expected in checks:
        if bad.any():
            row = raw.filter(bad).row(0, named=True)
            raise SeriesError(f"{origin} line {row['line']}, column {column}: expected {expected}, got {row[column]!r}")
    return parsed


def detections(series: pl.DataFrame, config: AnomalyConfig) -> pl.DataFrame:
    """One row per flagged day and metric of every series (DETECTION_COLUMNS), from ``parse_series`` output.

    ``drivers``: per dimension column, the values whose spend rose most over the baseline's reference days.
    """
    dimensions = [c for c in series.columns if c not in (*SERIES_COLUMNS, "line")]
    parts = []
    for (series_id,), rows in series.sort("series_id").group_by("series_id", maintain_order=True):
        scored = scored_series(rows, config).filter(pl.col("flagged"))
        if scored.is_empty():
            continue
        costs = {
            dim: {
                (child, day): float(spend)
                for child, day, spend in rows.group_by(pl.col(dim).fill_null(NONE), "date")
                .agg(pl.col("spend_usd").sum())
                .iter_rows()
            }
            for dim in dimensions
        }
        drivers = [
            "; ".join(
                f"{dim}={r['child']} +{r['delta']:.2f}"
                for dim in dimensions
                for r in rank_children(costs[dim], [day], {day: tuple(refs)}, 1)
            )
            for day, refs in scored.select("date", "references").iter_rows()
        ]
        parts.append(scored.with_columns(series_id=pl.lit(series_id), drivers=pl.Series(drivers, dtype=pl.String)))
    if not parts:
        return pl.DataFrame(schema=dict.fromkeys(DETECTION_COLUMNS, pl.String()))
    return (
        pl.concat(parts)
        .select(
            "series_id",
            "date",
            "metric",
            pl.col("score").round(2),
            pl.col("expected").round(6),
            pl.col("actual").round(6),
            pl.col("impact").round(2).alias("impact_usd"),
            pl.col("relative").round(4).alias("relative_change"),
            "run_start",
            "basis",
            "drivers",
        )
        .sort("series_id", "date", "metric")
    )
