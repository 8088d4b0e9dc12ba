"""The demo company: its features, where each runs, and its traffic, hour by hour.

Every demo generator (AWS CUR 2.0, the GPU cloud's FOCUS export, OpenAI's Costs API pages,
Anthropic's Admin API reports, OTel spans) reads this one model, so bills and telemetry describe
the same month of the same business.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal

from models.period import BillingPeriod

COMPANY = "Lumen Assist, Inc."

AWS_PAYER_ACCOUNT = "412395870021"
AWS_USAGE_ACCOUNT = "739214660385"
AWS_CLUSTER = "inference-prod"
OPENAI_PROJECT = "proj_Lm7cQ2xYp4RfT9sVw1eK"
OPENAI_ORG = "org-Qa3LmZ8tYx1Nf0cKp7Rw"
GPU_CLOUD_PROVIDER = "Nebius"

DEPLOYMENT_AWS_LLAMA = "vllm-llama70b.inference-prod.svc.cluster.local"
DEPLOYMENT_GPUCLOUD_QWEN = "vllm-qwen-coder.nebius-eu-north1.internal"
DEPLOYMENT_OPENAI = "api.openai.com"
# Completions for code_assist also run on 4 reserved H100s (a 12-month contract declared in cogs.yaml).
DEPLOYMENT_RESERVED_QWEN = "vllm-qwen-coder.reserved-h100.internal"
DEPLOYMENT_ANTHROPIC = "api.anthropic.com"

ANTHROPIC_ORG = "7c1e4b2a-93d5-4f08-b6a1-2e9d5c3f8a40"  # Admin API organization ids are UUIDs
ANTHROPIC_ORG_NAME = COMPANY
ANTHROPIC_WORKSPACE = "wrkspc_01K2hTq8NvY4cLm7RzW3pXs6"  # Console (Workbench) use goes to the default one
ANTHROPIC_WORKSPACE_NAME = "doc-summaries"
ANTHROPIC_WORKSPACE_TAGS = {"env": "prod", "team": "documents"}
ANTHROPIC_API_KEY_ID = "apikey_01K2hVb5Qr8mZt3LwN6yCx4D"

# OpenAI list prices, USD per 1M tokens (platform.openai.com/docs/pricing).
OPENAI_PRICES: dict[str, dict[str, Decimal]] = {
    "gpt-4.1-2025-04-14": {"input": Decimal("2.00"), "cached_input": Decimal("0.50"), "output": Decimal("8.00")},
    "gpt-4.1-mini-2025-04-14": {
        "input": Decimal("0.40"),
        "cached_input": Decimal("0.10"),
        "output": Decimal("1.60"),
    },
}

# Anthropic list prices, USD per 1M tokens (platform.claude.com/docs/en/about-claude/pricing), by the
# cost report's token_type.
ANTHROPIC_PRICES: dict[str, dict[str, Decimal]] = {
    "claude-sonnet-4-5-20250929": {
        "uncached_input_tokens": Decimal("3.00"),
        "cache_creation.ephemeral_5m_input_tokens": Decimal("3.75"),
        "cache_creation.ephemeral_1h_input_tokens": Decimal("6.00"),
        "cache_read_input_tokens": Decimal("0.30"),
        "output_tokens": Decimal("15.00"),
    },
}

SAMPLING_RATIO = 64
"""Telemetry keeps 1 trace in 64 (OTel probability sampling, tracestate ``ot=th:fc``)."""


@dataclass(frozen=True)
class Route:
    """Share of a feature's requests served by one deployment and model."""

    share: float
    deployment: str
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0
    gpu_seconds: float = 0.0  # busy GPU-seconds per request on self-hosted deployments


@dataclass(frozen=True)
class Feature:
    name: str
    description: str
    requests_per_day: int
    routes: tuple[Route, ...]
    error_rate: float
    retry_rate: float
    accept_rate: float
    useful_output: str  # "accepted" or "succeeded"
    weekend_factor: float = 0.55


