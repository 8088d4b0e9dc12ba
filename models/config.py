"""``cogs.yaml``: the configuration model, validated with pydantic.

Secrets never live in the file: API connectors name the environment variable that holds them.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
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
    api_endpoint: str | None = Field(None, description="BigQuery API endpoint override (proxies, emulators, tests)")
    partition_margin_days: int = Field(
        35, ge=1, le=400, description="days of partitions searched before and after the invoice month for its rows"
    )
    catalog_prices: bool = Field(False, description="fill missing list prices from the Cloud Billing Catalog API")
    catalog_api_endpoint: str | None = None
    catalog_cache_hours: int = Field(24, ge=0, description="how long cached Catalog API prices are reused")
    cache_dir: str = Field(".cogs/cache", description="folder for cached Catalog API prices (gcp_catalog/)")
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
    path: str = Field(
        description="folder or glob of the export's CSV(.gz)/Parquet files: the FOCUS export or the actual cost export"
    )
    amortized_path: str | None = Field(
        None, description="the amortized cost details export, when path holds the actual cost export"
    )


class FocusFileSource(_Strict):
    """Any FOCUS 1.0–1.3 export as CSV or Parquet files (Nebius, Oracle, AWS/Azure/GCP FOCUS exports), read as 1.2."""

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


OpenAIUsageEndpoint = Literal[
    "completions",
    "embeddings",
    "moderations",
    "images",
    "audio_speeches",
    "audio_transcriptions",
    "vector_stores",
    "code_interpreter_sessions",
]
_LOOKBACK_HELP = (
    "unset: fetch the whole month every run (always correct); N: re-fetch only the last N days and "
    "rebuild the rest of the month from the raw daily responses kept in cache_dir"
)
_CACHE_HELP = "where raw daily responses are kept when lookback_days is set"


class OpenAICostsUsageSource(OpenAICostsSource):
    """OpenAI Costs API amounts, with token quantities joined from the organization Usage API."""

    type: Literal["openai_costs_usage"]  # type: ignore[assignment]
    usage_endpoints: list[OpenAIUsageEndpoint] = Field(
        default_factory=lambda: ["completions", "embeddings", "moderations", "images", "audio_speeches",
                                 "audio_transcriptions", "vector_stores", "code_interpreter_sessions"],
        description="/v1/organization/usage/<endpoint> reports to read",
    )  # fmt: skip
    lookback_days: int | None = Field(None, ge=1, description=_LOOKBACK_HELP)
    cache_dir: str = Field(".cogs/api_cache", description=_CACHE_HELP)


class AnthropicCostsSource(_Strict):
    """Anthropic Admin API: cost report (amounts) and messages usage report (token quantities)."""

    name: str = Field(pattern=NAME_PATTERN)
    type: Literal["anthropic_costs"]
    base_url: str = "https://api.anthropic.com"
    api_key_env: str = Field("ANTHROPIC_ADMIN_KEY", description="env var holding an Admin key (sk-ant-admin...)")
    anthropic_version: str = "2023-06-01"
    usage_report: bool = Field(True, description="fill token quantities from /v1/organizations/usage_report/messages")
    timeout_seconds: float = 30.0
    max_retries: int = 5
    lookback_days: int | None = Field(None, ge=1, description=_LOOKBACK_HELP)
    cache_dir: str = Field(".cogs/api_cache", description=_CACHE_HELP)


class RunPodSource(_Strict):
    """RunPod REST API v1 billing history: ``GET /billing/{pods,endpoints,networkvolumes}``."""

    name: str = Field(pattern=NAME_PATTERN)
    type: Literal["runpod"]
    base_url: str = "https://rest.runpod.io/v1"
    api_key_env: str = "RUNPOD_API_KEY"
    billing_account_id: str | None = Field(None, description="BillingAccountId (the API names none); default: name")
    bucket_size: Literal["hour", "day"] = "hour"
    resources: list[Literal["pods", "endpoints", "networkvolumes"]] = Field(
        default_factory=lambda: ["pods", "endpoints", "networkvolumes"]
    )
    timeout_seconds: float = 30.0
    max_retries: int = 5


class VastAiSource(_Strict):
    """Vast.ai charges API (``GET /api/v0/charges/``), one day at a time, cursor pages."""

    name: str = Field(pattern=NAME_PATTERN)
    type: Literal["vastai"]
    base_url: str = "https://console.vast.ai"
    api_key_env: str = "VAST_API_KEY"
    billing_account_id: str | None = Field(None, description="BillingAccountId (the API names none); default: name")
    charge_types: list[Literal["instance", "volume", "serverless"]] = Field(
        default_factory=list, description="empty: every charge type"
    )
    page_limit: int = Field(100, ge=1, le=100, description="results per page (the CLI caps it at 100)")
    timeout_seconds: float = 30.0
    max_retries: int = 5


class LambdaCloudSource(_Strict):
    """Lambda Cloud: estimated from sampled instance uptime × list price until an invoice CSV replaces it."""

    name: str = Field(pattern=NAME_PATTERN)
    type: Literal["lambda_cloud"]
    base_url: str = "https://cloud.lambda.ai"
    api_key_env: str = "LAMBDA_API_KEY"
    billing_account_id: str | None = Field(None, description="BillingAccountId (the API names none); default: name")
    uptime_log_dir: str = Field(description="folder the sampling sensor appends <YYYY-MM>.jsonl files to")
    invoice_path: str | None = Field(None, description="folder or glob of invoice CSVs that replace the estimate")
    billable_statuses: list[str] = Field(
        default_factory=lambda: ["active", "unhealthy"], description="instance statuses Lambda bills for"
    )
    max_sample_gap_minutes: int = Field(
        10, ge=1, description="a sample counts until the next one, but never longer than this"
    )
    timeout_seconds: float = 30.0
    max_retries: int = 5


class CoreWeaveSource(_Strict):
    """CoreWeave FOCUS Billing Export (usage quantities only), priced with a rate card."""

    name: str = Field(pattern=NAME_PATTERN)
    type: Literal["coreweave_focus"]
    path: str = Field(description="folder or glob of the export's .csv/.csv.gz/.json/.jsonl files")
    rate_card: dict[str, Decimal] = Field(
        description="price per PricingUnit, keyed by SkuPriceId or SkuId (SkuPriceId wins)", min_length=1
    )
    currency: str = Field("USD", pattern=r"^[A-Z]{3}$")


class ReservedContract(_Strict):
    """One reserved GPU capacity contract: N GPUs for a term at a contracted hourly rate."""

    id: str = Field(min_length=1)
    name: str | None = None
    provider: str = Field(min_length=1)
    billing_account_id: str | None = Field(None, description="default: the source name")
    billing_account_name: str | None = Field(None, description="the account's display name; default: its id")
    billing_account_type: str = Field("Billing Account", min_length=1, description="the provider's account type")
    region: str | None = None
    region_name: str | None = Field(None, description="the region's display name (e.g. Finland); default: region")
    gpu_type: str = Field(min_length=1)
    gpu_count: int = Field(gt=0)
    start: datetime = Field(description="UTC, on the hour (a date means midnight UTC)")
    end: datetime = Field(description="UTC, on the hour, exclusive")
    hourly_rate_per_gpu: Decimal | None = Field(None, ge=0)
    hourly_rate_total: Decimal | None = Field(None, ge=0)
    upfront: Decimal = Field(Decimal(0), ge=0, description="paid at start, amortized over every hour of the term")
    currency: str = Field("USD", pattern=r"^[A-Z]{3}$")
    deployments: list[str] = Field(default_factory=list, description="telemetry deployments this capacity serves")

    @field_validator("start", "end")
    @classmethod
    def _utc_on_the_hour(cls, v: datetime) -> datetime:
        v = v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)
        if (v.minute, v.second, v.microsecond) != (0, 0, 0):
            raise ValueError(f"{v.isoformat()} is not on the hour (contracts are amortized per hour)")
        return v

    @model_validator(mode="after")
    def _term_and_rate(self) -> ReservedContract:
        if self.end <= self.start:
            raise ValueError(f"contract {self.id!r}: end must be after start")
        if (self.hourly_rate_per_gpu is None) == (self.hourly_rate_total is None):
            raise ValueError(f"contract {self.id!r}: set exactly one of hourly_rate_per_gpu or hourly_rate_total")
        return self

    @property
    def hourly_total(self) -> Decimal:
        """The recurring fee per hour for all GPUs of the contract."""
        if self.hourly_rate_total is not None:
            return self.hourly_rate_total
        return self.gpu_count * (self.hourly_rate_per_gpu or Decimal(0))


class ReservedCapacitySource(_Strict):
    """Reserved GPU capacity and committed spend that no API reports, declared here."""

    name: str = Field(pattern=NAME_PATTERN)
    type: Literal["reserved_capacity"]
    contracts: list[ReservedContract] = Field(min_length=1)

    @field_validator("contracts")
    @classmethod
    def _unique_ids(cls, v: list[ReservedContract]) -> list[ReservedContract]:
        ids = [c.id for c in v]
        if dup := sorted({i for i in ids if ids.count(i) > 1}):
            raise ValueError(f"contract ids must be unique; repeated: {dup}")
        return v


Source = Annotated[
    AwsCur2Source
    | AwsCurLegacySource
    | GcpBillingExportSource
    | AzureCostDetailsSource
    | FocusFileSource
    | OpenAICostsSource
    | OpenAICostsUsageSource
    | AnthropicCostsSource
    | RunPodSource
    | VastAiSource
    | LambdaCloudSource
    | CoreWeaveSource
    | ReservedCapacitySource,
    Field(discriminator="type"),
]


class OtelGenAITelemetry(_Strict):
    """OpenTelemetry GenAI spans as OTLP JSON lines: the Collector's file exporter, or ``cogs collect``'s output.

    Feature, environment and customer are looked up on the span first, then on its resource.
    """

    name: str = Field(pattern=NAME_PATTERN)
    type: Literal["otel_genai"]
    path: str = Field(description="folder or glob of .jsonl / .json(.gz) files, one ExportTraceServiceRequest a line")
    feature_attribute: str = "app.feature"
    environment_attribute: str = "deployment.environment.name"
    deployment_attribute: str = "server.address"
    customer_attribute: str | None = Field(
        None, description="attribute holding the customer id (e.g. app.customer.id); unset: no customer column"
    )
    customer_hash_salt_env: str | None = Field(
        None, description="environment variable holding the salt: customer ids are stored as HMAC-SHA256 pseudonyms"
    )
    store_raw_customer: bool = Field(False, description="store customer ids unhashed (only when they are not personal)")
    accepted_attribute: str = Field("app.user_accepted", description="span attribute: true when the user accepted")
    feedback_event: str | None = Field(
        None, description="span event carrying user feedback, e.g. gen_ai.evaluation.result; unset: attribute only"
    )
    feedback_name: str | None = Field(
        None, description="only feedback events whose gen_ai.evaluation.name is this (e.g. user_acceptance)"
    )
    feedback_attribute: str = Field("gen_ai.evaluation.score.label", description="the feedback event's verdict")
    feedback_accepted_values: list[str] = Field(
        default_factory=lambda: ["accepted"], description="verdicts (case-insensitive) that mean the user accepted"
    )
    retry_attribute: str = "app.retry.attempt"
    self_hosted_providers: list[str] = Field(
        default_factory=lambda: ["vllm"],
        description="providers whose span duration counts as GPU-seconds on the serving deployment",
    )
    max_clock_skew_seconds: int = Field(
        3_600, ge=0, description="spans starting this far outside their export hour are counted at the export hour"
    )

    @model_validator(mode="after")
    def _customer_ids_are_protected(self) -> OtelGenAITelemetry:
        if self.customer_attribute and not self.customer_hash_salt_env and not self.store_raw_customer:
            raise ValueError(
                "customer_attribute needs customer_hash_salt_env (an environment variable holding a salt), "
                "or store_raw_customer: true to keep raw customer ids"
            )
        return self


class _PrometheusMetrics(_Strict):
    """Where Prometheus metrics come from (scrape files or the HTTP API) and how series map to deployments."""

    name: str = Field(pattern=NAME_PATTERN)
    path: str | None = Field(
        None, description="folder or glob of timestamped text-format scrapes (.prom/.txt/.om, optionally .gz)"
    )
    prometheus_url: str | None = Field(None, description="Prometheus HTTP API base URL, e.g. http://prometheus:9090")
    bearer_token_env: str | None = Field(None, description="env var holding a bearer token for the Prometheus API")
    selector: str = Field("", description='extra label matchers for API queries, e.g. job="vllm",namespace="prod"')
    scrape_interval_seconds: int = Field(
        60, ge=1, le=3_600, description="files: the scrape interval; API: the query step (must divide 3600)"
    )
    max_gap_seconds: int | None = Field(
        None, ge=1, le=3_600, description="samples further apart than this are a gap (default 1.5 scrape intervals)"
    )
    deployment_labels: list[str] = Field(
        default_factory=lambda: ["instance"], min_length=1, description="labels naming the deployment; first non-empty"
    )
    deployments: dict[str, str] = Field(
        default_factory=dict, description="label value or glob (vllm-llama-*) → deployment name; first match wins"
    )
    deployment_features: dict[str, str] = Field(
        default_factory=dict, description="deployment → feature, for deployments that serve one feature"
    )
    environment: str | None = None
    timeout_seconds: float = 30.0
    max_retries: int = 5

    @property
    def max_gap(self) -> int:
        return self.max_gap_seconds or (self.scrape_interval_seconds * 3 + 1) // 2

    @model_validator(mode="after")
    def _one_origin_and_step(self) -> _PrometheusMetrics:
        if (self.path is None) == (self.prometheus_url is None):
            raise ValueError(f"source {self.name!r}: set exactly one of path (scrape files) or prometheus_url (API)")
        if 3_600 % self.scrape_interval_seconds:
            raise ValueError(f"scrape_interval_seconds must divide 3600, got {self.scrape_interval_seconds}")
        if self.max_gap < self.scrape_interval_seconds:
            raise ValueError("max_gap_seconds must be at least scrape_interval_seconds")
        return self


class VllmMetricsTelemetry(_PrometheusMetrics):
    """vLLM's Prometheus counters (prompt/generation tokens, finished requests) per deployment and model."""

    type: Literal["vllm_metrics"]
    feature_label: str | None = Field(None, description="label naming the feature (e.g. added by relabeling)")
    provider: str = "vllm"
    failed_finish_reasons: list[str] = Field(
        default_factory=lambda: ["abort", "error"], description="finished_reason values counted as failed"
    )
    deployments_with_spans: list[str] = Field(
        default_factory=list,
        description="deployments whose requests OTel spans already count: their counters go to stats only",
    )


