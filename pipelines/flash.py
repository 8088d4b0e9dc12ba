"""The weekly flash: week-over-week spend and unit cost per feature, and the lines that moved most.

A week is Monday to Sunday (UTC days) and is compared with the week before; weeks cross month
boundaries, so the flash reads the marts by date, not by billing period. Spend is amortized cost
(EffectiveCost, every class); the unit cost is COGS per useful output, as in the close pack.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl
from matplotlib.figure import Figure
from rich.table import Table

from models.config import CogsConfig
from pipelines.report import SPECIAL, _colors, _stacked_bars, _svg, money_text, template_env
from pipelines.warehouse import Warehouse

UNIT_PLACES = Decimal("1e-12")
WEEK = timedelta(days=7)


def week_start(day: date) -> date:
    """The Monday of ``day``'s week."""
    return day - timedelta(days=day.weekday())


def last_complete_week(today: date) -> date:
    """The Monday of the last week that ended before ``today``."""
    return week_start(today) - WEEK


def week_label(monday: date) -> str:
    iso = monday.isocalendar()
    return f"{iso.year}-W{iso.week:02d}"


@dataclass
class Flash:
    """One week against the week before: per feature, the top movers, and the days behind them."""

    week: date
    features: pl.DataFrame
    movers: pl.DataFrame
    daily: pl.DataFrame
    days: int
    previous_days: int
    currency: str = "USD"

    @property
    def label(self) -> str:
        return week_label(self.week)

    @property
    def period(self) -> str:
        return f"{self.week:%Y-%m-%d} to {self.week + timedelta(days=6):%Y-%m-%d}"

    def total(self, column: str) -> Decimal:
        return Decimal(self.features[column].sum() or 0) if self.features.height else Decimal(0)

    @property
    def complete(self) -> bool:
        return self.days == 7 and self.previous_days == 7


def _change(now: Decimal | None, before: Decimal | None) -> float | None:
    if now is None or not before:
        return None
    return float(now / before - 1)


def _unit(cogs: Decimal, outputs: int) -> Decimal | None:
    return (cogs / outputs).quantize(UNIT_PLACES) if outputs else None


FEATURE_SCHEMA = {
    "feature": pl.String,
    "previous_spend": pl.Decimal(38, 12),
    "spend": pl.Decimal(38, 12),
    "spend_change": pl.Decimal(38, 12),
    "spend_change_pct": pl.Float64,
    "cogs": pl.Decimal(38, 12),
    "previous_useful_outputs": pl.Int64,
    "useful_outputs": pl.Int64,
    "previous_cost_per_useful_output": pl.Decimal(38, 12),
    "cost_per_useful_output": pl.Decimal(38, 12),
    "unit_change_pct": pl.Float64,
}
MOVER_SCHEMA = {
    "feature": pl.String,
    "provider_name": pl.String,
    "service_name": pl.String,
    "previous_spend": pl.Decimal(38, 12),
    "spend": pl.Decimal(38, 12),
    "change": pl.Decimal(38, 12),
    "change_pct": pl.Float64,
}


def _by_week(frame: pl.DataFrame, keys: list[str], monday: date) -> dict[tuple[object, ...], dict[str, dict]]:
    """{key: {"this": row, "previous": row}} from rows with a ``date`` column, summed per week."""
    out: dict[tuple[object, ...], dict[str, dict]] = {}
    for row in frame.iter_rows(named=True):
        side = "this" if row["date"] >= monday else "previous"
        slot = out.setdefault(tuple(row[k] for k in keys), {}).setdefault(side, {})
        for name, value in row.items():
            if name not in keys and name != "date":
                slot[name] = slot.get(name, 0) + value
    return out


