"""``cogs``: run the pipeline, query the warehouse, write reports, open the Dagster UI."""

from __future__ import annotations

import json
import os
import shutil
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import polars as pl
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from connectors.base import SourceError
from models.config import CogsConfig, ConfigError
from models.period import BillingPeriod
from pipelines.settings import CONFIG_ENV, DEFAULT_CONFIG, ensure_dagster_home, load_config
from pipelines.warehouse import Warehouse

app = typer.Typer(
    help="inference-cogs: AI inference bills and telemetry → COGS per feature and per useful output.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# Piped output (CI logs, `make demo | tee`) gets a readable width instead of rich's 80 columns.
console = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 120)

DEMO_DIR = Path(".cogs/demo")
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help=f"cogs.yaml to use (default: ${CONFIG_ENV}, ./{DEFAULT_CONFIG}, then the demo's {DEMO_DIR}/cogs.yaml)",
    ),
]
MonthOption = Annotated[str | None, typer.Option("--month", "-m", help="billing month YYYY-MM (default: last month)")]


def last_month(now: datetime | None = None) -> str:
    return BillingPeriod.containing(now or datetime.now(UTC)).previous.key


def _resolve_config(path: Path | None) -> CogsConfig:
    if path is None and CONFIG_ENV not in os.environ and not Path(DEFAULT_CONFIG).exists():
        demo = DEMO_DIR / "cogs.yaml"
        if demo.exists():
            path = demo
    try:
        return load_config(path)
    except ConfigError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None


def _month(month: str | None) -> str:
    month = month or last_month()
    try:
        datetime.strptime(month, "%Y-%m")
    except ValueError:
        err.print(f"[red]error:[/] --month must look like 2026-10, got {month!r}")
        raise typer.Exit(2) from None
    return month


def _table(
    frame: pl.DataFrame,
    title: str | None = None,
    money: tuple[str, ...] = (),
    unit: tuple[str, ...] = (),
    pct: tuple[str, ...] = (),
) -> Table:
    """A rich table; ``money`` columns as $1,234.56, ``unit`` as $0.0123, ``pct`` as 12.3%."""
    table = Table(title=title, title_justify="left", header_style="bold")
    for name, dtype in frame.schema.items():
        table.add_column(name, justify="right" if dtype.is_numeric() else "left")
    for row in frame.iter_rows(named=True):
        table.add_row(
            *(
                _cell(v, "money" if k in money else "unit" if k in unit else "pct" if k in pct else "")
                for k, v in row.items()
            )
        )
    return table


def _cell(value: object, style: str) -> str:
    if value is None:
        return "—"
    if style == "money":
        return f"${float(value):,.2f}"  # type: ignore[arg-type]
    if style == "unit":
        return f"${float(value):,.4f}"  # type: ignore[arg-type]
    if style == "pct":
        return f"{float(value):.1%}"  # type: ignore[arg-type]
    if isinstance(value, float):
        return f"{value:,.4f}"
    if isinstance(value, Decimal) and value == value.to_integral_value() and value.as_tuple().exponent == 0:
        return f"{int(value):,}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def run_month(config: CogsConfig, month: str) -> None:
    """Materialize everything for ``month`` with a progress bar; exit 1 with the reason on failure."""
    from pipelines.run import RunFailed, Step, materialize_month

    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=False) as progress:
        task = progress.add_task(f"materializing {month}", total=None)

        def on_step(step: Step, i: int, n: int) -> None:
            progress.update(task, description=f"{month}: {step.label}", completed=i, total=n)

        try:
            results = materialize_month(config, month, on_step)
        except (RunFailed, SourceError) as exc:
            progress.stop()
            err.print(f"[red]error:[/] {exc}")
            err.print("The warehouse keeps its previous state for the partitions that failed.")
            raise typer.Exit(1) from None
        progress.update(task, description=f"{month}: done", completed=len(results), total=len(results))


@app.command()
def run(config: ConfigOption = None, month: MonthOption = None) -> None:
    """Materialize every asset (ingest → warehouse → allocation → marts → report) for one month."""
    cfg = _resolve_config(config)
    m = _month(month)
    run_month(cfg, m)
    print_summary(cfg, m)