class DcgmMetricsTelemetry(_PrometheusMetrics):
    """NVIDIA DCGM exporter GPU utilization: busy and provisioned GPU-seconds per deployment and hour."""

    type: Literal["dcgm_metrics"]
    deployment_labels: list[str] = Field(  # type: ignore[assignment]
        default_factory=lambda: ["pod", "Hostname"], min_length=1, description="labels naming the deployment"
    )
    utilization_metric: Literal["DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_PROF_GR_ENGINE_ACTIVE"] = Field(
        "DCGM_FI_DEV_GPU_UTIL", description="GPU_UTIL is 0-100 (%), GR_ENGINE_ACTIVE a 0-1 ratio"
    )
    provider: str | None = Field(None, description="provider of the GPUs (e.g. aws); NULL when unset")


class LiteLLMTelemetry(_Strict):
    """LiteLLM proxy's ``LiteLLM_SpendLogs`` table, read from its PostgreSQL (never the prompt columns)."""

    name: str = Field(pattern=NAME_PATTERN)
    type: Literal["litellm_spend_logs"]
    url_env: str = Field("LITELLM_DATABASE_URL", description="env var holding the postgresql:// URL of LiteLLM's DB")
    table: str = "LiteLLM_SpendLogs"
    db_schema: str = Field("public", description="PostgreSQL schema of the table")
    feature_tag_prefix: str | None = Field("feature:", description="request tag naming the feature: feature:<name>")
    feature_metadata_key: str | None = Field(
        "spend_logs_metadata.feature", description="dotted path in the metadata JSON naming the feature"
    )
    environment_tag_prefix: str | None = "env:"
    environment_metadata_key: str | None = "spend_logs_metadata.environment"
    environment: str | None = Field(None, description="environment of rows that name none")
    retry_metadata_key: str | None = Field(
        "spend_logs_metadata.retry_attempt", description="dotted metadata path: > 0 or true marks a retry"
    )
    accepted_metadata_key: str | None = Field(
        "spend_logs_metadata.user_accepted", description="dotted metadata path: true when the user accepted"
    )
    customer_column: Literal["end_user", "user"] | None = Field(
        None, description="column holding the customer id; unset: no customer"
    )
    customer_hash_salt_env: str | None = None
    store_raw_customer: bool = False
    self_hosted_providers: list[str] = Field(
        default_factory=lambda: ["hosted_vllm", "vllm"],
        description="custom_llm_provider values whose request duration counts as GPU-seconds",
    )
    batch_size: int = Field(5_000, ge=1, description="rows fetched per round trip of the server-side cursor")

    @model_validator(mode="after")
    def _customer_ids_are_protected(self) -> LiteLLMTelemetry:
        if self.customer_column and not self.customer_hash_salt_env and not self.store_raw_customer:
            raise ValueError("customer_column needs customer_hash_salt_env, or store_raw_customer: true")
        return self