def feature_rows(daily: pl.DataFrame, monday: date) -> pl.DataFrame:
    rows = []
    for (feature,), weeks in sorted(_by_week(daily, ["feature"], monday).items()):
        this, before = weeks.get("this", {}), weeks.get("previous", {})
        spend, previous_spend = Decimal(this.get("effective_cost", 0)), Decimal(before.get("effective_cost", 0))
        cogs, previous_cogs = Decimal(this.get("cogs", 0)), Decimal(before.get("cogs", 0))
        outputs, previous_outputs = int(this.get("useful_outputs", 0)), int(before.get("useful_outputs", 0))
        unit, previous_unit = _unit(cogs, outputs), _unit(previous_cogs, previous_outputs)
        rows.append(
            {
                "feature": feature,
                "previous_spend": previous_spend,
                "spend": spend,
                "spend_change": spend - previous_spend,
                "spend_change_pct": _change(spend, previous_spend),
                "cogs": cogs,
                "previous_useful_outputs": previous_outputs,
                "useful_outputs": outputs,
                "previous_cost_per_useful_output": previous_unit,
                "cost_per_useful_output": unit,
                "unit_change_pct": _change(unit, previous_unit),
            }
        )
    frame = pl.DataFrame(rows, schema=FEATURE_SCHEMA)
    return frame.sort(pl.col("feature").is_in(list(SPECIAL)), pl.col("spend"), descending=[False, True])


def mover_rows(lines: pl.DataFrame, monday: date, top: int) -> pl.DataFrame:
    rows = []
    keys = ["feature", "provider_name", "service_name"]
    for key, weeks in _by_week(lines, keys, monday).items():
        spend = Decimal(weeks.get("this", {}).get("effective_cost", 0))
        previous = Decimal(weeks.get("previous", {}).get("effective_cost", 0))
        if spend != previous:
            row = dict(zip(keys, key, strict=True))
            rows.append(
                row
                | {
                    "previous_spend": previous,
                    "spend": spend,
                    "change": spend - previous,
                    "change_pct": _change(spend, previous),
                }
            )
    rows.sort(key=lambda r: (-abs(r["change"]), r["feature"], r["provider_name"], r["service_name"]))
    return pl.DataFrame(rows[:top], schema=MOVER_SCHEMA)


def week_figures(warehouse: Warehouse, monday: date, top: int = 5) -> Flash:
    """The flash of the week starting ``monday`` (a Monday) against the week before."""
    if monday.weekday() != 0:
        raise ValueError(f"a flash week starts on a Monday; {monday} is a {monday:%A}")
    window = {"start": monday - WEEK, "end": monday + WEEK}
    daily = warehouse.read(
        "SELECT date, feature, SUM(effective_cost) AS effective_cost, SUM(cogs) AS cogs, "
        "SUM(useful_outputs) AS useful_outputs FROM feature_costs_daily WHERE date >= :start AND date < :end "
        "GROUP BY date, feature ORDER BY date, feature",
        **window,
    )
    lines = warehouse.read(
        "SELECT charge_date AS date, feature, provider_name, service_name, SUM(effective_cost) AS effective_cost "
        "FROM cost_allocations WHERE charge_date >= :start AND charge_date < :end "
        "GROUP BY charge_date, feature, provider_name, service_name",
        **window,
    )
    dates = set(daily["date"].to_list())
    currencies = warehouse.read(
        'SELECT DISTINCT "BillingCurrency" AS c FROM focus_costs WHERE "ChargePeriodStart" >= :start '
        'AND "ChargePeriodStart" < :end',
        start=datetime.combine(window["start"], datetime.min.time(), UTC),
        end=datetime.combine(window["end"], datetime.min.time(), UTC),
    )["c"].to_list()
    return Flash(
        week=monday,
        features=feature_rows(daily, monday),
        movers=mover_rows(lines, monday, top),
        daily=daily,
        days=sum(1 for d in dates if d >= monday),
        previous_days=sum(1 for d in dates if d < monday),
        currency="/".join(sorted(currencies)) or "USD",
    )