@app.command()
def query(
    sql: Annotated[
        str, typer.Argument(help='SQL to run on the warehouse, e.g. "SELECT * FROM v_feature_cogs_monthly"')
    ],
    config: ConfigOption = None,
    output: Annotated[str, typer.Option("--format", "-f", help="table, csv or json")] = "table",
) -> None:
    """Run SQL on the warehouse and print the result as a table, CSV or JSON."""
    cfg = _resolve_config(config)
    try:
        frame = Warehouse(url=cfg.warehouse).read(sql)
    except Exception as exc:  # the database's own message is the useful part
        err.print(f"[red]error:[/] query failed: {str(exc).splitlines()[0]}")
        raise typer.Exit(1) from None
    if output == "csv":
        sys.stdout.write(frame.write_csv())
    elif output == "json":
        sys.stdout.write(json.dumps(frame.to_dicts(), default=str, indent=2) + "\n")
    elif output == "table":
        console.print(_table(frame))
        console.print(f"[dim]{frame.height} row(s)[/]")
    else:
        err.print(f"[red]error:[/] --format must be table, csv or json, got {output!r}")
        raise typer.Exit(2)


@app.command()
def report(config: ConfigOption = None, month: MonthOption = None) -> None:
    """Write the month's HTML COGS report from the warehouse (run the month first)."""
    from pipelines.report import write_report

    cfg = _resolve_config(config)
    path = write_report(Warehouse(url=cfg.warehouse), cfg, _month(month))
    console.print(f"report written: [bold]{path}[/]")


@app.command()
def explain(
    feature: Annotated[str, typer.Option("--feature", help="feature to explain, e.g. support_chat")],
    config: ConfigOption = None,
    month: MonthOption = None,
) -> None:
    """Waterfall from provider bills to one feature's COGS and unit cost."""
    cfg = _resolve_config(config)
    m = _month(month)
    wh = Warehouse(url=cfg.warehouse)
    lines = wh.read(
        "SELECT provider_name, service_name, rule_id, driver, SUM(effective_cost) AS cogs, "
        "SUM(billed_cost) AS billed FROM cost_allocations WHERE x_billing_period = :p AND feature = :f "
        "GROUP BY provider_name, service_name, rule_id, driver ORDER BY cogs DESC",
        p=m,
        f=feature,
    )
    if lines.is_empty():
        known = wh.read("SELECT DISTINCT feature FROM cost_allocations WHERE x_billing_period = :p", p=m)
        err.print(
            f"[red]error:[/] no cost for feature {feature!r} in {m}; features: {sorted(known['feature'].to_list())}"
        )
        raise typer.Exit(1)
    unit = wh.read("SELECT * FROM v_feature_cogs_monthly WHERE billing_period = :p AND feature = :f", p=m, f=feature)
    console.print(_table(lines, f"{feature}, {m}: from bills to COGS", money=("cogs", "billed")))
    if unit.height:
        r = unit.row(0, named=True)
        console.print(
            f"COGS [bold]${float(r['cogs']):,.2f}[/] ÷ {int(r['useful_outputs']):,} useful outputs = "
            f"[bold]${float(r['cost_per_useful_output'] or 0):,.4f}[/] per useful output "
            f"(waste: ${float(r['waste_cost']):,.2f} on failed and retried requests)"
        )


@app.command()
def check(config: ConfigOption = None, month: MonthOption = None) -> None:
    """Validate cogs.yaml and read each source for a month without writing (a dry run); exit 1 if any fails."""
    from connectors import connector
    from models.config import OtelGenAITelemetry

    cfg = _resolve_config(config)
    m = _month(month)
    rows, errors = [], []
    for source in [*cfg.sources, *cfg.telemetry]:
        try:
            with console.status(f"reading {source.name} for {m} …"):
                kwargs = {"useful_output": {}} if isinstance(source, OtelGenAITelemetry) else {}
                result = connector(source.type).load(source, BillingPeriod(m), **kwargs)
            status, detail = "ok", f"{len(result.files)} file(s)/page(s)" if result.files else ""
            found, total, bad = result.frame.height, result.source_total, result.quarantine.height
        except Exception as exc:  # report every source, then fail
            status, detail, found, total, bad = "error", "see below", None, None, None
            errors.append(str(exc))
        rows.append({"source": source.name, "type": source.type, "status": status, "rows": found,
                     "provider total": total, "quarantined": bad, "detail": detail})  # fmt: skip
    frame = pl.DataFrame(rows, schema_overrides={"provider total": pl.Decimal(38, 12)}, infer_schema_length=None)
    console.print(_table(frame, f"cogs.yaml is valid; sources for {m}", money=("provider total",)))
    for message in errors:
        err.print(f"[red]error:[/] {message}", soft_wrap=True)
    if errors:
        raise typer.Exit(1)