class RequestLogColumns(_Strict):
    """Which column of the log holds what; only ``timestamp`` is required."""

    timestamp: str
    feature: str | None = None
    model: str | None = None
    provider: str | None = None
    deployment: str | None = None
    environment: str | None = None
    customer: str | None = None
    status: str | None = None
    input_tokens: str | None = None
    output_tokens: str | None = None
    cached_input_tokens: str | None = None
    cache_creation_input_tokens: str | None = None
    reasoning_tokens: str | None = None
    latency: str | None = None
    accepted: str | None = None
    retry: str | None = None


class RequestLogsTelemetry(_Strict):
    """Generic request logs (CSV or Parquet), one row per model request, mapped by ``columns``."""

    name: str = Field(pattern=NAME_PATTERN)
    type: Literal["request_logs"]
    path: str = Field(description="folder or glob of .csv/.csv.gz/.parquet files")
    columns: RequestLogColumns
    timestamp_format: Literal["iso8601", "epoch_s", "epoch_ms", "epoch_us"] = "iso8601"
    naive_timezone: str = Field("UTC", description="time zone of timestamps without an offset")
    latency_unit: Literal["ms", "s"] = "ms"
    success_values: list[str] = Field(
        default_factory=lambda: ["success", "succeeded", "ok", "completed"],
        description="status values (case-insensitive) meaning success; numeric statuses: 1xx-3xx succeed",
    )
    failure_values: list[str] = Field(
        default_factory=lambda: ["failure", "failed", "error", "timeout", "cancelled"],
        description="status values (case-insensitive) meaning failure; numeric statuses: 4xx-5xx fail",
    )
    defaults: dict[Literal["feature", "model", "provider", "deployment", "environment"], str] = Field(
        default_factory=dict, description="values for keys the log has no column for (or leaves empty)"
    )
    self_hosted_providers: list[str] = Field(
        default_factory=lambda: ["vllm"], description="providers whose latency counts as GPU-seconds"
    )
    customer_hash_salt_env: str | None = None
    store_raw_customer: bool = False
    csv_separator: str = Field(",", min_length=1, max_length=1)

    @model_validator(mode="after")
    def _customer_ids_are_protected(self) -> RequestLogsTelemetry:
        if self.columns.customer and not self.customer_hash_salt_env and not self.store_raw_customer:
            raise ValueError("columns.customer needs customer_hash_salt_env, or store_raw_customer: true")
        return self


