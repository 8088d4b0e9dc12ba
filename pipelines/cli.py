"""``cogs``: run the pipeline, query the warehouse, write reports, open the Dagster UI."""

from __future__ import annotations

import json
import os
import shutil
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import polars as pl
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from connectors.base import SourceError
from models.allocation import waterfall_steps
from models.config import CogsConfig, ConfigError
from models.period import BillingPeriod
from pipelines.settings import CONFIG_ENV, DEFAULT_CONFIG, ensure_dagster_home, load_config
from pipelines.warehouse import Warehouse

if TYPE_CHECKING:  # the report stack (matplotlib, xlsxwriter) loads only for the commands that write one
    from pipelines.report import Pack

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
def detect(
    series: Annotated[
        Path,
        typer.Option(
            "--series",
            help="CSV of daily series: series_id, date (YYYY-MM-DD), spend_usd, useful_outputs (may be empty), "
            "plus any dimension columns (e.g. model, region); rows of one series and date are summed",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="CSV to write, one row per flagged day and metric, columns in this order: series_id, date, "
            "metric (spend | unit_cost), score, expected, actual, impact_usd, relative_change, run_start, basis, "
            "drivers ('-': standard output)",
        ),
    ],
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="take the anomalies: settings of this cogs.yaml")
    ] = None,
    score_threshold: Annotated[float | None, typer.Option(help="robust score needed (default 5)")] = None,
    min_impact: Annotated[float | None, typer.Option(help="USD of excess needed per day (default 100)")] = None,
    min_relative: Annotated[float | None, typer.Option(help="relative rise needed, 0.3 = +30% (default)")] = None,
    baseline_weeks: Annotated[int | None, typer.Option(help="same-weekday weeks in the baseline (default 4)")] = None,
) -> None:
    """Backtest the anomaly detector on your own daily history, without a warehouse.

    Each series is scored on spend and on unit cost (spend / useful outputs), as the pipeline scores them.

    Output columns, in this order:
    series_id, date, metric (spend | unit_cost), score (robust z-score),
    expected (the baseline: USD, or USD per useful output), actual (same unit),
    impact_usd (excess cost that day), relative_change (actual / expected - 1),
    run_start (first day of the run of consecutive flagged days the day belongs to),
    basis (what the baseline is the median of), drivers (per dimension column, the value whose spend rose most).
    """
    from models.anomaly import SeriesError, detections, parse_series
    from models.config import AnomalyConfig

    settings = _resolve_config(config).anomalies if config else AnomalyConfig()
    overrides = {
        "score_threshold": score_threshold,
        "min_impact_usd": min_impact,
        "min_relative_change": min_relative,
        "baseline_weeks": baseline_weeks,
    }
    try:
        settings = AnomalyConfig.model_validate(
            settings.model_dump() | {k: v for k, v in overrides.items() if v is not None}
        )
        text = series.read_text(encoding="utf-8-sig")  # spreadsheet exports often start with a BOM
        frame = parse_series(text, str(series))
    except (OSError, UnicodeDecodeError) as exc:
        err.print(f"[red]error:[/] cannot read {series}: {exc}")
        raise typer.Exit(2) from None
    except (SeriesError, ValueError) as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    found = detections(frame, settings)
    if str(out) == "-":
        sys.stdout.write(found.write_csv())
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        found.write_csv(out)
    runs = found.select("series_id", "metric", "run_start").n_unique() if found.height else 0
    err.print(
        f"{frame['series_id'].n_unique()} series, {found.height} flagged day(s) in {runs} run(s)"
        + ("" if str(out) == "-" else f" → {out}")
    )


@app.command()
def report(
    config: ConfigOption = None,
    month: MonthOption = None,
    flash: Annotated[
        bool, typer.Option("--flash", help="write the weekly flash (week over week) instead of the month's pack")
    ] = False,
    week: Annotated[
        str | None,
        typer.Option("--week", help="with --flash: a day (YYYY-MM-DD) of the week to report (default: last full week)"),
    ] = None,
    pdf: Annotated[
        bool, typer.Option("--pdf/--no-pdf", help="also print the HTML to PDF with headless Chromium")
    ] = True,
) -> None:
    """Write the month's close pack (XLSX, HTML, PDF) from the warehouse, or the weekly flash with --flash."""
    from datetime import date

    from pipelines.flash import last_complete_week, terminal_tables, week_start, write_flash
    from pipelines.report import write_pack

    cfg = _resolve_config(config)
    wh = Warehouse(url=cfg.warehouse)
    if flash:
        try:
            day = date.fromisoformat(week) if week else None
        except ValueError:
            err.print(f"[red]error:[/] --week must be a date like 2026-10-12, got {week!r}")
            raise typer.Exit(2) from None
        monday = week_start(day) if day else last_complete_week(datetime.now(UTC).date())
        figures, path = write_flash(wh, cfg, monday)
        for table in terminal_tables(figures):
            console.print(table)
        console.print(f"flash written: [bold]{path}[/]")
        return
    pack = write_pack(wh, cfg, _month(month), pdf=pdf and cfg.reports.pdf)
    status = f"closed {pack.close.label}" if pack.close else "draft: not closed"
    console.print(f"close pack for {pack.month} ({status}; {pack.changed_lines} line(s) changed since closes):")
    _print_pack(pack)


