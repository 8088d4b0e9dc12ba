"""The month's close pack: a workbook (XLSX), a self-contained HTML report with charts, and its PDF.

Figures come from the warehouse (``month_figures``); charts are inline SVG drawn with matplotlib's
Figure API; the HTML is ``templates/report.html.j2``; the workbook is written with xlsxwriter, money
as numbers with currency formats; the PDF is the HTML printed by headless Chromium
(``chromium --headless --print-to-pdf``), skipped with a clear note when no Chromium is installed.
A closed month is compared with its latest close (``pipelines.close``): restatements are listed line
by line, never folded silently into the numbers.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
from jinja2 import Environment, PackageLoader, select_autoescape
from matplotlib.figure import Figure  # pyplot-free: no global state, no display backend
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from models.config import CogsConfig
from models.period import BillingPeriod
from pipelines.close import (
    Close,
    changes,
    closed_lines,
    closed_usage,
    current_lines,
    current_usage,
    latest_close,
    usage_changes,
)
from pipelines.warehouse import Warehouse

log = logging.getLogger(__name__)

PALETTE = ["#2f6db5", "#e07b39", "#3a9e6f", "#b5452f", "#7a5bb5", "#8c8c8c", "#c9c9c9"]
SPECIAL = {"idle": "#9aa5b1", "unallocated": "#d3d7dc"}
TREND_MONTHS = 12
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Headless, offline, throwaway profile. --no-sandbox: the page is our own local file, and the sandbox
# can't start as root or in most containers.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
CHROMIUM_TIMEOUT_S = 120


# --- figures ------------------------------------------------------------------------------------------


@dataclass
class MonthFigures:
    """Everything the close pack, the demo summary and ``cogs explain`` show for one month."""

    month: str
    by_provider: pl.DataFrame
    by_feature: pl.DataFrame
    daily: pl.DataFrame
    by_kind: pl.DataFrame
    reconciliation: pl.DataFrame
    anomalies: pl.DataFrame
    currency: str = "USD"
    by_feature_provider: pl.DataFrame = field(default_factory=pl.DataFrame)
    unallocated_idle: pl.DataFrame = field(default_factory=pl.DataFrame)
    daily_spend: pl.DataFrame = field(default_factory=pl.DataFrame)
    monthly_spend: pl.DataFrame = field(default_factory=pl.DataFrame)
    previous_units: pl.DataFrame = field(default_factory=pl.DataFrame)
    summary: list[SummaryLine] = field(default_factory=list)
    close: Close | None = None
    changes: pl.DataFrame = field(default_factory=pl.DataFrame)
    usage_changes: pl.DataFrame = field(default_factory=pl.DataFrame)
    anomalies_note: str | None = None

    @property
    def total_effective(self) -> Decimal:
        return Decimal(self.by_provider["effective_cost"].sum() or 0)

    @property
    def total_billed(self) -> Decimal:
        return Decimal(self.by_provider["billed_cost"].sum() or 0)

    def share(self, feature: str) -> float:
        row = self.by_feature.filter(pl.col("feature") == feature)
        total = self.total_effective
        return float(row["cogs"][0] / total) if row.height and total else 0.0

    def figure(self, key: str) -> SummaryLine | None:
        return next((s for s in self.summary if s.key == key), None)

    @property
    def reconciled(self) -> int:
        return int((self.reconciliation["difference"] == 0).sum()) if self.reconciliation.height else 0

    @property
    def restated(self) -> Decimal:
        """Net change of this month's amortized cost since its latest close (0 when not closed)."""
        line = self.figure("effective_cost")
        return line.change if line and line.change is not None else Decimal(0)


@dataclass(frozen=True)
class SummaryLine:
    """One headline figure: now, as closed (None when the month is not closed), and the change."""

    key: str
    label: str
    kind: str  # money | unit | count
    current: Decimal | None
    closed: Decimal | None = None

    @property
    def change(self) -> Decimal | None:
        if self.current is None or self.closed is None:
            return None
        return self.current - self.closed


UNIT_PLACES = Decimal("1e-12")  # the warehouse's money scale


def headline(lines: pl.DataFrame, usage: pl.DataFrame) -> dict[str, Decimal | None]:
    """The summary's figures from cost lines and per-feature usage (now or as closed: same arithmetic)."""

    def total(column: str, condition: pl.Expr | None = None) -> Decimal:
        rows = lines if condition is None else lines.filter(condition)
        return Decimal(rows[column].sum() or 0) if rows.height else Decimal(0)

    cogs = total("effective_cost", pl.col("cost_class") == "cogs")
    outputs = Decimal(int(usage["useful_outputs"].sum() or 0)) if usage.height else Decimal(0)
    return {
        "billed_cost": total("billed_cost"),
        "effective_cost": total("effective_cost"),
        "cogs": cogs,
        "rnd": total("effective_cost", pl.col("cost_class") == "rnd"),
        "opex": total("effective_cost", pl.col("cost_class") == "opex"),
        "idle": total("effective_cost", pl.col("feature") == "idle"),
        "unallocated": total("effective_cost", pl.col("feature") == "unallocated"),
        "useful_outputs": outputs,
        "unit_cost": (cogs / outputs).quantize(UNIT_PLACES) if outputs else None,
    }


