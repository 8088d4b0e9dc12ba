"""The month's COGS report: figures from the warehouse, charts as inline SVG, one self-contained HTML file."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import polars as pl
from jinja2 import Environment, PackageLoader, select_autoescape
from matplotlib.figure import Figure  # pyplot-free: no global state, no display backend
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from models.config import CogsConfig
from pipelines.warehouse import Warehouse

PALETTE = ["#2f6db5", "#e07b39", "#3a9e6f", "#b5452f", "#7a5bb5", "#8c8c8c", "#c9c9c9"]
SPECIAL = {"idle": "#9aa5b1", "unallocated": "#d3d7dc"}


@dataclass
class MonthFigures:
    """Everything the report, the demo summary and ``cogs explain`` show for one month."""

    month: str
    by_provider: pl.DataFrame
    by_feature: pl.DataFrame
    daily: pl.DataFrame
    by_kind: pl.DataFrame
    reconciliation: pl.DataFrame
    anomalies: pl.DataFrame

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


def month_figures(warehouse: Warehouse, month: str) -> MonthFigures:
    p = {"p": month}
    return MonthFigures(
        month=month,
        by_provider=warehouse.read(
            "SELECT provider_name, SUM(billed_cost) AS billed_cost, SUM(effective_cost) AS effective_cost, "
            "SUM(charge_rows) AS charge_rows FROM v_spend_by_provider WHERE billing_period = :p "
            "GROUP BY provider_name ORDER BY effective_cost DESC",
            **p,
        ),
        by_feature=warehouse.read(
            "SELECT feature, cogs, direct_cost, shared_cost, waste_cost, requests, useful_outputs, "
            "cost_per_useful_output, cost_per_request FROM v_feature_cogs_monthly WHERE billing_period = :p "
            "ORDER BY CASE WHEN feature IN ('idle', 'unallocated') THEN 1 ELSE 0 END, cogs DESC",
            **p,
        ),
        daily=warehouse.read(
            "SELECT date, feature, cogs, useful_outputs, cost_per_useful_output FROM feature_costs_daily "
            "WHERE billing_period = :p ORDER BY date, feature",
            **p,
        ),
        by_kind=warehouse.read(
            "SELECT provider_name, allocation_kind, SUM(effective_cost) AS effective_cost FROM cost_allocations "
            "WHERE x_billing_period = :p GROUP BY provider_name, allocation_kind "
            "ORDER BY provider_name, allocation_kind",
            **p,
        ),
        reconciliation=warehouse.read(
            "SELECT source, provider_total, warehouse_billed_cost, difference, rows_loaded, rows_quarantined "
            "FROM v_reconciliation WHERE billing_period = :p ORDER BY source",
            **p,
        ),
        anomalies=warehouse.read(
            "SELECT series_id, metric, dimension_value AS feature, start_date, end_date, days, impact_usd, "
            "max_score, drivers FROM cost_anomalies WHERE billing_period = :p ORDER BY impact_usd DESC",
            **p,
        ),
    )


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


def daily_cogs_chart(daily: pl.DataFrame) -> str:
    wide = daily.pivot(on="feature", index="date", values="cogs", aggregate_function="sum").sort("date").fill_null(0)
    features = [c for c in wide.columns if c != "date"]
    features.sort(key=lambda f: (f in SPECIAL, f))
    colors = _colors(features)
    fig = Figure(figsize=(10, 3.6))
    ax = fig.subplots()
    bottom = [0.0] * wide.height
    for feature in features:
        values = [float(v) for v in wide[feature]]
        ax.bar(wide["date"].to_list(), values, bottom=bottom, label=feature, color=colors[feature], width=0.85)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_ylabel("USD per day (amortized)")
    ax.set_title("Daily COGS by feature")
    ax.legend(ncols=3, fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    fig.autofmt_xdate()
    return _svg(fig)


def unit_cost_chart(daily: pl.DataFrame) -> str:
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
    ax.legend(ncols=4, fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.3))
    ax.spines[["top", "right"]].set_visible(False)
    fig.autofmt_xdate()
    return _svg(fig)


def waterfall_chart(figures: MonthFigures) -> str:
    """From each provider's bill to what is attributed to features, idle and unallocated."""
    steps = [
        (f"{r['provider_name']} bill", float(r["effective_cost"])) for r in figures.by_provider.iter_rows(named=True)
    ]
    kinds = figures.by_kind.group_by("allocation_kind").agg(pl.col("effective_cost").sum())
    kind_total = {r["allocation_kind"]: float(r["effective_cost"]) for r in kinds.iter_rows(named=True)}
    fig = Figure(figsize=(10, 3.4))
    ax = fig.subplots()
    running = 0.0
    labels = []
    for i, (label, value) in enumerate(steps):
        ax.bar(i, value, bottom=running, color=PALETTE[i % len(PALETTE)])
        running += value
        labels.append(label)
    total_index = len(steps)
    ax.bar(total_index, running, color="#333333")
    labels.append("Total COGS basis")
    top = running
    for j, kind in enumerate(("direct", "shared", "idle", "unallocated"), start=total_index + 1):
        value = kind_total.get(kind, 0.0)
        ax.bar(j, value, bottom=top - value, color=SPECIAL.get(kind, PALETTE[j % len(PALETTE)]))
        top -= value
        labels.append(f"{kind}")
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("USD (amortized)")
    ax.set_title("Waterfall: provider bills → attributed, idle, unallocated")
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(fig)


def _rows(frame: pl.DataFrame) -> list[dict[str, object]]:
    return frame.to_dicts()


def render_html(figures: MonthFigures, config: CogsConfig) -> str:
    env = Environment(loader=PackageLoader("pipelines", "templates"), autoescape=select_autoescape(["html", "j2"]))
    env.filters["usd"] = lambda v: "" if v is None else f"${float(v):,.2f}"
    env.filters["unit"] = lambda v: "—" if v is None else f"${float(v):,.4f}"
    env.filters["num"] = lambda v: "" if v is None else f"{int(v):,}"
    env.filters["pct"] = lambda v: f"{float(v):.1%}"
    env.filters["exact"] = lambda v: "0 (exact)" if v == 0 else f"{Decimal(v):+,f}"
    anomalies = [a | {"drivers": json.loads(a["drivers"] or "[]")} for a in _rows(figures.anomalies)]
    return env.get_template("report.html.j2").render(
        company=config.company,
        month=figures.month,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        f=figures,
        providers=_rows(figures.by_provider),
        features=_rows(figures.by_feature),
        reconciliation=_rows(figures.reconciliation),
        anomalies=anomalies,
        idle_share=figures.share("idle"),
        unallocated_share=figures.share("unallocated"),
        charts={
            "daily": daily_cogs_chart(figures.daily) if figures.daily.height else "",
            "unit": unit_cost_chart(figures.daily) if figures.daily.height else "",
            "waterfall": waterfall_chart(figures) if figures.by_provider.height else "",
        },
    )


def write_report(warehouse: Warehouse, config: CogsConfig, month: str) -> Path:
    out = Path(config.reports.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"cogs-{month}.html"
    path.write_text(render_html(month_figures(warehouse, month), config))
    return path
