"""``cogs demo``: write the demo company's month of provider exports, serve its API pages, write cogs.yaml."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipelines.demo import anthropic as anthropic_pages
from pipelines.demo import aws_cur2, gpu_cloud, metrics, openai_costs, otel_spans, reserved
from pipelines.demo.anthropic_server import AnthropicServer
from pipelines.demo.company import (
    ANTHROPIC_PRICES,
    ANTHROPIC_WORKSPACE,
    COMPANY,
    DEPLOYMENT_AWS_LLAMA,
    DEPLOYMENT_GPUCLOUD_QWEN,
    FEATURES,
    OPENAI_PRICES,
    DemoMonth,
)
from pipelines.demo.fixture_server import FixtureServer

DEMO_API_KEY_ENV = "OPENAI_ADMIN_KEY"
DEMO_API_KEY = "sk-admin-demo-0000000000000000"  # accepted only by the local replay server
DEMO_ANTHROPIC_KEY_ENV = "ANTHROPIC_ADMIN_KEY"
DEMO_ANTHROPIC_KEY = "sk-ant-admin01-demo-0000000000000000"  # accepted only by the local replay server


@dataclass(frozen=True)
class DemoFiles:
    month: str
    root: Path
    aws_export: Path
    gpu_cloud: Path
    openai_pages: Path
    anthropic_pages: Path
    otel: Path
    metrics: Path

    @property
    def warehouse(self) -> Path:
        """The demo's own DuckDB file, rebuilt by every ``cogs demo``."""
        return self.root / "warehouse.duckdb"

    @property
    def alerts(self) -> Path:
        """The demo's local alert channel: one JSON line per alert."""
        return self.root / "alerts.jsonl"

    def describe(self) -> list[str]:
        def size(p: Path) -> str:
            files = [f for f in p.rglob("*") if f.is_file()] if p.is_dir() else [p]
            return f"{len(files)} files, {sum(f.stat().st_size for f in files) / 1e6:.1f} MB"

        return [
            f"AWS CUR 2.0 ({size(self.aws_export)})",
            f"GPU cloud FOCUS ({size(self.gpu_cloud)})",
            f"OpenAI Costs API pages ({size(self.openai_pages)})",
            f"Anthropic Admin API pages ({size(self.anthropic_pages)})",
            f"OTel GenAI spans ({size(self.otel)})",
            f"DCGM GPU metrics ({size(self.metrics)})",
        ]