def daily_spend_chart(flash: Flash) -> str:
    """Spend per day and feature over the two weeks, stacked; a line marks where this week starts."""
    wide = (
        flash.daily.pivot(on="feature", index="date", values="effective_cost", aggregate_function="sum")
        .sort("date")
        .fill_null(0)
    )
    features = sorted((c for c in wide.columns if c != "date"), key=lambda f: (f in SPECIAL, f))
    fig = Figure(figsize=(10, 3.2))
    ax = fig.subplots()
    _stacked_bars(ax, wide, "date", _colors(features))
    ax.axvline(flash.week - timedelta(hours=12), color="#1d232a", linewidth=1, linestyle="--")  # type: ignore[arg-type]
    ax.set_title(f"Daily spend by feature: week before, then {flash.label}")
    ax.set_ylabel("USD per day (amortized)")
    ax.legend(ncols=6, fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.28))
    ax.spines[["top", "right"]].set_visible(False)
    fig.autofmt_xdate()
    return _svg(fig)


def render_flash_html(flash: Flash, config: CogsConfig, generated: datetime | None = None) -> str:
    env = template_env()
    env.filters["usd"] = money_text(flash.currency)
    return env.get_template("flash.html.j2").render(
        company=config.company,
        flash=flash,
        generated=(generated or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC"),
        features=flash.features.to_dicts(),
        movers=flash.movers.to_dicts(),
        chart=daily_spend_chart(flash) if flash.daily.height else "",
    )


def write_flash(
    warehouse: Warehouse, config: CogsConfig, monday: date, generated: datetime | None = None
) -> tuple[Flash, Path]:
    """Write ``flash-<ISO week>.html`` under ``reports.output_dir``; returns the figures and the path."""
    warehouse.ensure_schema()
    flash = week_figures(warehouse, monday, config.reports.top_movers)
    out = Path(config.reports.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"flash-{flash.label}.html"
    path.write_text(render_flash_html(flash, config, generated))
    return flash, path


def terminal_tables(flash: Flash) -> list[Table]:
    """The flash for a terminal: per feature, then the top movers."""
    money = money_text(flash.currency)

    def pct(v: float | None) -> str:
        return "—" if v is None else f"{v:+.1%}"

    def unit(v: Decimal | None) -> str:
        return "—" if v is None else f"${float(v):,.4f}"

    title = f"Weekly flash {flash.label} ({flash.period}) vs the week before"
    if not flash.complete:
        title += f" — incomplete: {flash.days}/7 and {flash.previous_days}/7 days with costs"
    features = Table(title=title, title_justify="left", header_style="bold")
    for name in (
        "feature",
        "spend before",
        "spend",
        "change",
        "change %",
        "useful outputs",
        "per output before",
        "per output",
        "per output %",
    ):
        features.add_column(name, justify="left" if name == "feature" else "right")
    for r in flash.features.iter_rows(named=True):
        features.add_row(
            r["feature"],
            money(r["previous_spend"]),
            money(r["spend"]),
            money(r["spend_change"]),
            pct(r["spend_change_pct"]),
            f"{r['useful_outputs']:,}",
            unit(r["previous_cost_per_useful_output"]),
            unit(r["cost_per_useful_output"]),
            pct(r["unit_change_pct"]),
        )
    features.add_row(
        "total",
        money(flash.total("previous_spend")),
        money(flash.total("spend")),
        money(flash.total("spend_change")),
        pct(_change(flash.total("spend"), flash.total("previous_spend"))),
        f"{int(flash.features['useful_outputs'].sum() or 0):,}",
        "",
        "",
        "",
        style="bold",
    )
    movers = Table(title="Top movers (feature · provider · service)", title_justify="left", header_style="bold")
    for name in ("feature", "provider", "service", "before", "this week", "change", "%"):
        movers.add_column(name, justify="left" if name in ("feature", "provider", "service") else "right")
    for m in flash.movers.iter_rows(named=True):
        movers.add_row(
            m["feature"],
            m["provider_name"],
            m["service_name"],
            money(m["previous_spend"]),
            money(m["spend"]),
            money(m["change"]),
            pct(m["change_pct"]),
        )
    return [features, movers]
