"""Benchmark: allocate one month of N charge rows against ~1M hourly usage rows, against a DuckDB floor.

The data (written once as Parquet, sorted by charge period like a month's export), for N = 10M:

- 5M lines of 12 GPU clusters (70 nodes each, 4 hourly lines per node: Savings-Plan-covered usage,
  its negation, EBS, data transfer), tagged ``cluster``; 3 features × 2 environments (production,
  staging) use each cluster. Pools split them by GPU-seconds with 8 GPUs per node: half the clusters
  keep idle as a line, half spread it over their features.
- 4 API pools (OpenAI and Anthropic by price-weighted tokens, Bedrock by tokens, embeddings by
  requests): daily lines per model and token type, shared by 40 features × 2 environments.
- 3M lines tagged with a feature and an environment (direct), 0.5M NAT-gateway lines per cluster
  (overhead in proportion to that cluster pool's features), 20 monthly tax lines (overhead in
  proportion to everything, cut by day), unused Savings Plan hours (spread as idle) and 1.5M
  untagged lines nobody claims (unallocated). Two features are evaluation workloads (R&D).
- ~1M hourly usage rows: the pools' users plus telemetry of 300 deployments no bill names.

Contenders, each in a fresh child process on the same files:

- floor: DuckDB alone, one join-and-sum: each charge joined to its cluster's usage of its hour, cost ×
  (feature's GPU-seconds / all GPU-seconds) summed per feature (floats, no rules, no rows kept).
- ours: ``models.allocation.allocate_batches`` on ``pl.scan_parquet`` (a few days at a time) with the
  rules above; every allocation row produced and consumed (summed per class, counted), and
  conservation checked exactly against the input's totals.

Each child reports its own wall time and CPU time (all threads) around the work; memory is the
child's peak RSS (``wait4``). CPU time is the steadier figure on a shared machine. Ours runs as the product's
processes do (``import pipelines`` first: polars' allocator keeps freed pages, see ``pipelines/__init__.py``),
then once more with polars' default allocator settings (``_RJEM_MALLOC_CONF`` set empty) for comparison.
Usage: ``python benchmarks/bench_allocation.py --charges 10000000 [--data DIR]`` (default 1M rows).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MONTH_START = datetime(2026, 10, 1, tzinfo=UTC)
HOURS = 744
CLUSTERS = 12
NODES = 70
LINES_PER_NODE_HOUR = 4
GPUS_PER_NODE = 8
CLUSTER_FEATURES = 3
FEATURES = [f"f{i:02d}" for i in range(40)]
ENVIRONMENTS = ["production", "staging"]
API_POOLS = {  # name → (driver, models)
    "openai": ("priced_tokens", ["gpt-4.1-2025-04-14", "gpt-4.1-mini-2025-04-14", "o4-mini-2025-04-16"]),
    "anthropic": ("priced_tokens", ["claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1"]),
    "bedrock": ("tokens", ["llama3-70b", "mistral-large", "titan-text"]),
    "embeddings": ("requests", ["text-embedding-3-small", "text-embedding-3-large", "cohere-embed"]),
}
TARGET_RATIO = 5.0
JEMALLOC_ENV = "_RJEM_MALLOC_CONF"  # polars' allocator settings; empty: jemalloc's defaults


# --- data --------------------------------------------------------------------------------------------


def shares(charges: int) -> dict[str, int]:
    """Rows per kind of charge for a month of ``charges`` rows (the pools take half)."""
    return {
        "pool": charges // 2,
        "direct": charges * 3 // 10,
        "overhead": charges // 20,
        "unmatched": charges - charges // 2 - charges * 3 // 10 - charges // 20,
    }


def generate(out: Path, charges: int, seed: int = 7) -> dict[str, object]:
    """Write charges.parquet and usage.parquet under ``out``; returns what was written."""
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(seed)
    n = shares(charges)
    hours = pl.datetime_range(
        MONTH_START, MONTH_START + timedelta(hours=HOURS - 1), "1h", eager=True, time_zone="UTC"
    ).dt.cast_time_unit("us")
    frames = [
        _cluster_lines(rng, hours, n["pool"]),
        _api_lines(rng),
        _direct_lines(rng, hours, n["direct"]),
        _nat_lines(rng, hours, n["overhead"]),
        _unmatched_lines(rng, hours, n["unmatched"]),
        _unused_lines(hours),
        _tax_lines(rng),
    ]
    bill = pl.concat(frames, how="diagonal_relaxed").sort("ChargePeriodStart")
    bill = bill.with_columns(
        x_charge_id=pl.format("c{}", pl.int_range(pl.len()).cast(pl.String).str.zfill(9)),
        x_source=pl.lit("bench"),
        x_billing_period=pl.lit("2026-10"),
        BillingAccountId=pl.lit("123456789012"),
    )
    bill.write_parquet(out / "charges.parquet", row_group_size=256_000)
    usage = _usage(rng, hours)
    usage.write_parquet(out / "usage.parquet")
    return {"charges": bill.height, "usage": usage.height}


def _money(rng: object, size: int, scale: float) -> object:
    import numpy as np
    import polars as pl

    cents = (rng.random(size) * scale * 10**10).astype(np.int64)  # type: ignore[attr-defined]
    return pl.Series(cents, dtype=pl.Int64).cast(pl.Decimal(38, 0)).cast(pl.Decimal(38, 12)) / 10**10


def _lines(rng: object, hours: object, count: int, **columns: object) -> object:
    """``count`` hourly lines spread evenly over the month's hours."""
    import numpy as np
    import polars as pl

    index = np.arange(count) % HOURS
    start = pl.Series(hours).gather(index)  # type: ignore[arg-type]
    cost = _money(rng, count, 3.0)
    return pl.DataFrame(
        {
            "ChargePeriodStart": start,
            "ChargePeriodEnd": start + timedelta(hours=1),
            "EffectiveCost": cost,
            "BilledCost": cost,
            "ChargeCategory": "Usage",
            "ProviderName": "AWS",
            **columns,
        }
    )