SUMMARY_LABELS = (
    ("billed_cost", "Billed cost (invoices, BilledCost)", "money"),
    ("effective_cost", "Amortized cost (EffectiveCost)", "money"),
    ("cogs", "COGS", "money"),
    ("rnd", "R&D (non-production, training, evaluation)", "money"),
    ("opex", "OpEx (free tier, internal)", "money"),
    ("idle", "Idle capacity (kept as the idle line)", "money"),
    ("unallocated", "Unallocated", "money"),
    ("useful_outputs", "Useful outputs (COGS traffic)", "count"),
    ("unit_cost", "Fully loaded COGS per useful output", "unit"),
)


def summary_lines(warehouse: Warehouse, month: str, close: Close | None) -> list[SummaryLine]:
    now = headline(current_lines(warehouse, month), current_usage(warehouse, month))
    then = headline(closed_lines(warehouse, close), closed_usage(warehouse, close)) if close else {}
    return [SummaryLine(key, label, kind, now[key], then.get(key)) for key, label, kind in SUMMARY_LABELS]


ANOMALY_COLUMNS = {
    "series_id": pl.String,
    "metric": pl.String,
    "feature": pl.String,
    "start_date": pl.Date,
    "end_date": pl.Date,
    "days": pl.Int64,
    "impact_usd": pl.Float64,
    "max_score": pl.Float64,
    "drivers": pl.String,
}


def _read_anomalies(warehouse: Warehouse, month: str) -> tuple[pl.DataFrame, str | None]:
    """The month's anomalies; the pack still renders (with the reason) if the table can't be read."""
    try:
        return warehouse.read(
            "SELECT series_id, metric, dimension_value AS feature, start_date, end_date, days, impact_usd, "
            "max_score, drivers FROM cost_anomalies WHERE billing_period = :p ORDER BY impact_usd DESC",
            p=month,
        ), None
    except Exception as exc:  # the anomaly tables are owned elsewhere and may be mid-migration
        reason = str(exc).strip().splitlines()[0]
        log.warning("anomalies of %s not read: %s", month, reason)
        return pl.DataFrame(schema=ANOMALY_COLUMNS), f"anomalies could not be read: {reason}"


def month_figures(warehouse: Warehouse, month: str) -> MonthFigures:
    p = {"p": month}
    trend_start = BillingPeriod(month)
    for _ in range(TREND_MONTHS - 1):
        trend_start = trend_start.previous
    anomalies, anomalies_note = _read_anomalies(warehouse, month)
    currencies = warehouse.read(
        'SELECT DISTINCT "BillingCurrency" AS currency FROM focus_costs WHERE x_billing_period = :p ORDER BY 1', **p
    )["currency"].to_list()
    close = latest_close(warehouse, month)
    return MonthFigures(
        month=month,
        currency=currencies[0] if len(currencies) == 1 else "/".join(currencies) or "USD",
        by_provider=warehouse.read(
            "SELECT provider_name, SUM(billed_cost) AS billed_cost, SUM(effective_cost) AS effective_cost, "
            "SUM(charge_rows) AS charge_rows FROM v_spend_by_provider WHERE billing_period = :p "
            "GROUP BY provider_name ORDER BY effective_cost DESC",
            **p,
        ),
        by_feature=warehouse.read(
            "SELECT feature, cogs, direct_cost, shared_cost, idle_cost, overhead_cost, unallocated_cost, waste_cost, "
            "rnd_cost, opex_cost, effective_cost, billed_cost, requests, useful_outputs, cost_per_useful_output, "
            "cost_per_request, cost_per_1k_tokens FROM v_feature_cogs_monthly WHERE billing_period = :p "
            "ORDER BY CASE WHEN feature IN ('idle', 'unallocated') THEN 1 ELSE 0 END, cogs DESC, feature",
            **p,
        ),
        daily=warehouse.read(
            "SELECT date, feature, cogs, useful_outputs, cost_per_useful_output FROM feature_costs_daily "
            "WHERE billing_period = :p ORDER BY date, feature",
            **p,
        ),
        by_kind=warehouse.read(
            "SELECT provider_name, cost_class, allocation_kind, SUM(effective_cost) AS effective_cost "
            "FROM cost_allocations WHERE x_billing_period = :p GROUP BY provider_name, cost_class, allocation_kind "
            "ORDER BY provider_name, cost_class, allocation_kind",
            **p,
        ),
        by_feature_provider=warehouse.read(
            "SELECT feature, provider_name, "
            "SUM(CASE WHEN cost_class = 'cogs' THEN effective_cost ELSE 0 END) AS cogs, "
            "SUM(CASE WHEN cost_class = 'rnd' THEN effective_cost ELSE 0 END) AS rnd_cost, "
            "SUM(CASE WHEN cost_class = 'opex' THEN effective_cost ELSE 0 END) AS opex_cost, "
            "SUM(effective_cost) AS effective_cost, SUM(billed_cost) AS billed_cost, SUM(charges) AS charges "
            "FROM v_feature_waterfall WHERE billing_period = :p GROUP BY feature, provider_name "
            "ORDER BY CASE WHEN feature IN ('idle', 'unallocated') THEN 1 ELSE 0 END, feature, provider_name",
            **p,
        ),
        reconciliation=warehouse.read(
            "SELECT source, provider_total, warehouse_billed_cost, difference, rows_loaded, rows_quarantined, "
            "batch_id FROM v_reconciliation WHERE billing_period = :p ORDER BY source",
            **p,
        ),
        unallocated_idle=warehouse.read(
            "SELECT allocation_kind, rule_id, provider_name, service_name, feature, cost_class, charges, "
            "effective_cost, billed_cost FROM v_unallocated_and_idle WHERE billing_period = :p "
            "ORDER BY allocation_kind, effective_cost DESC, rule_id, provider_name, service_name, feature",
            **p,
        ),
        daily_spend=warehouse.read(
            "SELECT date, provider_name, effective_cost FROM v_spend_daily_by_provider WHERE billing_period = :p "
            "ORDER BY date, provider_name",
            **p,
        ),
        monthly_spend=warehouse.read(
            "SELECT billing_period, provider_name, SUM(billed_cost) AS billed_cost, "
            "SUM(effective_cost) AS effective_cost FROM v_spend_by_provider "
            "WHERE billing_period BETWEEN :start AND :p GROUP BY billing_period, provider_name "
            "ORDER BY billing_period, provider_name",
            start=trend_start.key,
            **p,
        ),
        previous_units=warehouse.read(
            "SELECT feature, cogs, useful_outputs, cost_per_useful_output FROM v_feature_cogs_monthly "
            "WHERE billing_period = :p",
            p=BillingPeriod(month).previous.key,
        ),
        anomalies=anomalies,
        anomalies_note=anomalies_note,
        summary=summary_lines(warehouse, month, close),
        close=close,
        changes=changes(warehouse, month),
        usage_changes=usage_changes(warehouse, month),
    )


