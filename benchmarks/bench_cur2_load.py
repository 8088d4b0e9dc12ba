"""Benchmark: load N rows of CUR 2.0 through the project's real ingest path, against a floor and the peer.

Contenders, each in its own child process on the same Parquet files, in the same run:

- ours: ``pipelines.ingest.ingest(Warehouse(<duckdb file>), config, "aws", period)`` with an ``aws_cur2``
  source pointing at the generated export (manifest, normalization, FOCUS mapping, checks, DuckDB insert);
- floor: DuckDB alone, ``CREATE TABLE cur AS SELECT * FROM read_parquet([<the manifest's files>])`` into a
  DuckDB file: the cost of reading and storing the same data with no mapping at all;
- scan: DuckDB decoding every column of the same files and storing nothing: no loader can beat it, so it
  shows which speed targets the machine allows at all;
- peer: the FinOps Foundation's ``focus-converter`` 1.0.0 (its ``aws`` provider, the calls of its ``convert``
  command) in its own venv (``peer_venv.sh``), reading the export's ``data/BILLING_PERIOD=…`` folder, i.e.
  the very same files: CUR 2.0 keeps the snake_case column names its ``aws`` provider expects.

Time is each child's own clock around the work (imports and interpreter start-up excluded; the process'
wall time is printed too). Memory is the child's peak RSS from ``wait4`` (the largest single process of its
tree) and the peak of the summed PSS of its process tree sampled every 50 ms (the converter forks writer
processes); a contender's peak memory is the larger of the two.

Usage: ``python benchmarks/bench_cur2_load.py --rows 1000000`` (``make bench``; ``ROWS=10000000 make bench``
also re-runs ours at 1M rows to show memory stays bounded). ``--profile`` writes a cProfile of our load.
Only the standard library is imported at module level: the peer's venv runs this file as its child too.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
PERIOD = "2025-01"
SOURCE_NAME = "aws"
EXPORT_NAME = "bench-cur2"  # generate_cur2.EXPORT_NAME (not imported: the peer's venv runs this file)
BASELINE_ROWS = 1_000_000  # the bounded-memory check compares a large run with this one
MEMORY_GROWTH_LIMIT = 1.5  # "not much larger": peak at N rows <= 1.5x the peak at 1M rows
TARGET_SPEEDUP = 10.0
TARGET_MEMORY_SHARE = 0.25
TARGET_FLOOR_RATIO = 3.0
_DATA_PART = re.compile(r"(data/BILLING_PERIOD=\d{4}-\d{2}/.+)$")


# --- children -----------------------------------------------------------------------------------------------


def manifest_files(export: Path, period: str = PERIOD) -> list[Path]:
    """The delivery's data files as the manifest names them, located under the local export folder."""
    manifest = export / "metadata" / f"BILLING_PERIOD={period}" / f"{export.name}-Manifest.json"
    urls = json.loads(manifest.read_text(encoding="utf-8"))["dataFiles"]
    files = []
    for url in urls:
        match = _DATA_PART.search(url)
        if not match:
            raise ValueError(f"{manifest}: dataFiles entry {url!r} is not under data/BILLING_PERIOD=")
        files.append(export / match.group(1))
    return files


def child_ours(export: Path, target: Path, profile: Path | None) -> dict[str, Any]:
    """The project's real path: ingest() of an aws_cur2 source into a DuckDB warehouse file."""
    sys.path.insert(0, str(ROOT))
    from models.config import AwsCur2Source, CogsConfig
    from pipelines.ingest import ingest
    from pipelines.warehouse import Warehouse

    url = f"duckdb:///{target}"
    source = AwsCur2Source(name=SOURCE_NAME, type="aws_cur2", path=str(export))
    config = CogsConfig(sources=[source], warehouse=url)
    warehouse = Warehouse(url=url)
    warehouse.ensure_schema()
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    summary = ingest(warehouse, config, SOURCE_NAME, PERIOD)
    if profiler:
        profiler.disable()
    seconds = time.perf_counter() - started
    if profiler and profile:
        profiler.dump_stats(str(profile))
    stored = warehouse.read("SELECT count(*) AS n FROM focus_costs")["n"][0]
    return {
        "seconds": seconds,
        "rows_in": summary.stats.get("rows"),
        "rows_out": int(stored),
        "quarantined": summary.quarantined,
        "files": summary.files,
        "reconciled": summary.source_total == summary.loaded_billed_cost,
        "billed": str(summary.loaded_billed_cost),
    }


