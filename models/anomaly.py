"""A simple, explainable cost anomaly detector (daily, on spend and on unit cost).

For each series and day: the baseline is the median of the same kind of day (weekday or
weekend) in the previous ``window`` days, since AI traffic is weekly-seasonal, and the spread
their median absolute deviation (floored at 5% of the baseline, so flat series don't flag
noise). A day is anomalous when its robust score passes ``score_threshold`` and the excess
passes both an absolute (USD) and a relative floor. Only increases are flagged: a drop in
spend is not an incident. Consecutive anomalous days of one series form one anomaly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import polars as pl

from models.config import AnomalyConfig

MAD_TO_SIGMA = 1.4826
SPREAD_FLOOR = 0.05

ANOMALY_SCHEMA: dict[str, pl.DataType] = {
    "anomaly_id": pl.String(),
    "series_id": pl.String(),
    "dimension": pl.String(),
    "dimension_value": pl.String(),
    "metric": pl.String(),
    "start_date": pl.Date(),
    "end_date": pl.Date(),
    "days": pl.Int64(),
    "actual": pl.Float64(),
    "expected": pl.Float64(),
    "impact_usd": pl.Float64(),
    "max_score": pl.Float64(),
    "drivers": pl.String(),
}


@dataclass(frozen=True)
class Series:
    dimension: str
    value: str
    metric: str  # spend | unit_cost

    @property
    def id(self) -> str:
        return f"{self.dimension}={self.value}/{self.metric}"


def _weekend(day: date) -> bool:
    return day.weekday() >= 5


def score_days(series: pl.DataFrame, config: AnomalyConfig, window: int = 28) -> pl.DataFrame:
    """Score each day of one series (columns ``date``, ``value``, ``volume``) against its trailing window.

    ``volume`` converts a unit-cost excess into dollars (excess × useful outputs); for spend it is 1.
    """
    rows = series.sort("date").to_dicts()
    out: list[dict[str, object]] = []
    for i, row in enumerate(rows):
        day: date = row["date"]
        history = [
            r["value"]
            for r in rows[:i]
            if r["value"] is not None and (day - r["date"]).days <= window and _weekend(r["date"]) == _weekend(day)
        ]
        if len(history) < config.min_history_days or row["value"] is None:
            continue
        hist = pl.Series(history)
        expected = float(hist.median())  # type: ignore[arg-type]
        mad = float((hist - expected).abs().median())  # type: ignore[arg-type]
        spread = max(MAD_TO_SIGMA * mad, SPREAD_FLOOR * abs(expected), 1e-9)
        actual = float(row["value"])
        score = (actual - expected) / spread
        impact = (actual - expected) * float(row["volume"] or 0)
        relative = (actual - expected) / expected if expected else float("inf")
        flagged = (
            score >= config.score_threshold
            and impact >= config.min_impact_usd
            and relative >= config.min_relative_change
        )
        out.append(
            {
                "date": row["date"],
                "actual": actual,
                "expected": expected,
                "score": score,
                "impact": impact,
                "flagged": flagged,
            }
        )
    schema = {
        "date": pl.Date,
        "actual": pl.Float64,
        "expected": pl.Float64,
        "score": pl.Float64,
        "impact": pl.Float64,
        "flagged": pl.Boolean,
    }
    return pl.DataFrame(out, schema=schema)


def group_runs(scored: pl.DataFrame, series: Series) -> list[dict[str, object]]:
    """Merge consecutive flagged days into one anomaly each, with total impact."""
    flagged = scored.filter(pl.col("flagged")).sort("date")
    runs: list[list[dict[str, object]]] = []
    for row in flagged.iter_rows(named=True):
        d: date = row["date"]
        if runs and (d - runs[-1][-1]["date"]).days == 1:  # type: ignore[operator]
            runs[-1].append(row)
        else:
            runs.append([row])
    anomalies = []
    for run in runs:
        start, end = run[0]["date"], run[-1]["date"]
        anomalies.append(
            {
                "anomaly_id": f"{series.id}@{start}",
                "series_id": series.id,
                "dimension": series.dimension,
                "dimension_value": series.value,
                "metric": series.metric,
                "start_date": start,
                "end_date": end,
                "days": len(run),
                "actual": sum(r["actual"] for r in run),  # type: ignore[misc]
                "expected": sum(r["expected"] for r in run),  # type: ignore[misc]
                "impact_usd": round(sum(r["impact"] for r in run), 2),  # type: ignore[misc]
                "max_score": round(max(r["score"] for r in run), 2),  # type: ignore[type-var]
            }
        )
    return anomalies


def rank_drivers(breakdown: pl.DataFrame, day: date, window_days: list[date], top: int = 3) -> list[dict[str, object]]:
    """Which child values (columns ``date``, ``child``, ``cost``) moved most on ``day`` vs the window's mean."""
    history = breakdown.filter(pl.col("date").is_in(window_days))
    days_seen = max(history["date"].n_unique(), 1)
    base = history.group_by("child").agg((pl.col("cost").sum() / days_seen).alias("expected"))
    today = breakdown.filter(pl.col("date") == day).group_by("child").agg(pl.col("cost").sum().alias("actual"))
    moved = (
        today.join(base, on="child", how="full", coalesce=True)
        .fill_null(0.0)
        .with_columns(delta=pl.col("actual") - pl.col("expected"))
        .sort("delta", descending=True)
        .head(top)
    )
    return [
        {
            "child": r["child"],
            "actual": round(r["actual"], 2),
            "expected": round(r["expected"], 2),
            "delta": round(r["delta"], 2),
        }
        for r in moved.iter_rows(named=True)
    ]