# --- charts ---------------------------------------------------------------------------------------------


def _svg(fig: Figure) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _colors(features: list[str]) -> dict[str, str]:
    regular = [f for f in features if f not in SPECIAL]
    return {f: PALETTE[i % len(PALETTE)] for i, f in enumerate(regular)} | {
        f: SPECIAL[f] for f in features if f in SPECIAL
    }


def _stacked_bars(ax: Any, wide: pl.DataFrame, index: str, colors: dict[str, str], width: float = 0.85) -> None:
    bottom = [0.0] * wide.height
    for name in colors:
        values = [float(v) for v in wide[name]]
        ax.bar(wide[index].to_list(), values, bottom=bottom, label=name, color=colors[name], width=width)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]


def daily_cogs_chart(daily: pl.DataFrame) -> str:
    """COGS by feature, stacked, per day (idle and unallocated on top)."""
    wide = daily.pivot(on="feature", index="date", values="cogs", aggregate_function="sum").sort("date").fill_null(0)
    features = [c for c in wide.columns if c != "date"]
    features.sort(key=lambda f: (f in SPECIAL, f))
    fig = Figure(figsize=(10, 3.6))
    ax = fig.subplots()
    _stacked_bars(ax, wide, "date", _colors(features))
    ax.set_ylabel("USD per day (amortized)")
    ax.set_title("Daily COGS by feature")
    ax.legend(ncols=6, fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.28))
    ax.spines[["top", "right"]].set_visible(False)
    fig.autofmt_xdate()
    return _svg(fig)


def spend_trend_chart(daily_spend: pl.DataFrame, monthly_spend: pl.DataFrame) -> str:
    """Spend by provider: each day of the month (left) and each of the last months (right)."""
    providers = sorted(set(daily_spend["provider_name"].to_list()) | set(monthly_spend["provider_name"].to_list()))
    colors = {p: PALETTE[i % len(PALETTE)] for i, p in enumerate(providers)}
    fig = Figure(figsize=(10, 3.4))
    days_ax, months_ax = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 1]})
    for ax, frame, index, title in (
        (days_ax, daily_spend, "date", "Daily spend by provider"),
        (months_ax, monthly_spend, "billing_period", "Monthly spend"),
    ):
        if frame.height:
            wide = frame.pivot(on="provider_name", index=index, values="effective_cost", aggregate_function="sum")
            wide = wide.sort(index).fill_null(0)
            for p in providers:
                if p not in wide.columns:
                    wide = wide.with_columns(pl.lit(0).alias(p))
            _stacked_bars(ax, wide, index, colors, width=0.85 if index == "date" else 0.6)
        ax.set_title(title)
        ax.spines[["top", "right"]].set_visible(False)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"${v:,.0f}"))
    days_ax.set_ylabel("USD (amortized)")
    days_ax.legend(
        ncols=min(6, max(1, len(providers))), fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.3)
    )
    for label in days_ax.get_xticklabels():
        label.update({"rotation": 30, "horizontalalignment": "right"})
    months_ax.tick_params(axis="x", labelrotation=30)
    return _svg(fig)


def unit_cost_chart(daily: pl.DataFrame) -> str:
    """Cost per useful output per feature and day (log scale: features differ by orders of magnitude)."""
    data = daily.filter(pl.col("cost_per_useful_output").is_not_null() & ~pl.col("feature").is_in(list(SPECIAL)))
    features = sorted(data["feature"].unique().to_list())
    colors = _colors(features)
    fig = Figure(figsize=(10, 3.2))
    ax = fig.subplots()
    for feature in features:
        rows = data.filter(pl.col("feature") == feature).sort("date")
        ax.plot(
            rows["date"].to_list(),
            [float(v) for v in rows["cost_per_useful_output"]],
            label=feature,
            color=colors[feature],
            marker="o",
            markersize=3,
        )
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"${v:,.3f}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel("USD per useful output")
    ax.set_title("Cost per useful output, by day")
    if features:
        ax.legend(ncols=4, fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.3))
    ax.spines[["top", "right"]].set_visible(False)
    fig.autofmt_xdate()
    return _svg(fig)