def _cluster_lines(rng: object, hours: object, count: int) -> object:
    import numpy as np
    import polars as pl

    per_hour = CLUSTERS * NODES * LINES_PER_NODE_HOUR
    hour_index = np.arange(count) // per_hour % HOURS
    slot = np.arange(count) % per_hour
    cluster = slot // (NODES * LINES_PER_NODE_HOUR)
    node = slot // LINES_PER_NODE_HOUR % NODES
    line = slot % LINES_PER_NODE_HOUR
    start = pl.Series(hours).gather(hour_index)  # type: ignore[arg-type]
    cost = _money(rng, count, 20.0)
    frame = pl.DataFrame(
        {"ChargePeriodStart": start, "cluster": cluster, "node": node, "line": line, "EffectiveCost": cost}
    )
    return frame.select(
        "ChargePeriodStart",
        ChargePeriodEnd=pl.col("ChargePeriodStart") + timedelta(hours=1),
        ResourceId=pl.format("cluster-{}/i-{}", pl.col("cluster").cast(pl.String).str.zfill(2), pl.col("node")),
        ServiceName=pl.when(pl.col("line") == 2).then(pl.lit("Amazon EBS")).otherwise(pl.lit("Amazon EC2")),
        ChargeCategory=pl.lit("Usage"),
        ProviderName=pl.lit("AWS"),
        Tags=pl.concat_str(
            pl.lit('{"cluster":"cluster-'), pl.col("cluster").cast(pl.String).str.zfill(2), pl.lit('","team":"ml"}')
        ),
        # the negation line moves billed cost to the Savings Plan: effective stays, billed goes negative
        EffectiveCost=pl.when(pl.col("line") == 1).then(pl.lit(Decimal(0))).otherwise("EffectiveCost"),
        BilledCost=pl.when(pl.col("line") == 1).then(-pl.col("EffectiveCost")).otherwise("EffectiveCost"),
    )