Telemetry = Annotated[
    OtelGenAITelemetry | VllmMetricsTelemetry | DcgmMetricsTelemetry | LiteLLMTelemetry | RequestLogsTelemetry,
    Field(discriminator="type"),
]


CostClass = Literal["cogs", "rnd", "opex"]
Workload = Literal["production_inference", "free_tier", "internal", "training", "fine_tuning", "evaluation"]

DEFAULT_WORKLOAD_CLASSES: dict[str, str] = {
    "production_inference": "cogs",
    "free_tier": "opex",  # serving non-paying users is a sales and marketing cost, not cost of revenue
    "internal": "opex",
    "training": "rnd",
    "fine_tuning": "rnd",
    "evaluation": "rnd",
}
DEFAULT_ENVIRONMENT_CLASSES: dict[str, str] = {
    env: "rnd" for env in ("staging", "stage", "development", "dev", "test", "testing", "qa", "sandbox")
}
SPECIAL_DRIVERS = ("tokens", "priced_tokens")
PRICE_PLACES = 6  # token prices carry at most 6 decimals, so price-weighted tokens stay exact integers


class ChargeMatch(_Strict):
    """Which charge rows of focus_costs a rule takes. Every given condition must hold; a list matches any value."""

    source: str | None = Field(None, description="x_source: the name of a configured source")
    providers: list[str] = Field(default_factory=list, description="ProviderName")
    billing_account_ids: list[str] = Field(default_factory=list, description="BillingAccountId")
    sub_account_ids: list[str] = Field(default_factory=list, description="SubAccountId: AWS account, GCP project...")
    resource_ids: list[str] = Field(default_factory=list, description="ResourceId")
    resource_id_prefix: str | None = Field(None, description="ResourceId starts with this")
    service_names: list[str] = Field(default_factory=list, description="ServiceName")
    service_categories: list[str] = Field(default_factory=list, description="ServiceCategory")
    sku_ids: list[str] = Field(default_factory=list, description="SkuId")
    charge_categories: list[str] = Field(default_factory=list, description="ChargeCategory: Usage, Tax, ...")
    tags: dict[str, str] = Field(default_factory=dict, description='tag key → value; the value "*" means any value')

    @field_validator("charge_categories")
    @classmethod
    def _known_categories(cls, v: list[str]) -> list[str]:
        from models.focus import CHARGE_CATEGORIES

        bad = [c for c in v if c not in CHARGE_CATEGORIES]
        if bad:
            raise ValueError(f"unknown ChargeCategory {bad}; FOCUS allows {list(CHARGE_CATEGORIES)}")
        return v

    def is_empty(self) -> bool:
        return not any(getattr(self, name) for name in type(self).model_fields)


