"""``cogs.yaml``: the configuration model, validated with pydantic.

Secrets never live in the file: API connectors name the environment variable that holds them.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_WAREHOUSE_URL = "duckdb:///.cogs/warehouse.duckdb"
NAME_PATTERN = r"^[a-z][a-z0-9_]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AwsCur2Source(_Strict):
    """AWS Data Exports (CUR 2.0) delivered as Parquet to S3, or the same layout in a local folder."""

    name: str = Field(pattern=NAME_PATTERN)
    type: Literal["aws_cur2"]
    path: str = Field(description="s3://bucket/prefix/export-name or a local folder with the same layout")
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, a local test server)")
    region: str | None = None


class AwsCurLegacySource(_Strict):
    """Legacy AWS Cost and Usage Report (CUR) CSV(.gz) files with ``lineItem/UnblendedCost``-style headers."""

    name: str = Field(pattern=NAME_PATTERN)
    type: Literal["aws_cur_legacy"]
    path: str = Field(description="s3://bucket/prefix/report-name, a local folder with that layout, or CSV files")
    endpoint_url: str | None = None
    region: str | None = None


class GcpBillingExportSource(_Strict):
    """Google Cloud Billing detailed export: from BigQuery (``table``) or the same rows as JSONL/Parquet (``path``)."""

    name: str = Field(pattern=NAME_PATTERN)
    type: Literal["gcp_billing_export"]
    table: str | None = Field(None, description="project.dataset.gcp_billing_export_resource_v1_XXXXXX_XXXXXX_XXXXXX")
    path: str | None = Field(None, description="folder or glob of .jsonl/.json/.parquet export rows")
    billing_project: str | None = Field(None, description="project that runs (and pays for) the BigQuery jobs")
    api_endpoint: str | None = Field(None, description="BigQuery API endpoint override (proxies, tests)")
    lookback_days: int = Field(3, ge=0, description="re-read rows exported this many days before the last load")
    catalog_prices: bool = Field(False, description="fill missing list prices from the Cloud Billing Catalog API")
    catalog_api_endpoint: str | None = None
    credentials_env: str = Field(
        "GOOGLE_APPLICATION_CREDENTIALS", description="env var naming the service-account key file"
    )

    @model_validator(mode="after")
    def _one_origin(self) -> GcpBillingExportSource:
        if (self.table is None) == (self.path is None):
            raise ValueError(f"source {self.name!r}: set exactly one of table (BigQuery) or path (files)")
        return self


class AzureCostDetailsSource(_Strict):
    """Azure Cost Management exports: cost details CSV (actual and amortized) or the FOCUS export."""

    name: str = Field(pattern=NAME_PATTERN)
    type: Literal["azure_cost_details"]
    path: str = Field(description="folder or glob of the export's CSV(.gz)/Parquet files")
    amortized_path: str | None = Field(
        None, description="the amortized cost details export, when path holds the actual cost export"
    )


class FocusFileSource(_Strict):
    """Any FOCUS 1.0–1.2 export as CSV or Parquet files (CoreWeave, Nebius, Azure, AWS FOCUS exports)."""

    name: str = Field(pattern=NAME_PATTERN)
    type: Literal["focus_file"]
    path: str = Field(description="folder or glob of .csv/.csv.gz/.parquet files")


class OpenAICostsSource(_Strict):
    """OpenAI organization Costs API (``GET /v1/organization/costs``) with an Admin key."""

    name: str = Field(pattern=NAME_PATTERN)
    type: Literal["openai_costs"]
    base_url: str = "https://api.openai.com"
    api_key_env: str = "OPENAI_ADMIN_KEY"
    project_ids: list[str] = Field(default_factory=list)
    timeout_seconds: float = 30.0
    max_retries: int = 5


Source = Annotated[
    AwsCur2Source
    | AwsCurLegacySource
    | GcpBillingExportSource
    | AzureCostDetailsSource
    | FocusFileSource
    | OpenAICostsSource,
    Field(discriminator="type"),
]


class OtelGenAITelemetry(_Strict):
    """OpenTelemetry GenAI spans exported as OTLP JSON lines (the collector's file exporter)."""

    name: str = Field(pattern=NAME_PATTERN)
    type: Literal["otel_genai"]
    path: str = Field(description="folder or glob of .jsonl / .json files, one ExportTraceServiceRequest a line")
    feature_attribute: str = "app.feature"
    environment_attribute: str = "deployment.environment.name"
    deployment_attribute: str = "server.address"
    accepted_attribute: str = "app.user_accepted"
    retry_attribute: str = "app.retry.attempt"
    self_hosted_providers: list[str] = Field(
        default_factory=lambda: ["vllm"],
        description="providers whose span duration counts as GPU-seconds on the serving deployment",
    )


Telemetry = Annotated[OtelGenAITelemetry, Field(discriminator="type")]


class ChargeMatch(_Strict):
    """Which charge rows of focus_costs belong to a pool. Every given condition must hold."""

    source: str | None = None
    resource_ids: list[str] = Field(default_factory=list)
    resource_id_prefix: str | None = None
    sub_account_ids: list[str] = Field(default_factory=list)
    service_names: list[str] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)