def _api_lines(rng: object) -> object:
    import polars as pl

    rows = []
    for pool, (_driver, models) in API_POOLS.items():
        for day in range(HOURS // 24):
            start = MONTH_START + timedelta(days=day)
            for model in models:
                for meter in ("input", "cached_input", "output"):
                    rows.append((start, pool, model, meter))
    frame = pl.DataFrame(rows, schema=["ChargePeriodStart", "pool", "SkuId", "meter"], orient="row")
    cost = _money(rng, frame.height, 400.0)
    return frame.select(
        pl.col("ChargePeriodStart").dt.replace_time_zone("UTC").dt.cast_time_unit("us"),
        ChargePeriodEnd=pl.col("ChargePeriodStart").dt.replace_time_zone("UTC").dt.cast_time_unit("us")
        + timedelta(days=1),
        SubAccountId=pl.format("api-{}", pl.col("pool")),
        SkuId="SkuId",
        ServiceName=pl.format("{} API", pl.col("pool")),
        ChargeCategory=pl.lit("Usage"),
        ProviderName="pool",
        EffectiveCost=cost,
        BilledCost=cost,
    )


def _direct_lines(rng: object, hours: object, count: int) -> object:
    import numpy as np
    import polars as pl

    feature = pl.Series(FEATURES).gather(np.arange(count) % len(FEATURES))
    env = pl.Series(ENVIRONMENTS).gather(np.arange(count) // len(FEATURES) % 2)
    frame = _lines(rng, hours, count)
    return frame.with_columns(  # type: ignore[attr-defined]
        ResourceId=pl.format("vol-{}", pl.Series(np.arange(count) % 50_000)),
        ServiceName=pl.lit("Amazon EC2"),
        Tags=pl.concat_str(pl.lit('{"feature":"'), feature, pl.lit('","environment":"'), env, pl.lit('"}')),
    )


def _nat_lines(rng: object, hours: object, count: int) -> object:
    import numpy as np
    import polars as pl

    cluster = pl.Series(np.arange(count) % CLUSTERS).cast(pl.String).str.zfill(2)
    frame = _lines(rng, hours, count)
    return frame.with_columns(  # type: ignore[attr-defined]
        ResourceId=pl.format("nat-cluster-{}/{}", cluster, pl.Series(np.arange(count) % 97)),
        ServiceName=pl.lit("NAT Gateway"),
    )


def _unmatched_lines(rng: object, hours: object, count: int) -> object:
    import numpy as np
    import polars as pl

    frame = _lines(rng, hours, count)
    return frame.with_columns(  # type: ignore[attr-defined]
        ResourceId=pl.format("arn:aws:s3:::bucket-{}", pl.Series(np.arange(count) % 3_000)),
        ServiceName=pl.lit("Amazon S3"),
    )


def _unused_lines(hours: object) -> object:
    import polars as pl

    start = pl.Series(hours)  # type: ignore[arg-type]
    return pl.DataFrame(
        {
            "ChargePeriodStart": start,
            "ChargePeriodEnd": start + timedelta(hours=1),
            "EffectiveCost": pl.Series([Decimal("3.25")] * HOURS, dtype=pl.Decimal(38, 12)),
            "BilledCost": pl.Series([Decimal(0)] * HOURS, dtype=pl.Decimal(38, 12)),
            "ChargeCategory": "Usage",
            "CommitmentDiscountStatus": "Unused",
            "ProviderName": "AWS",
            "ServiceName": "Savings Plans",
        }
    )


def _tax_lines(rng: object) -> object:
    import polars as pl

    cost = _money(rng, 20, 5000.0)
    return pl.DataFrame(
        {
            "ChargePeriodStart": [MONTH_START] * 20,
            "ChargePeriodEnd": [MONTH_START + timedelta(hours=HOURS)] * 20,
            "EffectiveCost": cost,
            "BilledCost": cost,
            "ChargeCategory": "Tax",
            "ProviderName": "AWS",
            "ServiceName": [f"Service {i}" for i in range(20)],
        }
    ).with_columns(pl.col("ChargePeriodStart", "ChargePeriodEnd").dt.cast_time_unit("us"))


def _usage(rng: object, hours: object) -> object:
    import numpy as np
    import polars as pl

    keys = []
    for c in range(CLUSTERS):
        for k in range(CLUSTER_FEATURES):
            for env in ENVIRONMENTS:
                keys.append((f"cluster-{c:02d}", "vllm", "llama-70b", FEATURES[(c * CLUSTER_FEATURES + k) % 40], env))
    for pool, (_driver, models) in API_POOLS.items():
        for model in models:
            for feature in FEATURES:
                for env in ENVIRONMENTS:
                    keys.append((f"api-{pool}", pool, model, feature, env))
    for d in range(300):  # telemetry of deployments no bill names
        keys.append((f"edge-{d:03d}", "vllm", "small", FEATURES[d % 40], "production"))
    key_frame = pl.DataFrame(keys, schema=["deployment", "provider", "model", "feature", "environment"], orient="row")
    frame = pl.DataFrame({"hour": hours}).join(key_frame, how="cross")
    size = frame.height
    requests = rng.integers(0, 2_000, size)  # type: ignore[attr-defined]
    input_tokens = requests * rng.integers(200, 4_000, size)  # type: ignore[attr-defined]
    gpu = np.where(frame["provider"].to_numpy() == "vllm", rng.integers(0, 6_000_000_000, size), 0)  # type: ignore[attr-defined]
    return frame.with_columns(
        source=pl.lit("otel"),
        requests=pl.Series(requests),
        succeeded=pl.Series(requests),
        failed=pl.lit(0),
        retried=pl.lit(0),
        accepted=pl.lit(0),
        useful_outputs=pl.Series(requests),
        input_tokens=pl.Series(input_tokens),
        output_tokens=pl.Series(requests * 300),
        cached_input_tokens=pl.Series(input_tokens // 3),
        gpu_seconds=pl.Series(gpu).cast(pl.Decimal(38, 0)).cast(pl.Decimal(38, 6)) / 1_000_000,
        billing_period=pl.lit("2026-10"),
        batch_id=pl.lit("bench"),
    )


def bench_config() -> tuple[object, dict[str, object]]:
    from models.config import AllocationConfig, FeatureConfig

    pools = [
        {
            "name": f"cluster_{c:02d}",
            "charges": {"tags": {"cluster": f"cluster-{c:02d}"}},
            "usage": {"deployments": [f"cluster-{c:02d}"]},
            "driver": "gpu_seconds",
            "gpus_per_resource": GPUS_PER_NODE,
            "idle": "spread" if c % 2 else "keep",
        }
        for c in range(CLUSTERS)
    ]
    pools += [
        {
            "name": f"api_{p}",
            "charges": {"sub_account_ids": [f"api-{p}"]},
            "usage": {"deployments": [f"api-{p}"]},
            "driver": driver,
        }
        for p, (driver, _models) in API_POOLS.items()
    ]
    overhead = [
        {
            "name": f"nat_{c:02d}",
            "charges": {"service_names": ["NAT Gateway"], "resource_id_prefix": f"nat-cluster-{c:02d}/"},
            "basis": [f"pool:cluster_{c:02d}"],
        }
        for c in range(CLUSTERS)
    ]
    overhead.append({"name": "tax", "charges": {"charge_categories": ["Tax"]}})
    prices = {
        "gpt-4.1": {"input": "2.00", "cached_input": "0.50", "output": "8.00"},
        "gpt-4.1-mini": {"input": "0.40", "cached_input": "0.10", "output": "1.60"},
        "claude-sonnet-4-5": {"input": "3.00", "cached_input": "0.30", "output": "15.00"},
    }
    config = AllocationConfig.model_validate(
        {"pools": pools, "overhead": overhead, "token_prices": {"models": prices}, "unused_commitment": "spread"}
    )
    features = {
        f: FeatureConfig(workload="evaluation" if f in ("f38", "f39") else "production_inference") for f in FEATURES
    }
    return config, features


# --- contenders (each in its own child) ----------------------------------------------------------------


def run_floor(data: Path) -> dict[str, object]:
    import duckdb

    con = duckdb.connect()
    started, cpu = time.perf_counter(), _cpu()
    rows = con.sql(
        f"""
        WITH u AS (
            SELECT deployment AS pool, hour, feature, SUM(gpu_seconds) AS w
            FROM read_parquet('{data / "usage.parquet"}') WHERE deployment LIKE 'cluster-%' GROUP BY ALL
        ),
        t AS (SELECT pool, hour, SUM(w) AS total FROM u GROUP BY ALL)
        SELECT COALESCE(u.feature, 'other') AS feature,
               SUM(CAST(c.EffectiveCost AS DOUBLE) * COALESCE(u.w / t.total, 1)) AS cost, COUNT(*) AS parts
        FROM read_parquet('{data / "charges.parquet"}') AS c
        LEFT JOIN u ON u.pool = split_part(c.ResourceId, '/', 1) AND u.hour = c.ChargePeriodStart
        LEFT JOIN t ON t.pool = u.pool AND t.hour = u.hour
        GROUP BY 1
        """
    ).fetchall()
    seconds, cpu = time.perf_counter() - started, _cpu() - cpu
    return {"seconds": seconds, "cpu": cpu, "parts": sum(r[2] for r in rows), "total": sum(r[1] for r in rows)}


def run_ours(data: Path) -> dict[str, object]:
    # First, as in the product's processes: it configures polars' allocator before polars loads.
    import pipelines  # noqa: F401

    # isort: split
    import polars as pl

    from models.allocation import allocate_batches

    config, features = bench_config()
    charges = pl.scan_parquet(data / "charges.parquet")
    started, cpu = time.perf_counter(), _cpu()
    usage = pl.read_parquet(data / "usage.parquet")
    parts, batches = 0, 0
    by_class: dict[str, Decimal] = {}
    effective, billed = Decimal(0), Decimal(0)
    for batch in allocate_batches(charges, usage, config, features):  # type: ignore[arg-type]
        parts += batch.height
        batches += 1
        sums = batch.group_by("cost_class").agg(pl.col("effective_cost").sum(), pl.col("billed_cost").sum())
        for row in sums.iter_rows(named=True):
            by_class[row["cost_class"]] = by_class.get(row["cost_class"], Decimal(0)) + row["effective_cost"]
            effective += row["effective_cost"]
            billed += row["billed_cost"]
    seconds, cpu = time.perf_counter() - started, _cpu() - cpu
    expected = charges.select(pl.col("EffectiveCost").sum(), pl.col("BilledCost").sum()).collect().row(0)
    return {
        "seconds": seconds,
        "cpu": cpu,
        "parts": parts,
        "batches": batches,
        "exact": effective == expected[0] and billed == expected[1],
        "effective": str(effective),
        "by_class": {k: str(v) for k, v in sorted(by_class.items())},
    }


def _cpu() -> float:
    """CPU seconds of this process so far, all threads (steadier than wall time when the machine is shared)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(role: str, data: Path) -> None:
    result = {"floor": run_floor, "ours": run_ours, "generate": None}[role]
    out = generate(data, int(os.environ["BENCH_CHARGES"])) if result is None else result(data)
    print(json.dumps(out, default=str))


def spawn(
    role: str, data: Path, charges: int, extra_env: dict[str, str] | None = None
) -> tuple[dict[str, object], float, float]:
    """Run ``role`` in a child; returns its JSON result, peak RSS (GiB) and wall seconds."""
    env = os.environ | {"BENCH_CHARGES": str(charges), "PYTHONPATH": str(ROOT)} | (extra_env or {})
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", role, "--data", str(data)], stdout=subprocess.PIPE, env=env
    )
    assert proc.stdout is not None
    output = proc.stdout.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"{role} failed with status {status}")
    return json.loads(output.decode().strip().splitlines()[-1]), usage.ru_maxrss / 2**20, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--charges", type=int, default=1_000_000)
    parser.add_argument("--data", type=Path, help="reuse (or write) the generated files here")
    parser.add_argument(
        "--product-settings-only",
        action="store_true",
        help=f"skip the second run of ours with polars' default allocator ({JEMALLOC_ENV} empty)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.data)
        return
    data = args.data or Path(tempfile.mkdtemp(prefix="bench_allocation_"))
    data.mkdir(parents=True, exist_ok=True)
    if not (data / "charges.parquet").exists():
        written, _, wall = spawn("generate", data, args.charges)
        print(f"generated {written['charges']:,} charge rows and {written['usage']:,} usage rows in {wall:.0f} s")
    floor, floor_mem, _ = spawn("floor", data, args.charges)
    print(
        f"floor (DuckDB join-and-sum): {floor['seconds']:.2f} s wall, {floor['cpu']:.2f} s CPU, "
        f"peak RSS {floor_mem:.2f} GiB, {floor['parts']:,} joined rows"
    )
    runs = [("ours (exact allocation):", None)]
    if not args.product_settings_only:
        runs.append(("ours, polars' default allocator:", {JEMALLOC_ENV: ""}))
    for label, extra_env in runs:
        ours, ours_mem, _ = spawn("ours", data, args.charges, extra_env)
        ratio = float(ours["seconds"]) / float(floor["seconds"])  # type: ignore[arg-type]
        cpu_ratio = float(ours["cpu"]) / float(floor["cpu"])  # type: ignore[arg-type]
        print(
            f"{label:<33}{ours['seconds']:.2f} s wall, {ours['cpu']:.2f} s CPU, peak RSS {ours_mem:.2f} GiB, "
            f"{ours['parts']:,} allocation rows in {ours['batches']} batches"
        )
        print(
            f"  ratio: {ratio:.2f}x the floor's wall time, {cpu_ratio:.2f}x its CPU time "
            f"(target <= {TARGET_RATIO:.0f}x); conservation exact: {ours['exact']}"
        )
    print(f"effective cost allocated: {ours['effective']} by class {ours['by_class']}")


if __name__ == "__main__":
    main()