class UsageMatch(_Strict):
    """Which inference_usage rows measure a pool's use. Every given condition must hold."""

    sources: list[str] = Field(default_factory=list)
    deployments: list[str] = Field(default_factory=list)
    providers: list[str] = Field(default_factory=list)
    models: list[str] = Field(default_factory=list)
    environments: list[str] = Field(default_factory=list)
    features: list[str] = Field(default_factory=list)


class TokenPrice(_Strict):
    """A model's list prices per 1M tokens; only their ratios matter (they weigh usage, they are not billed)."""

    input: Decimal = Field(ge=0)
    cached_input: Decimal | None = Field(None, ge=0, description="prompt-cache reads; defaults to the input price")
    cache_write_input: Decimal | None = Field(
        None, ge=0, description="prompt-cache writes (Anthropic: 1.25× input); defaults to the input price"
    )
    output: Decimal = Field(ge=0)

    @model_validator(mode="after")
    def _exact(self) -> TokenPrice:
        for value in (self.input, self.cached_input, self.cache_write_input, self.output):
            if value is not None and value != round(value, PRICE_PLACES):
                raise ValueError(f"token prices take at most {PRICE_PLACES} decimals, got {value}")
        return self


class TokenPrices(_Strict):
    """Prices of the ``priced_tokens`` driver, by model name (the longest configured prefix of the usage's model)."""

    default: TokenPrice = Field(
        default_factory=lambda: TokenPrice(input=Decimal(1), cached_input=Decimal(1), output=Decimal(4)),
        description="for models without a price: output weighs 4× input unless set",
    )
    models: dict[str, TokenPrice] = Field(default_factory=dict)