def child_floor(export: Path, target: Path) -> dict[str, Any]:
    """DuckDB reading the manifest's Parquet files into a table of a DuckDB file, nothing else."""
    import duckdb

    files = [str(f) for f in manifest_files(export)]
    started = time.perf_counter()
    connection = duckdb.connect(str(target))
    connection.execute("CREATE TABLE cur AS SELECT * FROM read_parquet($files)", {"files": files})
    connection.close()
    seconds = time.perf_counter() - started
    with duckdb.connect(str(target), read_only=True) as check:
        row = check.execute("SELECT count(*) FROM cur").fetchone()
    return {"seconds": seconds, "rows_in": row[0] if row else 0, "rows_out": row[0] if row else 0}


def child_scan(export: Path) -> dict[str, Any]:
    """DuckDB decoding every column of the manifest's files (a count of each), storing nothing.

    No loader can take less time than reading its input: this bounds the speed any contender can reach.
    """
    import duckdb

    files = [str(f) for f in manifest_files(export)]
    connection = duckdb.connect()
    names = [
        r[0] for r in connection.execute("DESCRIBE SELECT * FROM read_parquet($files)", {"files": files}).fetchall()
    ]
    counts = ", ".join(f'count("{n}")' for n in names)
    started = time.perf_counter()
    row = connection.execute(f"SELECT count(*), {counts} FROM read_parquet($files)", {"files": files}).fetchone()
    seconds = time.perf_counter() - started
    rows = row[0] if row else 0
    return {"seconds": seconds, "rows_in": rows, "rows_out": 0, "columns": len(names)}


def child_converter(export: Path, target: Path, source_columns: bool) -> dict[str, Any]:
    """focus-converter 1.0.0, the calls of its ``convert`` command, provider ``aws``, Parquet dataset input."""
    import pyarrow.dataset as ds
    from focus_converter.converter import FocusConverter
    from focus_converter.data_loaders.data_exporter import ExportDataFormats
    from focus_converter.data_loaders.data_loader import DataFormats, ParquetDataFormat

    folder = export / "data" / f"BILLING_PERIOD={PERIOD}"
    if sorted(folder.glob("*.parquet")) != sorted(manifest_files(export)):
        raise RuntimeError(f"{folder} holds files the manifest does not name: the peer would read other rows")
    started = time.perf_counter()
    converter = FocusConverter(column_prefix=None, converted_column_prefix=None)
    converter.load_provider_conversion_configs()
    converter.load_data(
        data_path=str(folder), data_format=DataFormats.PARQUET, parquet_data_format=ParquetDataFormat.DATASET
    )
    converter.configure_data_export(
        export_path=str(target),
        export_include_source_columns=source_columns,
        basename_template=None,
        export_format=ExportDataFormats.PARQUET,
    )
    converter.prepare_horizontal_conversion_plan(provider="aws")
    converter.convert()
    seconds = time.perf_counter() - started
    output = ds.dataset(str(target))
    return {
        "seconds": seconds,
        "rows_in": ds.dataset(str(folder)).count_rows(),
        "rows_out": output.count_rows(),
        "columns_out": len(output.schema.names),
    }