def waterfall_bars(figures: MonthFigures) -> list[tuple[str, float, float, str]]:
    """(label, bar bottom, bar height, color): provider bills up to the total, then down to nothing."""
    steps: list[tuple[str, float, float, str]] = []
    running = 0.0
    for i, row in enumerate(figures.by_provider.iter_rows(named=True)):
        value = float(row["effective_cost"])
        steps.append((f"{row['provider_name']} bill", running, value, PALETTE[i % len(PALETTE)]))
        running += value
    steps.append(("Total spend", 0.0, running, "#333333"))
    kinds = figures.by_kind.group_by("cost_class", "allocation_kind").agg(pl.col("effective_cost").sum())

    def amount(condition: pl.Expr) -> float:
        return float(kinds.filter(condition)["effective_cost"].sum() or 0)

    cogs = pl.col("cost_class") == "cogs"
    parts = [
        ("− R&D", amount(pl.col("cost_class") == "rnd"), "#7a5bb5"),
        ("− OpEx", amount(pl.col("cost_class") == "opex"), "#b5452f"),
        (
            "attributed COGS",
            amount(cogs & pl.col("allocation_kind").is_in(["direct", "shared", "overhead"])),
            "#3a9e6f",
        ),
        ("idle", amount(cogs & (pl.col("allocation_kind") == "idle")), SPECIAL["idle"]),
        ("unallocated", amount(cogs & (pl.col("allocation_kind") == "unallocated")), SPECIAL["unallocated"]),
    ]
    top = running
    for label, value, color in parts:
        steps.append((label, top - value, value, color))
        top -= value
    return steps


def waterfall_chart(figures: MonthFigures) -> str:
    """From each provider's bill to COGS, R&D and OpEx, and COGS to attributed, idle and unallocated."""
    steps = waterfall_bars(figures)
    fig = Figure(figsize=(10, 3.4))
    ax = fig.subplots()
    for i, (_, bottom, height, color) in enumerate(steps):
        ax.bar(i, height, bottom=bottom, color=color)
        ax.text(i, bottom + height, f"${height:,.0f}", ha="center", va="bottom", fontsize=7)
    ax.set_ylim(0, max([b + h for _, b, h, _ in steps] + [1.0]) * 1.12)
    ax.set_xticks(range(len(steps)), [s[0] for s in steps], rotation=20, ha="right", fontsize=8)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"${v:,.0f}"))
    ax.set_ylabel("USD (amortized)")
    ax.set_title("Waterfall: provider bills → R&D, OpEx and COGS → attributed, idle, unallocated")
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(fig)


def charts(figures: MonthFigures) -> dict[str, str]:
    """The report's four charts as inline SVG ("" when the month has no data for one)."""
    return {
        "spend": spend_trend_chart(figures.daily_spend, figures.monthly_spend) if figures.daily_spend.height else "",
        "daily": daily_cogs_chart(figures.daily) if figures.daily.height else "",
        "unit": unit_cost_chart(figures.daily) if figures.daily.height else "",
        "waterfall": waterfall_chart(figures) if figures.by_provider.height else "",
    }


# --- HTML -----------------------------------------------------------------------------------------------


def money_text(currency: str) -> Callable[[object], str]:
    """$1,234.56 for USD, else 1,234.56 EUR."""

    def text(v: object) -> str:
        if v is None:
            return ""
        amount = float(v)  # type: ignore[arg-type]
        sign = "-" if amount < 0 and round(amount, 2) != 0 else ""
        return f"{sign}${abs(amount):,.2f}" if currency == "USD" else f"{sign}{abs(amount):,.2f} {currency}"

    return text


def unit_text(v: object) -> str:
    """A unit cost: $0.0123, -$0.0002; — when there is none."""
    if v is None:
        return "—"
    amount = float(v)  # type: ignore[arg-type]
    return f"{'-' if amount < 0 and round(amount, 4) != 0 else ''}${abs(amount):,.4f}"


def _signed(v: object) -> str:
    if v is None:
        return ""
    d = Decimal(str(v))
    return "0 (exact)" if d == 0 else f"{d:+,f}"


def template_env() -> Environment:
    env = Environment(loader=PackageLoader("pipelines", "templates"), autoescape=select_autoescape(["html", "j2"]))
    env.filters["usd"] = money_text("USD")
    env.filters["unit"] = unit_text
    env.filters["num"] = lambda v: "" if v is None else f"{int(v):,}"
    env.filters["pct"] = lambda v: "—" if v is None else f"{float(v):.1%}"
    env.filters["signed_pct"] = lambda v: "—" if v is None else f"{float(v):+.1%}"
    env.filters["exact"] = _signed
    return env


def _rows(frame: pl.DataFrame) -> list[dict[str, object]]:
    return frame.to_dicts()