class _Rule(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    charges: ChargeMatch
    cost_class: CostClass | None = Field(None, description="forces the class of every part of this rule")

    @model_validator(mode="after")
    def _not_everything(self) -> _Rule:
        if self.charges.is_empty():
            raise ValueError(
                f"rule {self.name!r}: charges matches every charge; give at least one condition "
                "(e.g. charge_categories: [Tax] or source: <name>)"
            )
        return self


class DirectRule(_Rule):
    """Charges that belong to one feature: an account, project, API key (tag) or resource."""

    feature: str
    environment: str | None = None

    @property
    def rule_id(self) -> str:
        return f"direct:{self.name}"


class Pool(_Rule):
    """A shared deployment, cluster or API project whose cost is split by its users' usage."""

    usage: UsageMatch
    driver: str = Field(
        "tokens",
        description="tokens, priced_tokens, or any inference_usage measure (gpu_seconds, requests, output_tokens...)",
    )
    gpus_per_resource: int | None = Field(
        None, gt=0, description="GPUs per billed resource: measures provisioned GPU-seconds, so idle is explicit"
    )
    capacity: Literal["billing", "telemetry"] = Field(
        "billing",
        description="provisioned GPU-seconds from the bill (resources × gpus_per_resource) or from the usage "
        "rows' gpu_seconds_provisioned (GPU metrics)",
    )
    idle: Literal["keep", "spread"] = Field(
        "keep", description="keep: an `idle` line; spread: over the pool's features in proportion to use"
    )

    @property
    def rule_id(self) -> str:
        return f"pool:{self.name}"

    @property
    def measures_idle(self) -> bool:
        return self.capacity == "telemetry" or self.gpus_per_resource is not None

    @model_validator(mode="before")
    @classmethod
    def _gpu_check_first(cls, data: object) -> object:
        # Checked before the fields so the message is not hidden behind other errors of the same pool.
        if not isinstance(data, dict) or data.get("driver", "tokens") == "gpu_seconds":
            return data
        if data.get("gpus_per_resource") is not None:
            raise ValueError(f"pool {data.get('name')!r}: gpus_per_resource needs driver: gpu_seconds")
        if data.get("capacity") == "telemetry":
            raise ValueError(f"pool {data.get('name')!r}: capacity: telemetry needs driver: gpu_seconds")
        return data

    @model_validator(mode="after")
    def _one_capacity(self) -> Pool:
        if self.capacity == "telemetry" and self.gpus_per_resource is not None:
            raise ValueError(f"pool {self.name!r}: capacity: telemetry reads GPUs from usage; drop gpus_per_resource")
        if self.idle == "spread" and not self.measures_idle:
            raise ValueError(f"pool {self.name!r}: idle: spread needs gpus_per_resource or capacity: telemetry")
        return self

    @field_validator("driver")
    @classmethod
    def _known_driver(cls, v: str) -> str:
        from models.usage import USAGE_MEASURES

        if v not in SPECIAL_DRIVERS and v not in USAGE_MEASURES:
            raise ValueError(f"unknown driver {v!r}; use one of {[*SPECIAL_DRIVERS, *USAGE_MEASURES]}")
        return v


class OverheadRule(_Rule):
    """Shared overhead (network, storage, observability, support, tax) spread over features."""

    split: Literal["proportional", "even", "fixed"] = Field(
        "proportional",
        description="proportional: to each feature's attributed cost that day; even: equal parts; fixed: percentages",
    )
    features: list[str] = Field(
        default_factory=list, description="only these features (even: default every configured feature)"
    )
    percentages: dict[str, Decimal] = Field(default_factory=dict, description="fixed: feature → percent, sum 100")
    basis: list[str] = Field(
        default_factory=list, description="proportional: only cost allocated by these rules (e.g. pool:gpu_cluster)"
    )

    @property
    def rule_id(self) -> str:
        return f"overhead:{self.name}"

    @model_validator(mode="after")
    def _split_fields(self) -> OverheadRule:
        where = f"overhead rule {self.name!r}"
        if self.split == "fixed":
            if not self.percentages:
                raise ValueError(f"{where}: split fixed needs percentages (feature: percent)")
            total = sum(self.percentages.values(), Decimal(0))
            if total != 100:
                raise ValueError(f"{where}: percentages must sum to 100, they sum to {total}")
            if any(p <= 0 or p != round(p, PRICE_PLACES) for p in self.percentages.values()):
                raise ValueError(f"{where}: percentages must be positive with at most {PRICE_PLACES} decimals")
        elif self.percentages:
            raise ValueError(f"{where}: percentages are only used with split: fixed")
        if self.basis and self.split != "proportional":
            raise ValueError(f"{where}: basis is only used with split: proportional")
        return self


class Classification(_Strict):
    """Which costs are COGS, R&D or OpEx: by environment first, then by the feature's workload."""

    environments: dict[str, CostClass] = Field(
        default_factory=lambda: dict(DEFAULT_ENVIRONMENT_CLASSES),  # type: ignore[arg-type]
        description="environment (case-insensitive) → class; other environments take the workload's class",
    )
    workloads: dict[Workload, CostClass] = Field(
        default_factory=lambda: dict(DEFAULT_WORKLOAD_CLASSES),  # type: ignore[arg-type]
    )
    idle: CostClass = Field("cogs", description="class of idle capacity and unused commitments kept as `idle`")
    unallocated: CostClass = Field("cogs", description="class of what no rule attributes")

    @field_validator("workloads")
    @classmethod
    def _all_workloads(cls, v: dict[str, str]) -> dict[str, str]:
        return {**DEFAULT_WORKLOAD_CLASSES, **v}


class AllocationConfig(_Strict):
    """The attribution rules; precedence: unused commitment, tags, direct, pools, overhead, then unallocated."""

    feature_tag_keys: list[str] = Field(
        default_factory=lambda: ["feature"], description="tag/label keys whose value names a feature directly"
    )
    environment_tag_keys: list[str] = Field(
        default_factory=lambda: ["environment"], description="tag/label keys whose value names the environment"
    )
    unused_commitment: Literal["keep", "spread"] = Field(
        "keep", description="unused commitment: an `idle` line, or spread over features by their cost that day"
    )
    direct: list[DirectRule] = Field(default_factory=list)
    pools: list[Pool] = Field(default_factory=list)
    overhead: list[OverheadRule] = Field(default_factory=list)
    token_prices: TokenPrices = Field(default_factory=TokenPrices)
    classification: Classification = Field(default_factory=Classification)

    @model_validator(mode="after")
    def _unique_rule_names(self) -> AllocationConfig:
        names = [r.name for r in (*self.direct, *self.pools, *self.overhead)]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"allocation rule names must be unique across direct, pools and overhead: {dup}")
        rule_ids = {r.rule_id for r in (*self.direct, *self.pools)} | {"unused_commitment"}
        for rule in self.overhead:
            unknown = sorted(set(rule.basis) - rule_ids - {f"tag:{k}" for k in self.feature_tag_keys})
            if unknown:
                raise ValueError(
                    f"overhead rule {rule.name!r}: basis names unknown rules {unknown}; known: {sorted(rule_ids)}"
                )
        return self

    def reference_errors(self, features: set[str], sources: set[str]) -> list[str]:
        """What the rules name that the rest of cogs.yaml does not define (features, sources)."""
        errors = []
        known = sorted(features) or "(no features configured)"
        for rule in self.direct:
            if rule.feature not in features:
                errors.append(f"direct rule {rule.name!r} names unknown feature {rule.feature!r}; features: {known}")
        for rule in self.overhead:
            named = sorted((set(rule.features) | set(rule.percentages)) - features)
            if named:
                errors.append(f"overhead rule {rule.name!r} names unknown features {named}; features: {known}")
            if rule.split == "even" and not (rule.features or features):
                errors.append(f"overhead rule {rule.name!r}: split even needs features (none configured)")
        for rule in (*self.direct, *self.overhead):
            if rule.charges.source is not None and rule.charges.source not in sources:
                errors.append(f"allocation rule {rule.name!r} names unknown source {rule.charges.source!r}")
        return errors


