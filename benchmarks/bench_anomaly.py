"""Benchmark: detection quality of the anomaly detector on labelled daily series, against naive detectors.

The series (deterministic for a seed; ``--write DIR`` saves them as ``series.csv`` for ``cogs detect`` and
``labels.csv``): one year of daily spend and useful outputs per series, built as traffic × unit cost with

- a level from $150 to $20,000 a day and a unit cost from $0.0005 to $0.2 per useful output;
- weekly seasonality (weekends at 25-100% of a weekday) and a trend of -5% to +25% a month;
- multiplicative log-normal noise on traffic (3-15%) and on unit cost (1-6%);
- holidays (fixed dates; traffic at 30-70%): normal, never labelled;
- benign level shifts in traffic (a customer leaves or a launch lands, ±10-25%): normal, never labelled.

Labelled anomalies (0-3 per series, ~15% of series have none), each with the metrics it moves:

- ``spike``: one day of traffic × (1 + size): spend.
- ``retry_storm``: 1-2 days of spend × (1 + size) while useful outputs drop 10-40%: spend and unit cost.
- ``runaway``: 3-6 days of extra cost with no extra output (a stuck batch job): spend and unit cost.
- ``ramp``: unit cost climbs linearly over 7-14 days to × (1 + size), holds 5 days, then is fixed.
- ``price_step``: unit cost × (1 + size) from one day on (a model or price change): unit cost and spend.
- ``traffic_step``: traffic × (1 + size) from one day on (a big customer): spend.

Sizes run from +15% (below the default 30% floor on purpose) to +400%. An anomaly is *material* when its
peak daily excess is at least the detector's floors ($100 and 30%): recall is given for all and for those.

Scoring, per run of consecutive flagged days of a series and metric (one alert each):
- a run is a true positive when it overlaps a labelled anomaly of that series and metric, or follows a
  step within 21 days (the baseline takes ~3 weeks to learn a new level); otherwise a false positive;
- an anomaly is recalled when a run of one of its metrics overlaps its labelled days (a step: its first 7).

Contenders on the same series: ``ours`` (models.anomaly, default settings), ``zscore`` (trailing 28-day
mean and standard deviation, z ≥ 3) and ``static`` (+50% over the trailing 7-day mean); both naive ones
get the same $100 floor so that the comparison is about the baseline, not the floor.

Usage: ``python benchmarks/bench_anomaly.py [--series 400] [--seed 11] [--write benchmarks/labelled]``.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import polars as pl  # noqa: E402

from models.anomaly import detections  # noqa: E402
from models.config import AnomalyConfig  # noqa: E402

START = date(2025, 1, 6)  # a Monday
DAYS = 364
HOLIDAYS = [date(2025, 1, 1), date(2025, 4, 18), date(2025, 4, 21), date(2025, 5, 26), date(2025, 7, 4),
            date(2025, 9, 1), date(2025, 11, 27), date(2025, 11, 28), date(2025, 12, 24), date(2025, 12, 25),
            date(2025, 12, 26), date(2025, 12, 31)]  # fmt: skip
KINDS = ("spike", "retry_storm", "runaway", "ramp", "price_step", "traffic_step")
METRICS = {
    "spike": ("spend",),
    "retry_storm": ("spend", "unit_cost"),
    "runaway": ("spend", "unit_cost"),
    "ramp": ("unit_cost", "spend"),
    "price_step": ("unit_cost", "spend"),
    "traffic_step": ("spend",),
}
STEPS = ("price_step", "traffic_step")
STEP_LABEL_DAYS = 7
ADAPT_DAYS = 21
MIN_IMPACT, MIN_RELATIVE = 100.0, 0.3
PARAMS: dict[str, dict[str, float]] = {}  # per series: how it was generated (for looking into errors)


@dataclass(frozen=True)
class Label:
    series_id: str
    kind: str
    start: date
    end: date  # last labelled day
    size: float
    peak_excess_usd: float

    @property
    def material(self) -> bool:
        return self.peak_excess_usd >= MIN_IMPACT and self.size >= MIN_RELATIVE

    @property
    def size_bucket(self) -> str:
        return "<30%" if self.size < 0.3 else "30-100%" if self.size <= 1.0 else ">100%"

    def attributable(self, day: date) -> bool:
        """Whether a detection on ``day`` belongs to this anomaly (a step is learnt over ADAPT_DAYS)."""
        tail = ADAPT_DAYS if self.kind in STEPS else 2
        return self.start <= day <= self.end + timedelta(days=tail)


def generate(n_series: int, seed: int) -> tuple[pl.DataFrame, list[Label]]:
    """The labelled series: a frame (series_id, date, spend_usd, useful_outputs) and their labels."""
    rng = random.Random(seed)
    rows: list[tuple[str, date, float, float]] = []
    labels: list[Label] = []
    for i in range(n_series):
        series_rows, series_labels = _one_series(f"s{i:04d}", rng)
        rows += series_rows
        labels += series_labels
    frame = pl.DataFrame(rows, schema=["series_id", "date", "spend_usd", "useful_outputs"], orient="row")
    return frame, labels


def _one_series(series_id: str, rng: random.Random) -> tuple[list[tuple[str, date, float, float]], list[Label]]:
    level = math.exp(rng.uniform(math.log(150), math.log(20_000)))
    unit = math.exp(rng.uniform(math.log(0.0005), math.log(0.2)))
    weekend = rng.uniform(0.25, 1.0)
    growth = rng.uniform(-0.05, 0.25) / 30
    traffic_noise, unit_noise = rng.uniform(0.03, 0.15), rng.uniform(0.01, 0.06)
    holiday_depth = rng.uniform(0.3, 0.7)
    PARAMS[series_id] = {"level": level, "weekend": weekend, "growth": growth * 30, "noise": traffic_noise}
    traffic_mult = [1.0] * DAYS
    unit_mult = [1.0] * DAYS
    extra_cost = [0.0] * DAYS
    output_mult = [1.0] * DAYS
    for _ in range(rng.choice([0, 0, 1, 1, 2])):  # benign shifts in traffic, never labelled
        day = rng.randrange(60, DAYS)
        shift = 1 + rng.choice([-1, 1]) * rng.uniform(0.10, 0.25)
        for d in range(day, DAYS):
            traffic_mult[d] *= shift
    planned = []
    for _ in range(rng.choice([0, 1, 1, 2, 2, 3, 3])):
        kind = rng.choice(KINDS)
        start = rng.randrange(49, DAYS - 25)  # seven weeks of history first; room for the anomaly after
        if any(abs(start - other) < 30 for other, _ in planned):
            continue  # one anomaly at a time, so each label is judged on its own
        planned.append((start, kind))
    labels = []
    expected_spend = [_expected_spend(level, weekend, growth, d, holiday_depth) for d in range(DAYS)]
    for start, kind in sorted(planned):
        size = math.exp(rng.uniform(math.log(0.15), math.log(4.0)))
        if kind in ("price_step", "ramp", "traffic_step"):
            size = min(size, 1.5)  # a permanent change of +400% is not plausible
        before = [e * t * u + x for e, t, u, x in zip(expected_spend, traffic_mult, unit_mult, extra_cost, strict=True)]
        end = _plant(kind, start, size, rng, traffic_mult, unit_mult, extra_cost, output_mult, expected_spend)
        peak = max(
            expected_spend[d] * traffic_mult[d] * unit_mult[d] + extra_cost[d] - before[d]
            for d in range(start, end + 1)
        )
        labels.append(Label(series_id, kind, START + timedelta(start), START + timedelta(end), size, peak))
    rows = []
    for d in range(DAYS):
        traffic = expected_spend[d] / unit * traffic_mult[d] * math.exp(rng.gauss(0, traffic_noise))
        price = unit * unit_mult[d] * math.exp(rng.gauss(0, unit_noise))
        outputs = traffic * output_mult[d]
        spend = traffic * price + extra_cost[d]
        rows.append((series_id, START + timedelta(d), round(spend, 2), float(round(outputs))))
    return rows, labels


def _expected_spend(level: float, weekend: float, growth: float, d: int, holiday_depth: float) -> float:
    day = START + timedelta(d)
    value = level * (1 + growth) ** d * (weekend if day.weekday() >= 5 else 1.0)
    return value * holiday_depth if day in HOLIDAYS else value


def _plant(
    kind: str,
    start: int,
    size: float,
    rng: random.Random,
    traffic: list[float],
    unit: list[float],
    extra: list[float],
    outputs: list[float],
    spend: list[float],
) -> int:
    """Change the multipliers for one anomaly; returns its last labelled day (index)."""
    if kind == "spike":
        traffic[start] *= 1 + size
        return start
    if kind == "retry_storm":
        days = rng.choice([1, 2])
        for d in range(start, start + days):
            drop = rng.uniform(0.1, 0.4)  # failed requests: spend up, useful outputs down
            extra[d] += spend[d] * traffic[d] * size
            outputs[d] *= 1 - drop
        return start + days - 1
    if kind == "runaway":
        days = rng.randint(3, 6)
        for d in range(start, start + days):
            extra[d] += spend[d] * traffic[d] * size
        return start + days - 1
    if kind == "ramp":
        climb = rng.randint(7, 14)
        for d in range(start, start + climb + 5):
            unit[d] *= 1 + size * min(1.0, (d - start + 1) / climb)
        return start + climb + 4
    if kind == "price_step":
        for d in range(start, DAYS):
            unit[d] *= 1 + size
        return start + STEP_LABEL_DAYS - 1
    for d in range(start, DAYS):  # traffic_step
        traffic[d] *= 1 + size
    return start + STEP_LABEL_DAYS - 1


# --- contenders: each returns runs (series_id, metric, first day, last day) -----------------------------

Run = tuple[str, str, date, date]


def ours(frame: pl.DataFrame) -> list[Run]:
    found = detections(frame, AnomalyConfig())
    return _runs((r["series_id"], r["metric"], r["date"]) for r in found.iter_rows(named=True))


def naive(frame: pl.DataFrame, flag: Callable[[list[float], int, float], bool]) -> list[Run]:
    """Day-level flags from ``flag(history, index, volume)`` on both metrics, grouped into runs."""
    flagged = []
    for (series_id,), rows in frame.sort("series_id", "date").group_by("series_id", maintain_order=True):
        days, spend, outputs = rows["date"].to_list(), rows["spend_usd"].to_list(), rows["useful_outputs"].to_list()
        unit = [s / o if o else math.nan for s, o in zip(spend, outputs, strict=True)]
        for metric, values, volumes in (("spend", spend, [1.0] * len(spend)), ("unit_cost", unit, outputs)):
            flagged += [(series_id, metric, days[i]) for i in range(len(values)) if flag(values, i, volumes[i])]
    return _runs(flagged)


def zscore(values: list[float], i: int, volume: float) -> bool:
    window = [v for v in values[max(0, i - 28) : i] if not math.isnan(v)]
    if len(window) < 14 or math.isnan(values[i]):
        return False
    mean, std = statistics.fmean(window), statistics.pstdev(window)
    excess = values[i] - mean
    return std > 0 and excess / std >= 3 and excess * volume >= MIN_IMPACT


def static(values: list[float], i: int, volume: float) -> bool:
    window = [v for v in values[max(0, i - 7) : i] if not math.isnan(v)]
    if len(window) < 7 or math.isnan(values[i]):
        return False
    mean = statistics.fmean(window)
    return values[i] >= 1.5 * mean and (values[i] - mean) * volume >= MIN_IMPACT


def _runs(days: Iterable[tuple[str, str, date]]) -> list[Run]:
    runs: list[Run] = []
    for series_id, metric, day in sorted(days):
        last = runs[-1] if runs else None
        if last and last[:2] == (series_id, metric) and (day - last[3]).days == 1:
            runs[-1] = (series_id, metric, last[2], day)
        else:
            runs.append((series_id, metric, day, day))
    return runs


# --- scoring -----------------------------------------------------------------------------------------------


@dataclass
class Score:
    runs: int
    true_runs: int
    recalled: dict[str, list[bool]]  # bucket → one bool per label
    false_after_holiday: int

    @property
    def precision(self) -> float:
        return self.true_runs / self.runs if self.runs else 1.0


def score(runs: list[Run], labels: list[Label]) -> Score:
    by_series: dict[str, list[Label]] = defaultdict(list)
    for label in labels:
        by_series[label.series_id].append(label)
    true_runs = after_holiday = 0
    for series_id, metric, first, last in runs:
        days = [first + timedelta(k) for k in range((last - first).days + 1)]
        if any(metric in METRICS[lab.kind] and any(lab.attributable(d) for d in days) for lab in by_series[series_id]):
            true_runs += 1
        elif any(0 <= (first - h).days <= 7 for h in HOLIDAYS):
            after_holiday += 1
    recalled: dict[str, list[bool]] = defaultdict(list)
    for label in labels:
        hit = any(
            s == label.series_id and m in METRICS[label.kind] and first <= label.end and last >= label.start
            for s, m, first, last in runs
        )
        material = [f"material {b}" for b in ("all", label.kind)] if label.material else []
        for bucket in ("all", f"kind {label.kind}", f"size {label.size_bucket}", *material):
            recalled[bucket].append(hit)
    return Score(len(runs), true_runs, recalled, after_holiday)


def report(results: dict[str, tuple[Score, float]], labels: list[Label], n_series: int) -> str:
    names = list(results)
    lines = [
        f"{n_series} series × {DAYS} days, {len(labels)} labelled anomalies "
        f"({sum(lab.material for lab in labels)} material: peak daily excess ≥ ${MIN_IMPACT:.0f} and ≥ 30%)",
        "",
        f"{'':<38}" + "".join(f"{n:>10}" for n in names),
        f"{'alerts (runs)':<38}" + "".join(f"{results[n][0].runs:>10}" for n in names),
        f"{'precision':<38}" + "".join(f"{results[n][0].precision:>10.3f}" for n in names),
    ]
    buckets = ["all", *(f"kind {k}" for k in KINDS), "size <30%", "size 30-100%", "size >100%", "material all",
               *(f"material {k}" for k in KINDS)]  # fmt: skip
    for bucket in buckets:
        cells = []
        for n in names:
            hits = results[n][0].recalled.get(bucket, [])
            cells.append(f"{sum(hits) / len(hits):.3f}" if hits else "—")
        count = len(results[names[0]][0].recalled.get(bucket, []))
        lines.append(f"{f'recall {bucket} (n={count})':<38}" + "".join(f"{c:>10}" for c in cells))
    holiday = "".join(f"{results[n][0].false_after_holiday:>10}" for n in names)
    lines.append(f"{'false alerts ≤7 days after a holiday':<38}{holiday}")
    lines.append(f"{'seconds':<38}" + "".join(f"{results[n][1]:>10.1f}" for n in names))
    return "\n".join(lines)


def write(frame: pl.DataFrame, labels: list[Label], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    frame.with_columns(pl.col("useful_outputs").cast(pl.Int64)).write_csv(folder / "series.csv")
    pl.DataFrame(
        [(lab.series_id, lab.kind, lab.start, lab.end, round(lab.size, 4), lab.material) for lab in labels],
        schema=["series_id", "kind", "start", "end", "size", "material"],
        orient="row",
    ).write_csv(folder / "labels.csv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=400, help="how many series (default 400)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--write", type=Path, help="also write series.csv and labels.csv to this folder")
    args = parser.parse_args()
    frame, labels = generate(args.series, args.seed)
    if args.write:
        write(frame, labels, args.write)
    results: dict[str, tuple[Score, float]] = {}
    for name, contender in (
        ("ours", ours),
        ("zscore", lambda f: naive(f, zscore)),
        ("static", lambda f: naive(f, static)),
    ):
        began = time.perf_counter()
        runs = contender(frame)
        results[name] = (score(runs, labels), time.perf_counter() - began)
    print(report(results, labels, args.series))


if __name__ == "__main__":
    main()