@app.command()
def ui(config: ConfigOption = None) -> None:
    """Open the Dagster UI on workspace.yaml (lineage, runs, checks, schedules)."""
    cfg_path = config or Path(os.environ.get(CONFIG_ENV, DEFAULT_CONFIG))
    if not cfg_path.exists() and (DEMO_DIR / "cogs.yaml").exists():
        cfg_path = DEMO_DIR / "cogs.yaml"
    _resolve_config(cfg_path)
    os.environ[CONFIG_ENV] = str(cfg_path.resolve())
    ensure_dagster_home()
    dagster = shutil.which("dagster") or str(Path(sys.executable).with_name("dagster"))
    target = ["-w", "workspace.yaml"] if Path("workspace.yaml").exists() else ["-m", "pipelines.definitions"]
    os.execv(dagster, [dagster, "dev", *target])


@app.command()
def demo(
    month: MonthOption = None,
    seed: Annotated[int, typer.Option(help="random seed of the generated company")] = 7,
    directory: Annotated[Path, typer.Option("--dir", help="where to write the sample exports")] = DEMO_DIR,
    warehouse: Annotated[str | None, typer.Option(help="SQLAlchemy URL (default: DuckDB under .cogs/)")] = None,
) -> None:
    """Generate a month of provider exports and telemetry for a fictional AI company, run everything, summarize."""
    from pipelines.demo.run import generate, serve_api

    m = _month(month)
    with console.status(f"generating {m} for the demo company (seed {seed}) …"):
        files = generate(m, seed, directory)
    console.print(f"sample exports written under [bold]{directory}[/]: " + ", ".join(files.describe()))
    with serve_api(files) as config_path:
        cfg = _resolve_config(config_path)
        if warehouse:
            cfg = cfg.model_copy(update={"warehouse": warehouse})
        run_month(cfg, m)
    print_summary(cfg, m)


def print_summary(config: CogsConfig, month: str) -> None:
    from pipelines.report import month_figures

    wh = Warehouse(url=config.warehouse)
    f = month_figures(wh, month)
    console.print(_table(f.by_provider, f"Spend by provider, {month}", money=("billed_cost", "effective_cost")))
    features = f.by_feature.select(
        "feature",
        pl.col("cogs").alias("COGS"),
        (pl.col("cogs").cast(pl.Float64) / float(f.total_effective or 1)).alias("share"),
        "requests",
        pl.col("useful_outputs").alias("useful outputs"),
        pl.col("cost_per_useful_output").alias("per useful output"),
        pl.col("waste_cost").alias("waste"),
    )
    console.print(
        _table(
            features,
            "COGS per feature and per useful output",
            money=("COGS", "waste"),
            unit=("per useful output",),
            pct=("share",),
        )
    )
    console.print(
        f"idle: [bold]{f.share('idle'):.1%}[/] of COGS · unallocated: [bold]{f.share('unallocated'):.1%}[/] · "
        f"reconciled sources: {int((f.reconciliation['difference'] == 0).sum())}/{f.reconciliation.height}"
    )
    if f.anomalies.height:
        anomalies = f.anomalies.select(
            "feature",
            "metric",
            "start_date",
            "days",
            pl.col("impact_usd").alias("impact"),
            pl.col("drivers").map_elements(_top_driver, return_dtype=pl.String).alias("top driver"),
        )
        console.print(_table(anomalies, "Anomalies found", money=("impact",)))
    else:
        console.print("anomalies found: none")
    console.print(f"report: [bold]{Path(config.reports.output_dir) / f'cogs-{month}.html'}[/]")


def _top_driver(drivers: str) -> str:
    first = (json.loads(drivers or "[]") or [{}])[0]
    return f"{first['child']} +${first['delta']:,.2f}" if first else "—"


def main() -> None:
    app()