class FeatureConfig(_Strict):
    description: str = ""
    useful_output: Literal["succeeded", "accepted"] = Field(
        "succeeded", description="succeeded: a successful first-try answer; accepted: the user accepted it"
    )
    useful_output_version: int = Field(
        1, ge=1, description="bump when the definition of a useful output changes; reports show rule@vN"
    )
    workload: Workload = Field("production_inference", description="what the feature's inference is for")
    cost_class: CostClass | None = Field(None, description="overrides the class of the feature's workload")

    @property
    def useful_output_rule(self) -> str:
        """The versioned definition recorded with the usage rows, e.g. ``accepted@v2``."""
        return f"{self.useful_output}@v{self.useful_output_version}"


class AnomalyConfig(_Strict):
    """The daily detector (models/anomaly.py): a same-weekday median baseline, a robust score and two floors."""

    baseline_weeks: int = Field(4, ge=1, le=26, description="the baseline is the same weekday over this many weeks")
    min_same_weekday: int = Field(
        3, ge=1, description="fewer same-weekday points than this: fall back to the same kind of day (weekday/weekend)"
    )
    min_history_days: int = Field(4, ge=1, description="fallback: earlier days of the same kind needed to score a day")
    fallback_window_days: int = Field(28, ge=7, description="fallback: how far back days of the same kind are taken")
    score_threshold: float = Field(5.0, gt=0, description="robust z-score: excess / the series' typical deviation")
    min_impact_usd: float = Field(100.0, ge=0, description="and the excess costs at least this much (USD per day)")
    min_relative_change: float = Field(0.3, ge=0, description="and the value is at least this much above the baseline")
    spread_floor: float = Field(
        0.05, ge=0, description="the spread is at least this share of the baseline, so flat series don't flag noise"
    )
    noise_window_days: int = Field(28, ge=7, description="the spread is the series' noise over this many days")
    min_noise_days: int = Field(7, ge=3, description="fewer scored days than this: the reference days' own MAD")
    trend_adjust: bool = Field(
        True, description="raise the baseline by how far the recent days ran above theirs (growth is no incident)"
    )
    top_drivers: int = Field(3, ge=1, le=20, description="children listed per driver dimension")


_CHANNEL_NAME = r"^[a-z][a-z0-9_-]*$"


class _AlertChannel(_Strict):
    name: str = Field(pattern=_CHANNEL_NAME)
    min_impact_usd: float = Field(0.0, ge=0, description="only anomalies costing at least this much (total impact)")
    features: list[str] = Field(
        default_factory=list, description="only anomalies of these features (empty: every feature and provider)"
    )
    metrics: list[Literal["spend", "unit_cost"]] = Field(default_factory=lambda: ["spend", "unit_cost"])
    timeout_seconds: float = Field(10.0, gt=0)