class UsageMatch(_Strict):
    """Which inference_usage rows measure the pool's use. Every given condition must hold."""

    deployments: list[str] = Field(default_factory=list)
    providers: list[str] = Field(default_factory=list)
    environments: list[str] = Field(default_factory=list)


class Pool(_Strict):
    """A shared deployment, cluster or API project whose cost is split by its users' usage."""

    name: str = Field(pattern=NAME_PATTERN)
    charges: ChargeMatch
    usage: UsageMatch
    driver: Literal["tokens", "gpu_seconds", "requests"] = "tokens"
    gpus_per_resource: int | None = Field(
        None, gt=0, description="GPUs per billed resource: measures provisioned GPU-seconds, so idle is explicit"
    )

    @model_validator(mode="after")
    def _idle_needs_gpu_driver(self) -> Pool:
        if self.gpus_per_resource is not None and self.driver != "gpu_seconds":
            raise ValueError(f"pool {self.name!r}: gpus_per_resource needs driver: gpu_seconds")
        return self


class AllocationConfig(_Strict):
    feature_tag_keys: list[str] = Field(
        default_factory=lambda: ["feature"], description="tag/label keys whose value names a feature directly"
    )
    pools: list[Pool] = Field(default_factory=list)


class FeatureConfig(_Strict):
    description: str = ""
    useful_output: Literal["succeeded", "accepted"] = Field(
        "succeeded", description="succeeded: a successful first-try answer; accepted: the user accepted it"
    )


class AnomalyConfig(_Strict):
    min_history_days: int = Field(4, description="earlier days of the same kind (weekday/weekend) needed")
    score_threshold: float = 4.0
    min_impact_usd: float = 100.0
    min_relative_change: float = 0.3


class IngestConfig(_Strict):
    max_quarantined_share: float = Field(
        0.01, ge=0, le=1, description="a load fails when more than this share of its rows can't be parsed"
    )


class ReportsConfig(_Strict):
    output_dir: str = ".cogs/reports"


class CogsConfig(_Strict):
    company: str = "Example Co"
    warehouse: str = DEFAULT_WAREHOUSE_URL
    start_month: str = Field("2025-01", pattern=r"^\d{4}-\d{2}$")
    sources: list[Source] = Field(default_factory=list)
    telemetry: list[Telemetry] = Field(default_factory=list)
    allocation: AllocationConfig = Field(default_factory=AllocationConfig)
    features: dict[str, FeatureConfig] = Field(default_factory=dict)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    anomalies: AnomalyConfig = Field(default_factory=AnomalyConfig)
    reports: ReportsConfig = Field(default_factory=ReportsConfig)

    @field_validator("features")
    @classmethod
    def _feature_names(cls, v: dict[str, FeatureConfig]) -> dict[str, FeatureConfig]:
        bad = [k for k in v if not re.match(NAME_PATTERN, k) or k in RESERVED_FEATURES]
        if bad:
            raise ValueError(f"feature names must be lower_snake_case and not {RESERVED_FEATURES}: {bad}")
        return v

    @model_validator(mode="after")
    def _unique_names(self) -> CogsConfig:
        names = [s.name for s in self.sources] + [t.name for t in self.telemetry]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"source and telemetry names must be unique; repeated: {dup}")
        pool_sources = {p.charges.source for p in self.allocation.pools} - {None}
        unknown = sorted(pool_sources - {s.name for s in self.sources})
        if unknown:
            raise ValueError(f"allocation pools name unknown sources: {unknown}")
        return self


RESERVED_FEATURES = ("unallocated", "idle")


class ConfigError(ValueError):
    """cogs.yaml is missing or invalid; the message names the file and the field."""


def parse_config(text: str, origin: str = "cogs.yaml") -> CogsConfig:
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return CogsConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()]
        raise ConfigError(f"{origin}: invalid configuration\n" + "\n".join(lines)) from None