def _print_pack(pack: Pack) -> None:
    for path in pack.files:
        console.print(f"  [bold]{path}[/]")
    if pack.pdf_note:
        err.print(f"[yellow]note:[/] {pack.pdf_note}")


@app.command()
def close(
    config: ConfigOption = None,
    month: MonthOption = None,
    reclose: Annotated[
        bool, typer.Option("--reclose", help="close a month again; the earlier close is kept, reports compare to this")
    ] = False,
    by: Annotated[str | None, typer.Option("--by", help="who closes, kept with the close (default: your user)")] = None,
    pdf: Annotated[
        bool, typer.Option("--pdf/--no-pdf", help="also print the HTML to PDF with headless Chromium")
    ] = True,
) -> None:
    """Close a month: freeze its numbers, then write its close pack; later restatements show line by line."""
    import getpass

    cfg = _resolve_config(config)
    try:
        who = by or getpass.getuser()
    except (KeyError, OSError):  # no login name in some containers
        who = "cli"
    _close_and_pack(cfg, _month(month), who, reclose=reclose, pdf=pdf)


def _close_and_pack(cfg: CogsConfig, month: str, who: str, *, reclose: bool, pdf: bool) -> None:
    """Close ``month`` (``cogs close``, ``cogs demo``), then write and list its close pack."""
    from pipelines.close import CloseError, close_month
    from pipelines.report import write_pack

    wh = Warehouse(url=cfg.warehouse)
    try:
        done = close_month(wh, month, who, reclose=reclose)
    except CloseError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    console.print(
        f"{month} closed {done.label}: {done.lines:,} cost lines frozen, amortized ${done.effective_cost:,.2f}, "
        f"billed ${done.billed_cost:,.2f}"
    )
    unreconciled = wh.read("SELECT source FROM v_reconciliation WHERE billing_period = :p AND difference <> 0", p=month)
    if unreconciled.height:
        err.print(f"[yellow]warning:[/] closed with unreconciled sources: {', '.join(unreconciled['source'])}")
    _print_pack(write_pack(wh, cfg, month, pdf=pdf and cfg.reports.pdf))


@app.command()
def explain(
    feature: Annotated[str, typer.Option("--feature", help="feature to explain, e.g. support_chat")],
    config: ConfigOption = None,
    month: MonthOption = None,
) -> None:
    """Waterfall from provider bills to one feature's COGS and unit cost, then the rules behind it."""
    cfg = _resolve_config(config)
    m = _month(month)
    wh = Warehouse(url=cfg.warehouse)
    steps = wh.read(
        "SELECT provider_name, allocation_kind, cost_class, SUM(effective_cost) AS cost FROM v_feature_waterfall "
        "WHERE billing_period = :p AND feature = :f GROUP BY provider_name, allocation_kind, cost_class",
        p=m,
        f=feature,
    )
    if steps.is_empty():
        known = wh.read("SELECT DISTINCT feature FROM cost_allocations WHERE x_billing_period = :p", p=m)
        err.print(
            f"[red]error:[/] no cost for feature {feature!r} in {m}; features: {sorted(known['feature'].to_list())}"
        )
        raise typer.Exit(1)
    unit = wh.read("SELECT * FROM v_feature_cogs_monthly WHERE billing_period = :p AND feature = :f", p=m, f=feature)
    console.print(
        _waterfall_table(waterfall_steps(steps, unit.row(0, named=True) if unit.height else None), feature, m)
    )
    rules = wh.read(
        "SELECT rule_id, provider_name, service_name, allocation_kind AS kind, cost_class, driver, "
        "COUNT(DISTINCT x_charge_id) AS charges, SUM(effective_cost) AS cost, SUM(billed_cost) AS billed "
        "FROM cost_allocations WHERE x_billing_period = :p AND feature = :f "
        "GROUP BY rule_id, provider_name, service_name, allocation_kind, cost_class, driver ORDER BY cost DESC",
        p=m,
        f=feature,
    )
    console.print(
        _table(
            rules,
            f"{feature}, {m}: by rule (each part is a row of cost_allocations)",
            money=("cost", "billed"),
        )
    )