class SlackAlertChannel(_AlertChannel):
    """A Slack incoming webhook; its URL is a secret, so only the environment variable is named here."""

    type: Literal["slack"]
    url_env: str = Field(description="env var holding https://hooks.slack.com/services/...")


class EmailAlertChannel(_AlertChannel):
    """E-mail over SMTP (smtplib): STARTTLS or implicit TLS, credentials from environment variables."""

    type: Literal["email"]
    smtp_host: str
    smtp_port: int = Field(587, ge=1, le=65_535)
    tls: Literal["starttls", "ssl", "none"] = Field("starttls", description="ssl: implicit TLS (port 465)")
    ca_file: str | None = Field(None, description="PEM bundle to trust instead of the system's (private relays)")
    username_env: str | None = Field(None, description="env var holding the SMTP user; unset: no login")
    password_env: str | None = Field(None, description="env var holding the SMTP password")
    from_address: str = Field(alias="from", min_length=3)
    to: list[str] = Field(min_length=1)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _login_pair(self) -> EmailAlertChannel:
        if (self.username_env is None) != (self.password_env is None):
            raise ValueError(f"channel {self.name!r}: set both username_env and password_env, or neither")
        return self


class WebhookAlertChannel(_AlertChannel):
    """Any HTTP endpoint: the anomaly as JSON, optionally signed with HMAC-SHA256 (header X-Cogs-Signature)."""

    type: Literal["webhook"]
    url: str | None = Field(None, description="the endpoint, when it is not a secret")
    url_env: str | None = Field(None, description="env var holding the endpoint, when it is")
    secret_env: str | None = Field(None, description="env var holding the HMAC key; unset: unsigned")
    headers: dict[str, str] = Field(default_factory=dict, description="extra request headers (not secrets)")

    @model_validator(mode="after")
    def _one_url(self) -> WebhookAlertChannel:
        if (self.url is None) == (self.url_env is None):
            raise ValueError(f"channel {self.name!r}: set exactly one of url or url_env")
        return self


class FileAlertChannel(_AlertChannel):
    """Appends each message as one JSON line to a local file: for demos, audits and tests."""

    type: Literal["file"]
    path: str


AlertChannel = Annotated[
    SlackAlertChannel | EmailAlertChannel | WebhookAlertChannel | FileAlertChannel, Field(discriminator="type")
]


class AlertsConfig(_Strict):
    """Where anomalies are sent (pipelines/alerts.py); delivery goes through the alert_outbox table."""

    channels: list[AlertChannel] = Field(default_factory=list)
    interval_seconds: int = Field(60, ge=10, description="how often the alert sensor looks for work")
    max_age_days: int | None = Field(
        7, ge=1, description="anomalies that ended longer ago are not alerted when first found (backfills)"
    )
    retry_base_seconds: int = Field(60, ge=1, description="first retry delay of a failed delivery; doubles each time")
    retry_max_seconds: int = Field(6 * 3_600, ge=1, description="longest delay between retries (never given up)")

    @field_validator("channels")
    @classmethod
    def _unique_channel_names(cls, v: list[AlertChannel]) -> list[AlertChannel]:
        names = [c.name for c in v]
        if dup := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"alert channel names must be unique; repeated: {dup}")
        return v

    def reference_errors(self, features: set[str]) -> list[str]:
        """Channels filtering on features that cogs.yaml does not define."""
        known = sorted(features) or "(no features configured)"
        return [
            f"alert channel {c.name!r} names unknown features {unknown}; features: {known}"
            for c in self.channels
            if (unknown := sorted(set(c.features) - features))
        ]


class IngestConfig(_Strict):
    max_quarantined_share: float = Field(
        0.01, ge=0, le=1, description="a load fails when more than this share of its rows can't be parsed"
    )


class ReportsConfig(_Strict):
    """The month-end close pack, the weekly flash and their Dagster schedules (times in UTC)."""

    output_dir: str = ".cogs/reports"
    close_day: int = Field(
        5, ge=1, le=28, description="day of the next month on which a month is closed and its close pack written"
    )
    close_hour: int = Field(7, ge=0, le=23, description="UTC hour of the close")
    flash_weekday: Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"] = Field(
        "monday", description="day the weekly flash is written, for the last complete week (Monday to Sunday)"
    )
    flash_hour: int = Field(7, ge=0, le=23, description="UTC hour of the weekly flash")
    top_movers: int = Field(5, ge=1, le=50, description="lines the weekly flash lists as top movers")
    pdf: bool = Field(True, description="also print the HTML report to PDF with headless Chromium")
    chromium: str | None = Field(
        None, description="Chromium or Chrome binary for the PDF; default: chromium, chromium-browser, google-chrome"
    )


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
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
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
        errors = self.allocation.reference_errors(set(self.features), {s.name for s in self.sources})
        errors += self.alerts.reference_errors(set(self.features))
        if errors:
            raise ValueError("; ".join(errors))
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