def unit_rows(figures: MonthFigures) -> list[dict[str, object]]:
    """Features with usage: this month's unit costs beside last month's."""
    previous = {r["feature"]: r["cost_per_useful_output"] for r in figures.previous_units.iter_rows(named=True)}
    rows = []
    for r in figures.by_feature.iter_rows(named=True):
        if r["feature"] in SPECIAL or not r["useful_outputs"]:
            continue
        before, now = previous.get(r["feature"]), r["cost_per_useful_output"]
        change = float(Decimal(now) / Decimal(before) - 1) if before and now is not None else None
        rows.append(r | {"previous_cost_per_useful_output": before, "unit_change": change})
    return rows


def render_html(figures: MonthFigures, config: CogsConfig, generated: datetime | None = None) -> str:
    env = template_env()
    env.filters["usd"] = money_text(figures.currency)
    anomalies = [a | {"drivers": json.loads(a["drivers"] or "[]")} for a in _rows(figures.anomalies)]
    return env.get_template("report.html.j2").render(
        company=config.company,
        month=figures.month,
        generated=(generated or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC"),
        f=figures,
        workbook=f"cogs-{figures.month}.xlsx",
        providers=_rows(figures.by_provider),
        features=_rows(figures.by_feature),
        units=unit_rows(figures),
        reconciliation=_rows(figures.reconciliation),
        unallocated_idle=_rows(figures.unallocated_idle),
        changes=_rows(figures.changes),
        usage_changes=_rows(figures.usage_changes),
        no_changes=no_changes_text(figures),
        anomalies=anomalies,
        idle_share=figures.share("idle"),
        unallocated_share=figures.share("unallocated"),
        charts=charts(figures),
    )


# --- XLSX -----------------------------------------------------------------------------------------------

SIGNIFICANT = 15  # a double keeps 15 significant decimal digits exactly


def excel_number(value: object) -> Decimal | None:
    """The value as a decimal Excel stores exactly: at most 15 significant digits and 12 places, no -0.

    xlsxwriter writes a Decimal with ``format(value, '.16G')``, so the workbook holds this exact decimal.
    """
    if value is None:
        return None
    d = Decimal(str(value)) if isinstance(value, float) else Decimal(value)  # type: ignore[arg-type]
    if d == 0:
        return Decimal(0)
    places = max(0, min(12, SIGNIFICANT - (d.adjusted() + 1)))
    rounded = d.quantize(Decimal(1).scaleb(-places))
    return Decimal(int(rounded)) if rounded == rounded.to_integral_value() else rounded.normalize()


@dataclass(frozen=True)
class Col:
    """A workbook column: header, the row's key, how it is shown (text, money, unit, count, pct, datetime)."""

    header: str
    key: str
    kind: str = "text"
    total: bool = False
    width: int | None = None


def currency_formats(currency: str) -> tuple[str, str]:
    """Excel number formats for amounts (negatives in red) and unit costs in ``currency``."""
    if currency == "USD":
        return '"$"#,##0.00;[Red]-"$"#,##0.00', '"$"#,##0.000000'
    return f'#,##0.00 "{currency}";[Red]-#,##0.00 "{currency}"', f'#,##0.000000 "{currency}"'


class Workbook:
    """xlsxwriter with the pack's formats: money in the billing currency, unit costs, counts, percentages."""

    def __init__(self, path: Path, currency: str) -> None:
        import xlsxwriter

        self.book = xlsxwriter.Workbook(str(path), {"strings_to_numbers": False, "nan_inf_to_errors": True})
        symbol_money, symbol_unit = currency_formats(currency)
        add = self.book.add_format
        self.formats = {
            "title": add({"bold": True, "font_size": 14}),
            "header": add({"bold": True, "bg_color": "#F0F2F5", "bottom": 1, "text_wrap": True, "valign": "top"}),
            "text": add({}),
            "bold": add({"bold": True}),
            "note": add({"italic": True, "font_color": "#5B6670"}),
            "money": add({"num_format": symbol_money}),
            "unit": add({"num_format": symbol_unit}),
            "count": add({"num_format": "#,##0"}),
            "pct": add({"num_format": "0.0%"}),
            "datetime": add({"num_format": 'yyyy-mm-dd hh:mm "UTC"'}),
            "total_text": add({"bold": True, "top": 1}),
            "total_money": add({"bold": True, "top": 1, "num_format": symbol_money}),
            "total_count": add({"bold": True, "top": 1, "num_format": "#,##0"}),
        }

    def sheet(self, name: str) -> Any:
        return self.book.add_worksheet(name)

    def close(self) -> None:
        self.book.close()

    def cell(self, ws: Any, row: int, col: int, value: object, kind: str) -> None:
        fmt = self.formats[kind if kind in self.formats else "text"]
        if value is None:
            ws.write_blank(row, col, None, fmt)
        elif kind in ("money", "unit", "total_money"):
            ws.write_number(row, col, excel_number(value), fmt)
        elif kind in ("count", "total_count"):
            ws.write_number(row, col, int(value), fmt)  # type: ignore[call-overload]
        elif kind == "pct":
            ws.write_number(row, col, float(value), fmt)  # type: ignore[arg-type]
        elif kind == "datetime" and isinstance(value, datetime):
            ws.write_datetime(row, col, value.astimezone(UTC).replace(tzinfo=None), fmt)
        else:
            ws.write_string(row, col, str(value), fmt)

    def table(self, ws: Any, top: int, columns: Sequence[Col], rows: Iterable[dict[str, object]]) -> int:
        """A header, one line per row, a totals line (SUM formulas with exact cached values); next free row."""
        rows = list(rows)
        for c, col in enumerate(columns):
            ws.write_string(top, c, col.header, self.formats["header"])
            ws.set_column(c, c, col.width or (14 if col.kind != "text" else max(12, len(col.header) + 2)))
        for r, row in enumerate(rows, start=top + 1):
            for c, col in enumerate(columns):
                self.cell(ws, r, c, row.get(col.key), col.kind)
        end = top + len(rows)
        if any(col.total for col in columns) and rows:
            self._totals(ws, top, end, columns, rows)
            end += 1
        if rows:
            ws.autofilter(top, 0, top + len(rows), len(columns) - 1)
        return end + 2

    def _totals(self, ws: Any, top: int, end: int, columns: Sequence[Col], rows: list[dict[str, object]]) -> None:
        from xlsxwriter.utility import xl_rowcol_to_cell

        ws.write_string(end + 1, 0, "Total", self.formats["total_text"])
        for c, col in enumerate(columns[1:], start=1):
            if not col.total:
                ws.write_blank(end + 1, c, None, self.formats["total_text"])
                continue
            exact = sum((Decimal(str(r[col.key] or 0)) for r in rows), Decimal(0))
            kind = "total_count" if col.kind == "count" else "total_money"
            cached = int(exact) if col.kind == "count" else excel_number(exact)
            span = f"{xl_rowcol_to_cell(top + 1, c)}:{xl_rowcol_to_cell(end, c)}"
            ws.write_formula(end + 1, c, f"=SUM({span})", self.formats[kind], cached)

    def pairs(self, ws: Any, top: int, pairs: Sequence[tuple[str, object, str]]) -> int:
        """Label / value lines (the sheet's heading block); next free row."""
        for r, (label, value, kind) in enumerate(pairs, start=top):
            ws.write_string(r, 0, label, self.formats["bold"])
            self.cell(ws, r, 1, value, kind)
        return top + len(pairs) + 1


def close_status(figures: MonthFigures) -> str:
    if figures.close is None:
        return "Draft: the month is not closed"
    status = f"Closed {figures.close.label}"
    if figures.changes.filter(pl.col("billing_period") == figures.month).height:
        status += f"; restated since by {figures.restated:+,f} (amortized), see 'Changes since last close'"
    return status


def _summary_sheet(book: Workbook, figures: MonthFigures, config: CogsConfig, generated: datetime) -> None:
    ws = book.sheet("Summary")
    ws.write_string(0, 0, f"{config.company} — AI inference COGS close pack, {figures.month}", book.formats["title"])
    top = book.pairs(
        ws,
        2,
        [
            ("Month", figures.month, "text"),
            ("Status", close_status(figures), "text"),
            ("Generated", generated, "datetime"),
            ("Currency", figures.currency, "text"),
            ("Sources reconciled exactly", f"{figures.reconciled} of {figures.reconciliation.height}", "text"),
            ("Anomalies this month", figures.anomalies.height, "count"),
        ],
    )
    headers = (("Figure", 44), ("Current", 18), ("As closed", 18), ("Change since close", 18))
    for c, (header, width) in enumerate(headers):
        ws.write_string(top, c, header, book.formats["header"])
        ws.set_column(c, c, width)
    for r, line in enumerate(figures.summary, start=top + 1):
        ws.write_string(r, 0, line.label, book.formats["text"])
        for c, value in enumerate((line.current, line.closed, line.change), start=1):
            book.cell(ws, r, c, value, line.kind)
    note = top + len(figures.summary) + 2
    ws.write_string(
        note,
        0,
        "Figures are the warehouse's now. A closed month's restatements since its close are listed line by line "
        "in 'Changes since last close'; the close itself is never rewritten.",
        book.formats["note"],
    )


def _by_feature_sheet(book: Workbook, figures: MonthFigures) -> None:
    ws = book.sheet("COGS by feature and provider")
    ws.write_string(0, 0, f"COGS by feature, {figures.month} (amortized)", book.formats["title"])
    money = [
        ("COGS", "cogs"),
        ("Direct", "direct_cost"),
        ("Shared", "shared_cost"),
        ("Idle", "idle_cost"),
        ("Overhead", "overhead_cost"),
        ("Unallocated", "unallocated_cost"),
        ("Waste (failed + retried)", "waste_cost"),
        ("R&D", "rnd_cost"),
        ("OpEx", "opex_cost"),
        ("Total (EffectiveCost)", "effective_cost"),
        ("Billed (BilledCost)", "billed_cost"),
    ]
    columns = [Col("Feature", "feature", width=18), *(Col(h, k, "money", total=True) for h, k in money)]
    top = book.table(ws, 2, columns, figures.by_feature.to_dicts())
    ws.write_string(top, 0, f"COGS by feature and provider, {figures.month}", book.formats["title"])
    columns = [
        Col("Feature", "feature", width=18),
        Col("Provider", "provider_name", width=16),
        Col("COGS", "cogs", "money", total=True),
        Col("R&D", "rnd_cost", "money", total=True),
        Col("OpEx", "opex_cost", "money", total=True),
        Col("Total (EffectiveCost)", "effective_cost", "money", total=True),
        Col("Billed (BilledCost)", "billed_cost", "money", total=True),
    ]
    book.table(ws, top + 2, columns, figures.by_feature_provider.to_dicts())
    ws.freeze_panes(3, 1)


def _unit_sheet(book: Workbook, figures: MonthFigures) -> None:
    ws = book.sheet("Unit costs")
    ws.write_string(0, 0, f"Unit costs, {figures.month}: COGS over COGS-class usage", book.formats["title"])
    columns = [
        Col("Feature", "feature", width=18),
        Col("COGS", "cogs", "money"),
        Col("Requests", "requests", "count"),
        Col("Useful outputs", "useful_outputs", "count"),
        Col("COGS per useful output", "cost_per_useful_output", "unit"),
        Col("COGS per request", "cost_per_request", "unit"),
        Col("COGS per 1k tokens", "cost_per_1k_tokens", "unit"),
        Col("Waste (failed + retried)", "waste_cost", "money"),
        Col("Last month per useful output", "previous_cost_per_useful_output", "unit"),
        Col("Change", "unit_change", "pct"),
    ]
    book.table(ws, 2, columns, unit_rows(figures))
    ws.freeze_panes(3, 1)


def _reconciliation_sheet(book: Workbook, figures: MonthFigures) -> None:
    ws = book.sheet("Reconciliation")
    ws.write_string(
        0, 0, f"BilledCost in the warehouse vs each provider's export total, {figures.month}", book.formats["title"]
    )
    rows = [
        r | {"status": "reconciled" if r["difference"] == 0 else "DIFFERENCE", "exact": _signed(r["difference"])}
        for r in figures.reconciliation.to_dicts()
    ]
    columns = [
        Col("Source", "source", width=18),
        Col("Provider export total", "provider_total", "money", total=True, width=18),
        Col("Warehouse BilledCost", "warehouse_billed_cost", "money", total=True, width=18),
        Col("Difference", "difference", "money", total=True),
        Col("Status", "status", width=12),
        Col("Difference (exact, 12 places)", "exact", width=22),
        Col("Rows loaded", "rows_loaded", "count", total=True),
        Col("Rows quarantined", "rows_quarantined", "count", total=True),
        Col("Load batch", "batch_id", width=36),
    ]
    top = book.table(ws, 2, columns, rows)
    ws.write_string(
        top,
        0,
        "Provider totals are summed from each raw export before mapping (v_reconciliation).",
        book.formats["note"],
    )


def _unallocated_sheet(book: Workbook, figures: MonthFigures) -> None:
    ws = book.sheet("Unallocated and idle")
    ws.write_string(0, 0, f"Unallocated cost and idle capacity, {figures.month}", book.formats["title"])
    rows = [r | {"mode": _idle_mode(r)} for r in figures.unallocated_idle.to_dicts()]
    columns = [
        Col("Kind", "allocation_kind", width=12),
        Col("Rule", "rule_id", width=28),
        Col("Provider", "provider_name", width=16),
        Col("Service", "service_name", width=28),
        Col("Line", "mode", width=24),
        Col("Class", "cost_class", width=8),
        Col("Charges", "charges", "count", total=True),
        Col("Amortized", "effective_cost", "money", total=True),
        Col("Billed", "billed_cost", "money", total=True),
    ]
    top = book.table(ws, 2, columns, rows)
    ws.write_string(
        top,
        0,
        "Unallocated: charges no rule attributed (add a tag or a rule). Idle: capacity paid and not used.",
        book.formats["note"],
    )


def _idle_mode(row: dict[str, Any]) -> str:
    if row["feature"] in SPECIAL:
        return f"kept as {row['feature']}"
    return f"spread to {row['feature']}"


CHANGE_COLUMNS = [
    Col("Month", "billing_period", width=9),
    Col("Closed", "closed_at", "datetime", width=18),
    Col("Change", "change", width=10),
    Col("Source", "x_source", width=14),
    Col("Provider", "provider_name", width=14),
    Col("Service", "service_name", width=24),
    Col("Charge category", "charge_category", width=12),
    Col("Feature", "feature", width=16),
    Col("Class", "cost_class", width=8),
    Col("Kind", "allocation_kind", width=11),
    Col("Amortized as closed", "closed_effective_cost", "money", total=True),
    Col("Amortized now", "current_effective_cost", "money", total=True),
    Col("Amortized change", "effective_cost_change", "money", total=True),
    Col("Billed as closed", "closed_billed_cost", "money", total=True),
    Col("Billed now", "current_billed_cost", "money", total=True),
    Col("Billed change", "billed_cost_change", "money", total=True),
]
USAGE_CHANGE_COLUMNS = [
    Col("Month", "billing_period", width=9),
    Col("Feature", "feature", width=16),
    Col("COGS as closed", "closed_cogs", "money"),
    Col("COGS now", "current_cogs", "money"),
    Col("Useful outputs as closed", "closed_useful_outputs", "count"),
    Col("Useful outputs now", "current_useful_outputs", "count"),
    Col("Per useful output as closed", "closed_cost_per_useful_output", "unit"),
    Col("Per useful output now", "current_cost_per_useful_output", "unit"),
]


def _changes_sheet(book: Workbook, figures: MonthFigures) -> None:
    ws = book.sheet("Changes since last close")
    ws.write_string(0, 0, f"Restatements of closed months up to {figures.month}", book.formats["title"])
    if figures.changes.is_empty() and figures.usage_changes.is_empty():
        ws.write_string(2, 0, no_changes_text(figures), book.formats["note"])
        return
    top = book.table(ws, 2, CHANGE_COLUMNS, figures.changes.to_dicts())
    if figures.usage_changes.height:
        ws.write_string(top, 0, "Usage and unit costs since the close", book.formats["title"])
        book.table(ws, top + 2, USAGE_CHANGE_COLUMNS, figures.usage_changes.to_dicts())
    ws.freeze_panes(3, 3)


def no_changes_text(figures: MonthFigures) -> str:
    if figures.close is None:
        return (
            f"{figures.month} is not closed and no earlier closed month was restated. "
            f"Close it with `cogs close --month {figures.month}`."
        )
    return f"No changes since the close of {figures.month} ({figures.close.label})."


def write_workbook(figures: MonthFigures, config: CogsConfig, path: Path, generated: datetime | None = None) -> Path:
    book = Workbook(path, figures.currency)
    _summary_sheet(book, figures, config, generated or datetime.now(UTC))
    _by_feature_sheet(book, figures)
    _unit_sheet(book, figures)
    _reconciliation_sheet(book, figures)
    _unallocated_sheet(book, figures)
    _changes_sheet(book, figures)
    book.close()
    return path


# --- PDF with headless Chromium ---------------------------------------------------------------------------


class ChromiumError(RuntimeError):
    """Chromium is missing or failed; the message says which binary, the command's error and what to do."""


def find_chromium(configured: str | None = None) -> str | None:
    """The configured binary, else the first Chromium or Chrome on PATH; None when there is none."""
    if configured:
        return configured if Path(configured).exists() else shutil.which(configured)
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


def run_chromium(binary: str, *args: str, timeout: float = CHROMIUM_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium with a throwaway profile; raises ChromiumError when it fails."""
    with tempfile.TemporaryDirectory(prefix="cogs-chromium-") as profile:
        command = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ChromiumError(f"{binary} did not run: {exc}") from exc
    if result.returncode:
        tail = " ".join(result.stderr.strip().splitlines()[-3:])
        raise ChromiumError(f"{binary} exited with {result.returncode}: {tail}")
    return result


def print_pdf(html: Path, pdf: Path, binary: str) -> Path:
    """Print ``html`` to ``pdf`` (A4 landscape from the page's print CSS, no header or footer)."""
    pdf.unlink(missing_ok=True)
    run_chromium(binary, "--no-pdf-header-footer", f"--print-to-pdf={pdf.resolve()}", html.resolve().as_uri())
    if not pdf.exists() or pdf.read_bytes()[:5] != b"%PDF-":
        raise ChromiumError(f"{binary} reported success but wrote no PDF at {pdf}")
    return pdf


NO_CHROMIUM = (
    "PDF skipped: no Chromium found (looked for {names} on PATH). Install Debian's chromium "
    "(`apt-get install chromium`) or set reports.chromium in cogs.yaml; the HTML and XLSX are complete."
)


# --- the pack -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pack:
    """The files written for a month and what happened to the PDF."""

    month: str
    html: Path
    xlsx: Path
    pdf: Path | None
    pdf_note: str | None
    close: Close | None
    changed_lines: int

    @property
    def files(self) -> list[Path]:
        return [p for p in (self.xlsx, self.html, self.pdf) if p is not None]


def write_pack(
    warehouse: Warehouse, config: CogsConfig, month: str, *, pdf: bool | None = None, generated: datetime | None = None
) -> Pack:
    """Write ``cogs-<month>.xlsx``, ``.html`` and (with Chromium) ``.pdf`` under ``reports.output_dir``."""
    out = Path(config.reports.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    generated = generated or datetime.now(UTC)
    warehouse.ensure_schema()  # a warehouse from an older version gets the close tables and report views
    figures = month_figures(warehouse, month)
    html = out / f"cogs-{month}.html"
    html.write_text(render_html(figures, config, generated))
    xlsx = write_workbook(figures, config, out / f"cogs-{month}.xlsx", generated)
    pdf_path, note = _pdf(html, config, config.reports.pdf if pdf is None else pdf)
    return Pack(month, html, xlsx, pdf_path, note, figures.close, figures.changes.height)


def _pdf(html: Path, config: CogsConfig, wanted: bool) -> tuple[Path | None, str | None]:
    if not wanted:
        return None, "PDF not written (turned off by --no-pdf or reports.pdf: false)"
    binary = find_chromium(config.reports.chromium)
    if binary is None:
        note = NO_CHROMIUM.format(names=", ".join(CHROMIUM_NAMES))
        log.warning(note)
        return None, note
    try:
        return print_pdf(html, html.with_suffix(".pdf"), binary), None
    except ChromiumError as exc:  # the HTML and XLSX stand on their own: report, don't lose them
        log.warning("PDF of %s failed: %s", html, exc)
        return None, f"PDF failed: {exc}"


def write_report(warehouse: Warehouse, config: CogsConfig, month: str) -> Path:
    """Write the month's close pack (XLSX, HTML, PDF when Chromium is there); returns the HTML's path."""
    return write_pack(warehouse, config, month).html