def _waterfall_table(steps: list[tuple[str, Decimal, Decimal | None]], feature: str, month: str) -> Table:
    table = Table(title=f"{feature}, {month}: from provider bills to COGS", title_justify="left", header_style="bold")
    for name, justify in (("step", "left"), ("amount", "right"), ("running", "right"), ("", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    top = max([abs(r) for _, _, r in steps if r is not None] + [abs(a) for _, a, _ in steps[:-1]] + [Decimal(1)])
    for label, amount, running in steps:
        per_unit = label.startswith("÷")
        shown = ("-" if amount < 0 else "") + (f"${abs(amount):,.4f}" if per_unit else f"${abs(amount):,.2f}")
        level = running if running is not None else (None if per_unit else amount)
        bar = "" if level is None else "█" * max(0, round(30 * float(level / top)))
        table.add_row(label, shown, "" if running is None else f"${float(running):,.2f}", bar)
    return table


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
def collect(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="folder for date=YYYY-MM-DD/hour=HH/*.jsonl span files")
    ] = Path(".cogs/spans"),
    port: Annotated[int, typer.Option(help="OTLP/HTTP port (0: any free port)")] = 4318,
    host: Annotated[str, typer.Option(help="address to listen on; 0.0.0.0 exposes it to the network")] = "127.0.0.1",
    max_request_mib: Annotated[int, typer.Option(help="request size limit, before and after gzip")] = 20,
    max_in_flight: Annotated[int, typer.Option(help="requests handled at once; more get 503 + Retry-After")] = 16,
    rotate_seconds: Annotated[float, typer.Option(help="close each file (make it readable) after this long")] = 60.0,
) -> None:
    """Receive OTLP/HTTP traces (POST /v1/traces, protobuf or JSON) into hourly files an otel_genai source reads."""
    from pipelines.collector import MIB, Collector, CollectorSettings

    settings = CollectorSettings(
        out_dir=out,
        host=host,
        port=port,
        max_request_bytes=max_request_mib * MIB,
        max_in_flight=max_in_flight,
        rotate_seconds=rotate_seconds,
    )
    try:
        collector = Collector(settings).start()
    except OSError as exc:
        err.print(f"[red]error:[/] can't listen on {host}:{port}: {exc.strerror or exc}")
        raise typer.Exit(1) from None
    console.print(
        f"receiving OTLP/HTTP traces on http://{host}:{collector.port}/v1/traces → {out}/ "
        "(point an otel_genai telemetry source's `path` there); Ctrl-C to stop"
    )
    collector.serve_until_interrupted()
    stats = ", ".join(f"{k} {v:,}" for k, v in sorted(collector.stats.items())) or "no requests"
    console.print(f"stopped: {len(collector.writer.files_written)} file(s) written; {stats}")


@app.command()
def demo(
    month: MonthOption = None,
    seed: Annotated[int, typer.Option(help="random seed of the generated company")] = 7,
    directory: Annotated[Path, typer.Option("--dir", help="where to write the sample exports")] = DEMO_DIR,
    warehouse: Annotated[
        str | None, typer.Option(help="SQLAlchemy URL (default: <dir>/warehouse.duckdb, rebuilt each run)")
    ] = None,
) -> None:
    """Generate a month of provider exports and telemetry for a fictional AI company, run everything, summarize.

    Then close the month (the close pack: XLSX, HTML, PDF) and send its anomalies to a local alert file.
    """
    from pipelines.alerts import run_alerts
    from pipelines.demo.run import generate, serve_api

    m = _month(month)
    with console.status(f"generating {m} for the demo company (seed {seed}) …"):
        files = generate(m, seed, directory)
    console.print(f"sample exports written under [bold]{directory}[/]: " + ", ".join(files.describe()))
    if not warehouse:  # the demo's own warehouse starts afresh each time, like its files
        files.warehouse.unlink(missing_ok=True)
        files.alerts.unlink(missing_ok=True)
    with serve_api(files) as config_path:
        cfg = _resolve_config(config_path)
        if warehouse:
            cfg = cfg.model_copy(update={"warehouse": warehouse})
        run_month(cfg, m)
    print_summary(cfg, m)
    console.print(f"closing {m} for finance (the close pack):")
    _close_and_pack(cfg, m, "cogs demo", reclose=True, pdf=True)
    alerts = run_alerts(Warehouse(url=cfg.warehouse), cfg)
    console.print(f"alerts: {alerts.summary()} → [bold]{files.alerts}[/]")


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