def run_child(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", choices=("ours", "floor", "scan", "converter"), required=True)
    parser.add_argument("--export", type=Path, required=True)
    parser.add_argument("--target", type=Path, required=True)
    parser.add_argument("--profile", type=Path)
    parser.add_argument("--source-columns", action="store_true")
    args = parser.parse_args(argv)
    if args.child == "ours":
        result = child_ours(args.export, args.target, args.profile)
    elif args.child == "floor":
        result = child_floor(args.export, args.target)
    elif args.child == "scan":
        result = child_scan(args.export)
    else:
        result = child_converter(args.export, args.target, args.source_columns)
    print(json.dumps(result), flush=True)
    return 0


# --- measuring a child --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Measured:
    name: str
    seconds: float  # the child's own clock around the work
    wall: float  # process start to exit
    cpu: float  # user + system CPU seconds of the process tree (wait4), start-up included
    max_rss_mib: float  # wait4's ru_maxrss: the largest single process of the tree
    tree_pss_mib: float  # sampled peak of the summed PSS of the process tree
    result: dict[str, Any] = dataclasses.field(default_factory=dict)
    failure: str = ""  # why the child did not finish (killed over the memory limit, timeout, error)

    @property
    def peak_mib(self) -> float:
        return max(self.max_rss_mib, self.tree_pss_mib)

    def rate(self, rows: int) -> float:
        return rows / self.seconds if self.seconds else float("inf")

    def merged(self, other: Measured) -> Measured:
        """Two runs of one contender: the faster run's times, the larger memory peak (same rule for all)."""
        if self.failure or other.failure:
            return self if self.failure else other
        fast = self if self.seconds <= other.seconds else other
        return Measured(
            self.name, fast.seconds, fast.wall, fast.cpu, max(self.max_rss_mib, other.max_rss_mib),
            max(self.tree_pss_mib, other.tree_pss_mib), fast.result,
        )  # fmt: skip


def _parents() -> dict[int, int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def _tree(root: int) -> list[int]:
    parents = _parents()
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        tree += frontier
    return tree


def _pss_kib(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


@dataclasses.dataclass(frozen=True)
class Limits:
    timeout: float  # seconds
    memory_mib: float  # the child's tree is killed above this (the machine is shared: never let it swap or OOM)


def measure(name: str, command: list[str], limits: Limits) -> Measured:
    """Run a child, sample its tree's memory, reap it with wait4 for its peak RSS, parse its JSON result."""
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, cwd=ROOT, start_new_session=True)
        tree_peak, failure = 0, ""
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            tree_peak = max(tree_peak, sum(_pss_kib(p) for p in _tree(process.pid)))
            if time.perf_counter() - started > limits.timeout:
                failure = f"killed after {limits.timeout:.0f} s"
            elif tree_peak / 1024 > limits.memory_mib:
                failure = f"killed at {tree_peak / 1024:,.0f} MiB (limit {limits.memory_mib:,.0f} MiB)"
            if failure:
                os.killpg(process.pid, signal.SIGKILL)  # our own child's process group
                _, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.05)
        wall = time.perf_counter() - started
        code = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        stderr.seek(0)
        out, err = stdout.read(), stderr.read()
    cpu = usage.ru_utime + usage.ru_stime
    measured = Measured(name, float("nan"), wall, cpu, usage.ru_maxrss / 1024, tree_peak / 1024, failure=failure)
    if not failure and code != 0:
        lines = [line for line in err.splitlines() if "nanobind" not in line and not line.startswith(" - ")]
        measured.failure = f"exit {code}: " + " | ".join(lines[-6:])
    if not measured.failure:
        measured.result = json.loads(out.strip().splitlines()[-1])
        measured.seconds = measured.result["seconds"]
    return measured


# --- the run ------------------------------------------------------------------------------------------------


def ensure_data(rows: int, seed: int) -> Path:
    """The generated export for (rows, seed), generated again only when the generator or its inputs changed."""
    folder = OUT / f"cur2-{rows}-seed{seed}"
    export = folder / EXPORT_NAME
    generator = HERE / "generate_cur2.py"
    stamp = {"rows": rows, "seed": seed, "generator": hashlib.sha256(generator.read_bytes()).hexdigest()[:16]}
    marker = folder / "generated.json"
    if marker.exists() and json.loads(marker.read_text()) == stamp:
        return export
    marker.unlink(missing_ok=True)
    command = [sys.executable, str(generator), "--rows", str(rows), "--seed", str(seed), "--out", str(folder)]
    subprocess.run(command, check=True, cwd=ROOT)
    marker.write_text(json.dumps(stamp))
    return export


def peer_python() -> str:
    """The converter's venv, built by peer_venv.sh on first use."""
    done = subprocess.run(["bash", str(HERE / "peer_venv.sh")], check=True, capture_output=True, text=True)
    return done.stdout.strip().splitlines()[-1]


def _fresh(path: Path) -> Path:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
        Path(f"{path}.wal").unlink(missing_ok=True)
    return path


OURS, FLOOR, PEER = "ours: ingest() -> DuckDB", "floor: DuckDB CTAS read_parquet", "focus-converter 1.0.0 (aws)"
SCAN = "scan: DuckDB decodes every column"


def run_contender(name: str, export: Path, rows: int, limits: Limits, options: argparse.Namespace) -> Measured:
    """One run of one contender in its own process; its output (DuckDB file, Parquet folder) is removed after."""
    python, child, extra = sys.executable, "ours", []
    if name == OURS and options.profile:
        extra = ["--profile", str(OUT / f"ours-{rows}.prof")]
    elif name == FLOOR:
        child = "floor"
    elif name == SCAN:
        child = "scan"
    elif name == PEER:
        python, child = peer_python(), "converter"
        extra = ["--source-columns"] if options.converter_source_columns else []
    target = _fresh(OUT / (f"{child}-{rows}" + ("" if child == "converter" else ".duckdb")))
    command = [python, __file__, "--child", child, "--export", str(export), "--target", str(target), *extra]
    try:
        return measure(name, command, limits)
    finally:
        _fresh(target)


def _describe(export: Path) -> str:
    files = manifest_files(export)
    size = sum(f.stat().st_size for f in files)
    return f"{len(files)} Parquet files, {size / 2**20:,.0f} MiB"


def _row(m: Measured, rows: int, ours: Measured) -> str:
    if m.failure:
        return f"{m.name:<34}{'FAILED':>9}{m.wall:>8.1f}{m.cpu:>8.1f}{'':>11}{m.peak_mib:>10,.0f}  {m.failure}"
    faster = m.seconds / ours.seconds if not ours.failure else float("nan")
    return (
        f"{m.name:<34}{m.seconds:>9.2f}{m.wall:>8.1f}{m.cpu:>8.1f}{m.rate(rows):>11,.0f}{m.peak_mib:>10,.0f}"
        f"{m.max_rss_mib:>9,.0f}{m.tree_pss_mib:>10,.0f}{m.result.get('rows_out', 0):>11,}"
        f"{faster:>11.2f}{m.peak_mib / ours.peak_mib:>10.2f}"
    )


Baseline = tuple[int, Measured | None]  # the bounded-memory check's row count and our run at it


def report(rows: int, export: Path, runs: int, contenders: dict[str, Measured], baseline: Baseline) -> list[str]:
    ours = contenders[OURS]
    lines = [
        f"CUR 2.0 -> FOCUS, {rows:,} input rows ({_describe(export)}), {os.cpu_count()} CPUs, "
        f"best time of {runs} run(s), largest memory peak",
        f"{'contender':<34}{'seconds':>9}{'wall s':>8}{'CPU s':>8}{'rows/s':>11}{'peak MiB':>10}"
        f"{'max RSS':>9}{'tree PSS':>10}{'rows out':>11}{'time/ours':>11}{'mem/ours':>10}",
    ]
    lines += [_row(m, rows, ours) for m in contenders.values()]
    baseline_rows, baseline_run = baseline
    if baseline_run:
        renamed = dataclasses.replace(baseline_run, name=f"ours at {baseline_rows:,} rows")
        lines.append(_row(renamed, baseline_rows, renamed))
    if not ours.failure:
        lines.append(
            f"ours: {ours.result['rows_in']:,} lines read, {ours.result['rows_out']:,} FOCUS rows stored "
            f"({ours.result['quarantined']} quarantined), "
            f"BilledCost reconciled to the raw total: {ours.result['reconciled']}"
        )
    lines.append("targets:")
    lines += [f"  {'PASS' if ok else 'FAIL'}  {text}" for text, ok in verdicts(rows, contenders, baseline)]
    return lines


def verdicts(rows: int, contenders: dict[str, Measured], baseline: Baseline) -> list[tuple[str, bool]]:
    ours, floor, peer = contenders[OURS], contenders.get(FLOOR), contenders.get(PEER)
    scan = contenders.get(SCAN)
    checks: list[tuple[str, bool]] = []
    usable = not ours.failure
    if peer and not peer.failure:
        speedup = peer.seconds / ours.seconds if usable else 0.0
        share = ours.peak_mib / peer.peak_mib
        text = f">= {TARGET_SPEEDUP:.0f}x faster than focus-converter: {speedup:.2f}x"
        if scan and not scan.failure:
            text += (
                f" (that is <= {peer.seconds / TARGET_SPEEDUP:.2f} s; DuckDB decoding the input alone,"
                f" storing nothing, takes {scan.seconds:.2f} s)"
            )
        checks.append((text, speedup >= TARGET_SPEEDUP))
        checks.append(
            (f"<= 1/4 of focus-converter's peak memory: {share:.2f}", usable and share <= TARGET_MEMORY_SHARE)
        )
    if floor and not floor.failure:
        ratio = ours.seconds / floor.seconds if usable else float("inf")
        checks.append((f"<= {TARGET_FLOOR_RATIO:.0f}x the floor's time: {ratio:.2f}x", ratio <= TARGET_FLOOR_RATIO))
    baseline_rows, baseline_run = baseline
    if baseline_run and not baseline_run.failure:
        growth = ours.peak_mib / baseline_run.peak_mib
        text = (
            f"bounded memory: peak at {rows:,} rows = {growth:.2f}x the peak at {baseline_rows:,} "
            f"({ours.peak_mib:,.0f} vs {baseline_run.peak_mib:,.0f} MiB; limit {MEMORY_GROWTH_LIMIT}x)"
        )
        checks.append((text, usable and growth <= MEMORY_GROWTH_LIMIT))
    read_all = usable and ours.result["rows_in"] == rows and ours.result["quarantined"] == 0
    checks.append(("every input row read and nothing quarantined", read_all))
    return checks


def main(argv: list[str]) -> int:
    if "--child" in argv:
        return run_child(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=BASELINE_ROWS)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each contender, interleaved")
    parser.add_argument("--timeout", type=float, default=900, help="seconds allowed to each run")
    parser.add_argument("--baseline-rows", type=int, default=BASELINE_ROWS, help="rows of the bounded-memory check")
    parser.add_argument("--memory-limit-mib", type=float, default=16_384, help="a run's tree is killed above this")
    parser.add_argument("--skip-converter", action="store_true")
    parser.add_argument("--skip-floor", action="store_true")
    parser.add_argument("--converter-source-columns", action="store_true", help="the peer also writes CUR columns")
    parser.add_argument("--profile", action="store_true", help="cProfile our load into benchmarks/out/")
    options = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    limits = Limits(options.timeout, options.memory_limit_mib)
    started = time.perf_counter()
    export = ensure_data(options.rows, options.seed)
    names = [OURS] + ([] if options.skip_floor else [FLOOR, SCAN]) + ([] if options.skip_converter else [PEER])
    contenders: dict[str, Measured] = {}
    for _ in range(options.repeat):
        for name in names:
            run = run_contender(name, export, options.rows, limits, options)
            contenders[name] = contenders[name].merged(run) if name in contenders else run
    baseline = None
    if options.rows > options.baseline_rows:
        baseline_export = ensure_data(options.baseline_rows, options.seed)
        no_profile = argparse.Namespace(**{**vars(options), "profile": False})
        baseline = run_contender(OURS, baseline_export, options.baseline_rows, limits, no_profile)
    lines = report(options.rows, export, options.repeat, contenders, (options.baseline_rows, baseline))
    lines.append(f"(benchmark took {time.perf_counter() - started:.0f} s)")
    print("\n".join(lines))
    saved = {"rows": options.rows, "report": lines, **{n: m.__dict__ for n, m in contenders.items()}}
    if baseline:
        saved["baseline"] = baseline.__dict__
    (OUT / f"results-{options.rows}.json").write_text(json.dumps(saved, indent=2, default=str))
    if options.profile and not contenders[OURS].failure:
        print_profile(OUT / f"ours-{options.rows}.prof")
    return 0


def print_profile(path: Path, limit: int = 30) -> None:
    import pstats

    print(f"\ncProfile of our load ({path}), by cumulative time:")
    pstats.Stats(str(path)).sort_stats("cumulative").print_stats(limit)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