def generate(month: str, seed: int, out_dir: Path) -> DemoFiles:
    """Write every provider's native export for the month (deterministic for a seed)."""
    demo = DemoMonth(month, seed=seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    return DemoFiles(
        month=month,
        root=out_dir.resolve(),
        aws_export=aws_cur2.write(demo, out_dir, seed).resolve(),
        gpu_cloud=gpu_cloud.write(demo, out_dir, seed).resolve(),
        openai_pages=openai_costs.write(demo, out_dir, seed).resolve(),
        anthropic_pages=anthropic_pages.write(demo, out_dir, seed).resolve(),
        otel=otel_spans.write(demo, out_dir, seed).resolve(),
        metrics=metrics.write(demo, out_dir, seed).resolve(),
    )


def token_prices() -> dict:
    """The ``priced_tokens`` driver's weights: the list prices the demo's model APIs bill."""
    openai = {model: {k: str(v) for k, v in prices.items()} for model, prices in OPENAI_PRICES.items()}
    anthropic = {
        model: {
            "input": str(p["uncached_input_tokens"]),
            "cached_input": str(p["cache_read_input_tokens"]),
            "cache_write_input": str(p["cache_creation.ephemeral_5m_input_tokens"]),
            "output": str(p["output_tokens"]),
        }
        for model, p in ANTHROPIC_PRICES.items()
    }
    return {"models": openai | anthropic}


def demo_config(files: DemoFiles, openai_base_url: str, anthropic_base_url: str, warehouse: str | None = None) -> dict:
    """The demo's cogs.yaml: five sources, spans and GPU metrics, the rules that share costs, a local alert file."""
    return {
        "company": COMPANY,
        "warehouse": warehouse or f"duckdb:///{files.warehouse}",
        "start_month": files.month,
        "sources": [
            {"name": "aws_cur", "type": "aws_cur2", "path": str(files.aws_export)},
            {"name": "gpu_cloud", "type": "focus_file", "path": str(files.gpu_cloud)},
            {"name": "openai", "type": "openai_costs", "base_url": openai_base_url, "api_key_env": DEMO_API_KEY_ENV},
            {
                "name": "anthropic",
                "type": "anthropic_costs",
                "base_url": anthropic_base_url,
                "api_key_env": DEMO_ANTHROPIC_KEY_ENV,
            },
            reserved.source_config(DemoMonth(files.month)),
        ],
        "telemetry": [
            {"name": "otel", "type": "otel_genai", "path": str(files.otel)},
            metrics.telemetry_entry(files.metrics),
        ],
        "allocation": {
            "feature_tag_keys": ["feature"],
            "pools": [
                {
                    # Provisioned GPU-seconds measured by DCGM: idle is what the cluster's GPUs did not do.
                    "name": "eks_inference_prod",
                    "charges": {"source": "aws_cur", "tags": {"cluster": "inference-prod"}},
                    "usage": {"deployments": [DEPLOYMENT_AWS_LLAMA]},
                    "driver": "gpu_seconds",
                    "capacity": "telemetry",
                },
                {
                    # Provisioned from the bill (VMs × 8 GPUs); idle spread over the features that use the VMs.
                    "name": "gpu_cloud_h100",
                    "charges": {"source": "gpu_cloud", "resource_ids": gpu_cloud.vm_resource_ids()},
                    "usage": {"deployments": [DEPLOYMENT_GPUCLOUD_QWEN]},
                    "driver": "gpu_seconds",
                    "gpus_per_resource": 8,
                    "idle": "spread",
                },
                {
                    "name": "openai_prod",
                    "charges": {"source": "openai"},
                    "usage": {"providers": ["openai"]},
                    "driver": "priced_tokens",
                },
                {
                    # The default workspace's Console use stays unallocated on purpose.
                    "name": "anthropic_doc_summaries",
                    "charges": {"source": "anthropic", "sub_account_ids": [ANTHROPIC_WORKSPACE]},
                    "usage": {"providers": ["anthropic"]},
                    "driver": "priced_tokens",
                },
                reserved.pool_config(),
            ],
            "overhead": [
                {
                    "name": "aws_platform",
                    "charges": {
                        "source": "aws_cur",
                        "charge_categories": ["Usage"],
                        "service_categories": ["Management and Governance", "Networking", "Storage", "Compute"],
                    },
                    "split": "proportional",
                    "basis": ["pool:eks_inference_prod"],
                },
                {
                    "name": "gpu_cloud_storage",
                    "charges": {"source": "gpu_cloud", "service_categories": ["Storage"]},
                    "split": "proportional",
                    "basis": ["pool:gpu_cloud_h100"],
                },
                {
                    # AWS's sales tax follows the AWS cost it is levied on, not the model APIs' bills.
                    "name": "aws_tax",
                    "charges": {"source": "aws_cur", "charge_categories": ["Tax"]},
                    "split": "proportional",
                    "basis": ["pool:eks_inference_prod"],
                },
            ],
            "token_prices": token_prices(),
        },
        "features": {f.name: {"description": f.description, "useful_output": f.useful_output} for f in FEATURES},
        "alerts": {
            "max_age_days": None,  # the demo month is in the past: alert on its anomalies anyway
            "channels": [{"name": "demo_file", "type": "file", "path": str(files.alerts)}],
        },
    }


@contextmanager
def serve_api(files: DemoFiles) -> Iterator[Path]:
    """Serve the recorded OpenAI and Anthropic pages on 127.0.0.1; yield the demo's cogs.yaml pointing at them."""
    with (
        FixtureServer.from_pages(files.openai_pages, api_key=DEMO_API_KEY) as server,
        AnthropicServer.from_pages(files.anthropic_pages, api_key=DEMO_ANTHROPIC_KEY) as anthropic_server,
    ):
        os.environ[DEMO_API_KEY_ENV] = DEMO_API_KEY
        os.environ[DEMO_ANTHROPIC_KEY_ENV] = DEMO_ANTHROPIC_KEY
        path = files.root / "cogs.yaml"
        header = (
            "# Written by `cogs demo`. The openai and anthropic sources point at local replays of their APIs\n"
            "# that run only while `cogs demo` does; drop base_url to use the real APIs.\n"
        )
        path.write_text(
            header + yaml.safe_dump(demo_config(files, server.base_url, anthropic_server.base_url), sort_keys=False)
        )
        yield path
