"""The anomaly detector (models/anomaly.py): baseline, score and floors, runs, drivers, incidents, backtesting."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest

from models.anomaly import (
    Anomaly,
    Series,
    SeriesError,
    attach_drivers,
    baseline,
    complete_through,
    detect,
    detections,
    fold_incidents,
    group_runs,
    parse_series,
    rank_children,
    score_days,
)
from models.config import AnomalyConfig

MONDAY = date(2026, 1, 5)
CONFIG = AnomalyConfig()
# A working week that wobbles a little, and quiet weekends: the shape of a B2B feature's spend.
WEEK = [1000.0, 1020.0, 980.0, 1010.0, 990.0, 500.0, 480.0]


def days(n: int, start: date = MONDAY) -> list[date]:
    return [start + timedelta(days=i) for i in range(n)]


def weekly(n: int, changes: dict[int, float] | None = None, growth: float = 0.0) -> pl.DataFrame:
    """``n`` days of WEEK (× (1 + growth) per day), with day index → multiplier ``changes``."""
    values = [WEEK[i % 7] * (1 + growth) ** i * (changes or {}).get(i, 1.0) for i in range(n)]
    return pl.DataFrame({"date": days(n), "value": values, "volume": [1.0] * n})


def flagged_days(frame: pl.DataFrame, config: AnomalyConfig = CONFIG) -> list[int]:
    scored = score_days(frame, config)
    return [(d - MONDAY).days for d in scored.filter(pl.col("flagged"))["date"]]


def test_the_baseline_is_the_median_of_the_same_weekday_over_four_weeks() -> None:
    history = {d: WEEK[i % 7] for i, d in enumerate(days(35))}
    history[MONDAY + timedelta(days=14)] = 9_999.0  # an earlier incident on a Monday does not move the median
    base = baseline(history, MONDAY + timedelta(days=35), CONFIG)
    assert base is not None
    assert base.expected == 1000.0
    assert base.references == tuple(MONDAY + timedelta(days=k) for k in (7, 14, 21, 28))
    assert base.basis == "median of the same weekday, 4 weeks"


def test_short_history_falls_back_to_the_same_kind_of_day() -> None:
    history = {d: WEEK[i % 7] for i, d in enumerate(days(12))}  # Mon 5 .. Fri 16: one week and a half
    saturday = baseline(history, MONDAY + timedelta(days=12), CONFIG)
    assert saturday is None  # two earlier weekend days only: too few to score
    history |= {MONDAY + timedelta(days=12): 500.0, MONDAY + timedelta(days=13): 480.0}
    thursday = baseline(history, MONDAY + timedelta(days=17), CONFIG)  # 1 same weekday < 3: weekdays instead
    assert thursday is not None
    assert thursday.basis == "median of 10 earlier week days"
    assert thursday.expected == 1000.0  # median of 980, 990, 1000, 1000, 1010, 1010, 1020, 1020, 980, 990


def test_a_spike_is_flagged_on_its_day_only() -> None:
    assert flagged_days(weekly(56, {44: 1.8})) == [44]


def test_the_floors_hold_back_small_or_cheap_changes() -> None:
    assert flagged_days(weekly(56, {44: 1.25})) == []  # +25%: below the 30% relative floor
    cheap = weekly(56, {44: 1.8}).with_columns(pl.col("value") / 20)  # +$40 a day: below the $100 floor
    assert flagged_days(cheap) == []
    assert flagged_days(cheap, CONFIG.model_copy(update={"min_impact_usd": 30.0})) == [44]


def test_drops_growth_and_weekends_are_not_anomalies() -> None:
    assert flagged_days(weekly(56, {30: 0.2, 31: 0.1})) == []  # an outage: less spend is no incident
    assert flagged_days(weekly(120, growth=0.007)) == []  # ~23% a month, every month
    assert flagged_days(weekly(56)) == []


def test_consecutive_anomalous_days_are_one_anomaly_with_their_total_impact() -> None:
    scored = score_days(weekly(56, {43: 2.0, 44: 2.0, 45: 2.0, 50: 2.0}), CONFIG)
    runs = group_runs(scored, Series("feature", "chat", "spend"))
    assert [(a.start, a.end, len(a.days)) for a in runs] == [
        (MONDAY + timedelta(days=43), MONDAY + timedelta(days=45), 3),
        (MONDAY + timedelta(days=50), MONDAY + timedelta(days=50), 1),
    ]
    first = runs[0].row()
    assert first["anomaly_id"] == "feature=chat/spend@2026-02-17"
    assert first["actual"] == pytest.approx(2 * (1020 + 980 + 1010))
    assert first["impact_usd"] == pytest.approx(first["actual"] - first["expected"], abs=0.01)
    assert first["expected"] == pytest.approx(1020 + 980 + 1010, rel=0.02)


def unit_frames(outputs: list[float], spend: list[float]) -> tuple[pl.DataFrame, pl.DataFrame]:
    n = len(spend)
    parent = {"dimension": "feature", "value": "chat", "date": days(n)}
    spend_daily = pl.DataFrame(parent | {"spend": spend})
    unit_daily = pl.DataFrame(parent | {"unit": "useful output", "cost": spend, "quantity": outputs})
    return spend_daily, unit_daily


def test_unit_cost_tells_traffic_growth_from_each_output_getting_dearer() -> None:
    base = [WEEK[i % 7] for i in range(56)]
    outputs = [v * 100 for v in base]  # $0.01 per useful output
    # Day 44: twice the traffic at the same price. Day 51: a retry storm, twice the spend, fewer outputs.
    spend = [v * (2 if i in (44, 51) else 1) for i, v in enumerate(base)]
    outputs = [o * (2 if i == 44 else 0.8 if i == 51 else 1) for i, o in enumerate(outputs)]
    found = detect(*unit_frames(outputs, spend), CONFIG, through=MONDAY + timedelta(days=55))
    assert sorted((a.series.metric, (a.start - MONDAY).days) for a in found) == [
        ("spend", 44),
        ("spend", 51),
        ("unit_cost", 51),
    ]
    storm = next(a for a in found if a.series.metric == "unit_cost")
    assert storm.series.id == "feature=chat/unit_cost"
    assert storm.actual == pytest.approx(0.025)  # twice the cost for 80% of the outputs
    assert storm.impact_usd == pytest.approx((0.025 - storm.expected) * outputs[51])


def test_only_complete_days_are_scored() -> None:
    spend = [WEEK[i % 7] * (3 if i == 55 else 1) for i in range(56)]
    frames = unit_frames([0.0] * 56, spend)
    assert detect(*frames, CONFIG, through=MONDAY + timedelta(days=54)) == []
    assert [(a.start - MONDAY).days for a in detect(*frames, CONFIG, through=MONDAY + timedelta(days=55))] == [55]
    assert detect(*frames, CONFIG, through=None) == []  # no source has delivered anything


def test_a_day_is_complete_when_every_source_reached_the_next_midnight() -> None:
    latest = {
        "aws_cur": datetime(2026, 10, 18, 0, tzinfo=UTC),  # all of the 17th
        "openai": datetime(2026, 10, 19, 0, tzinfo=UTC),
        "otel": datetime(2026, 10, 17, 14, tzinfo=UTC),  # telemetry up to 14:00 on the 17th
    }
    assert complete_through(latest) == date(2026, 10, 16)
    assert complete_through({"aws_cur": datetime(2026, 10, 18, 0, tzinfo=UTC)}) == date(2026, 10, 17)
    assert complete_through({}) is None


def test_runs_that_start_before_the_month_are_kept_whole() -> None:
    spend = [WEEK[i % 7] * (2 if i in (54, 55, 56) else 1) for i in range(60)]
    frames = unit_frames([0.0] * 60, spend)
    month_start = MONDAY + timedelta(days=55)
    found = detect(*frames, CONFIG, through=MONDAY + timedelta(days=59), keep_from=month_start)
    assert [((a.start - MONDAY).days, len(a.days)) for a in found] == [(54, 3)]
    assert detect(*frames, CONFIG, through=MONDAY + timedelta(days=59), keep_from=MONDAY + timedelta(days=57)) == []


def test_children_are_ranked_by_their_rise_against_the_same_reference_days() -> None:
    day, refs = date(2026, 2, 16), (date(2026, 2, 2), date(2026, 2, 9))
    costs = {("gpt-4.1", refs[0]): 100.0, ("gpt-4.1", refs[1]): 120.0, ("gpt-4.1", day): 400.0,
             ("mini", refs[0]): 50.0, ("mini", refs[1]): 50.0, ("mini", day): 60.0,
             ("claude", refs[0]): 80.0, ("claude", refs[1]): 80.0, ("claude", day): 20.0}  # fmt: skip
    assert rank_children(costs, [day], {day: refs}, 3) == [
        {"child": "gpt-4.1", "actual": 400.0, "expected": 110.0, "delta": 290.0},
        {"child": "mini", "actual": 60.0, "expected": 50.0, "delta": 10.0},
    ]  # claude fell: not a driver


def anomaly(dimension: str, value: str, metric: str, day: date, impact: float) -> Anomaly:
    refs = tuple(day - timedelta(weeks=k) for k in (1, 2))
    return Anomaly(Series(dimension, value, metric), [day], 0.0, 0.0, impact, 9.0, "test", {day: refs})


def breakdown_rows(day: date) -> pl.DataFrame:
    refs = [day - timedelta(weeks=k) for k in (1, 2)]
    rows = []
    for d in [*refs, day]:
        storm = 300.0 if d == day else 0.0
        rows += [
            ("feature", "support_chat", "provider_service", "OpenAI / OpenAI API", d, 100.0 + storm),
            ("feature", "support_chat", "region", None, d, 100.0 + storm),
            ("feature", "support_chat", "model", "gpt-4.1", d, 100.0 + storm),
            ("provider_service", "OpenAI / OpenAI API", "feature", "support_chat", d, 100.0 + storm),
            ("provider_service", "OpenAI / OpenAI API", "feature", "search_rewrite", d, 50.0 + storm / 10),
            ("provider_service", "AWS / Amazon Elastic Compute Cloud", "feature", "idle", d, 900.0 + 4 * storm),
        ]
    return pl.DataFrame(rows, schema=["dimension", "value", "child_dimension", "child", "date", "cost"], orient="row")


def test_drivers_follow_the_dimension_order_and_skip_dimensions_without_values() -> None:
    day = date(2026, 10, 17)
    chat = anomaly("feature", "support_chat", "spend", day, 300.0)
    [with_drivers] = attach_drivers([chat], breakdown_rows(day), top=3)
    assert [(d["dimension"], d["child"], d["delta"]) for d in with_drivers.drivers] == [
        ("provider_service", "OpenAI / OpenAI API", 300.0),
        ("model", "gpt-4.1", 300.0),
    ]  # region: every charge is "(none)", nothing to tell
    assert with_drivers.drivers[1]["estimated"] is True


def test_a_provider_anomaly_explained_by_a_feature_is_one_incident() -> None:
    day = date(2026, 10, 17)
    found = attach_drivers(
        [
            anomaly("feature", "support_chat", "spend", day, 300.0),
            anomaly("provider_service", "OpenAI / OpenAI API", "spend", day, 330.0),
            anomaly("provider_service", "AWS / Amazon Elastic Compute Cloud", "spend", day, 1200.0),
        ],
        breakdown_rows(day),
        top=3,
    )
    kept = fold_incidents(found)
    assert [a.id for a in kept] == [
        "feature=support_chat/spend@2026-10-17",
        "provider_service=AWS / Amazon Elastic Compute Cloud/spend@2026-10-17",  # idle capacity: no feature owns it
    ]
    assert [r["series_id"] for r in kept[0].related] == ["provider_service=OpenAI / OpenAI API/spend"]
    assert json.loads(str(kept[0].row()["related"]))[0]["impact_usd"] == 330.0
    # A service whose rise is mostly someone else's is not folded into a small feature anomaly.
    small = anomaly("feature", "support_chat", "spend", day, 300.0)
    small.drivers = [{"dimension": "provider_service", "child": "OpenAI / OpenAI API", "delta": 100.0}]
    big = anomaly("provider_service", "OpenAI / OpenAI API", "spend", day, 900.0)
    assert len(fold_incidents([small, big])) == 2


# --- backtesting input ------------------------------------------------------------------------------------------


def test_series_csv_errors_name_the_file_line_and_column() -> None:
    header = "series_id,date,spend_usd,useful_outputs,model\n"
    with pytest.raises(SeriesError, match=r"^s\.csv: missing column\(s\) useful_outputs; the header must have"):
        parse_series("series_id,date,spend_usd\na,2026-01-01,1\n", "s.csv")
    cases = {
        "a,2026-01-01,10,5,m\na,2026-13-01,10,5,m\n": r"^s\.csv line 3, column date: expected a date like 2026-10-17, "
        r"got '2026-13-01'$",
        "a,2026-01-01,ten,5,m\n": r"^s\.csv line 2, column spend_usd: expected a number \(USD\), got 'ten'$",
        "a,2026-01-01,10,-5,m\n": r"^s\.csv line 2, column useful_outputs: expected a count ≥ 0 or empty, got '-5'$",
        ",2026-01-01,10,5,m\n": r"^s\.csv line 2, column series_id: expected a non-empty series id",
    }
    for body, message in cases.items():
        with pytest.raises(SeriesError, match=message):
            parse_series(header + body, "s.csv")
    ok = parse_series(header + "a,2026-01-01,10.5,,gpt\n", "s.csv")
    assert ok.row(0, named=True) | {"line": 2} == {
        "line": 2, "series_id": "a", "date": date(2026, 1, 1), "spend_usd": 10.5, "useful_outputs": None,
        "model": "gpt",
    }  # fmt: skip


def test_detections_name_the_day_metric_and_driving_dimension() -> None:
    rows = []
    for i, d in enumerate(days(56)):
        for model, share in (("gpt-4.1", 0.6), ("mini", 0.4)):
            storm = 1000.0 if (i == 44 and model == "gpt-4.1") else 0.0
            rows.append(("chat", d, WEEK[i % 7] * share + storm, WEEK[i % 7] * share * 100, model))
    series = pl.DataFrame(rows, schema=["series_id", "date", "spend_usd", "useful_outputs", "model"], orient="row")
    found = detections(series, CONFIG)
    assert found.columns == [
        "series_id", "date", "metric", "score", "expected", "actual", "impact_usd", "relative_change", "run_start",
        "basis", "drivers",
    ]  # fmt: skip
    assert found.select("series_id", "date", "metric", "drivers").rows() == [
        ("chat", MONDAY + timedelta(days=44), "spend", "model=gpt-4.1 +1000.00"),
        ("chat", MONDAY + timedelta(days=44), "unit_cost", "model=gpt-4.1 +1000.00"),
    ]
    spend = found.row(0, named=True)
    assert (spend["actual"], spend["expected"], spend["impact_usd"]) == (1980.0, 980.0, 1000.0)  # a Wednesday