FEATURES: tuple[Feature, ...] = (
    Feature(
        "support_chat",
        "Customer support assistant answering tickets in the help center",
        requests_per_day=42_000,
        routes=(Route(1.0, DEPLOYMENT_OPENAI, "openai", "gpt-4.1-2025-04-14", 2_600, 380, 1_400),),
        error_rate=0.012,
        retry_rate=0.02,
        accept_rate=0.71,
        useful_output="accepted",
    ),
    Feature(
        "code_assist",
        "In-IDE coding assistant (chat on Llama 3.1 70B, completions on Qwen coder)",
        requests_per_day=96_000,
        routes=(
            Route(
                0.35, DEPLOYMENT_AWS_LLAMA, "vllm", "meta-llama/Llama-3.1-70B-Instruct", 3_800, 520, gpu_seconds=24.0
            ),
            Route(
                0.35, DEPLOYMENT_GPUCLOUD_QWEN, "vllm", "Qwen/Qwen2.5-Coder-32B-Instruct", 1_900, 90, gpu_seconds=7.0
            ),
            Route(
                0.30, DEPLOYMENT_RESERVED_QWEN, "vllm", "Qwen/Qwen2.5-Coder-32B-Instruct", 1_900, 90, gpu_seconds=7.0
            ),
        ),
        error_rate=0.008,
        retry_rate=0.015,
        accept_rate=0.34,
        useful_output="accepted",
        weekend_factor=0.3,
    ),
    Feature(
        "search_rewrite",
        "Query rewriting for site search",
        requests_per_day=150_000,
        routes=(
            Route(0.8, DEPLOYMENT_AWS_LLAMA, "vllm", "meta-llama/Llama-3.1-70B-Instruct", 420, 60, gpu_seconds=3.0),
            Route(0.2, DEPLOYMENT_OPENAI, "openai", "gpt-4.1-mini-2025-04-14", 450, 55, 0),
        ),
        error_rate=0.004,
        retry_rate=0.01,
        accept_rate=1.0,
        useful_output="succeeded",
        weekend_factor=0.8,
    ),
    Feature(
        "doc_summaries",
        "Summaries of uploaded contracts and reports",
        requests_per_day=9_000,
        routes=(
            Route(0.6, DEPLOYMENT_OPENAI, "openai", "gpt-4.1-mini-2025-04-14", 14_000, 900, 2_000),
            Route(
                0.2, DEPLOYMENT_GPUCLOUD_QWEN, "vllm", "Qwen/Qwen2.5-Coder-32B-Instruct", 9_000, 700, gpu_seconds=36.0
            ),
            Route(0.2, DEPLOYMENT_ANTHROPIC, "anthropic", "claude-sonnet-4-5-20250929", 14_000, 900, 2_000),
        ),
        error_rate=0.02,
        retry_rate=0.03,
        accept_rate=0.82,
        useful_output="succeeded",
    ),
)
FEATURE_BY_NAME = {f.name: f for f in FEATURES}


@dataclass(frozen=True)
class RetryStorm:
    """The planted anomaly: a client bug makes one feature retry in a loop for some hours."""

    feature: str = "support_chat"
    day: int = 17  # day of the demo month
    start_hour: int = 13
    end_hour: int = 21  # exclusive
    request_multiplier: float = 7.0  # requests per hour vs normal, almost all of them retries
    error_rate: float = 0.55


STORM = RetryStorm()


@dataclass(frozen=True)
class DemoMonth:
    month: str  # YYYY-MM
    seed: int = 7
    storm: RetryStorm = field(default=STORM)

    @property
    def start(self) -> datetime:
        return BillingPeriod(self.month).start

    @property
    def end(self) -> datetime:
        return BillingPeriod(self.month).end

    def hours(self) -> list[datetime]:
        n = int((self.end - self.start).total_seconds() // 3600)
        return [self.start + timedelta(hours=h) for h in range(n)]

    def days(self) -> list[date]:
        return sorted({h.date() for h in self.hours()})

    def storm_active(self, feature: str, hour: datetime) -> bool:
        s = self.storm
        return feature == s.feature and hour.day == s.day and s.start_hour <= hour.hour < s.end_hour


def diurnal(hour: datetime) -> float:
    """Traffic shape: a working-day peak around 15:00 UTC (Europe afternoon, US morning); mean 1.0."""
    return 1.0 + 0.65 * math.sin((hour.hour - 9) / 24 * 2 * math.pi)


def expected_requests(feature: Feature, hour: datetime, month: DemoMonth) -> float:
    """Expected requests of a feature in one hour, before sampling; includes the planted storm."""
    weekday = hour.weekday() < 5
    growth = 1.0 + 0.004 * (hour.day - 1)  # ~12% month-over-month growth
    base = feature.requests_per_day / 24 * diurnal(hour) * (1.0 if weekday else feature.weekend_factor)
    base *= growth
    if month.storm_active(feature.name, hour):
        base *= month.storm.request_multiplier
    return base


# --- infrastructure billed by AWS (CUR 2.0) and the GPU cloud (FOCUS) -------------------------------

P4D_ON_DEMAND = Decimal("32.7726")  # p4d.24xlarge, us-east-1, Linux on-demand $/hour
P4D_SP_RATE = Decimal("22.9408")  # 3-year no-upfront Compute Savings Plan rate (~30% off)
SP_HOURLY_COMMITMENT = Decimal("50.00")
G5_ON_DEMAND = Decimal("5.672")  # g5.12xlarge, us-east-1 $/hour, tagged feature=doc_summaries
GPU_CLOUD_H100_HOURLY = Decimal("2.95")  # per GPU-hour, 8 GPUs per VM
GPU_CLOUD_VMS = 1


def aws_cluster_instances(hour: datetime) -> int:
    """p4d.24xlarge nodes in the EKS node group: 2 always, a 3rd on weekday business hours."""
    return 3 if hour.weekday() < 5 and 8 <= hour.hour < 20 else 2
