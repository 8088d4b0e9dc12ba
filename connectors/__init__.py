"""One module per source format or API; each exposes ``load(config, period) -> LoadResult``."""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

MODULES: dict[str, str] = {
    "aws_cur2": "connectors.aws_cur2",
    "aws_cur_legacy": "connectors.aws_cur_legacy",
    "gcp_billing_export": "connectors.gcp_billing",
    "azure_cost_details": "connectors.azure_cost_details",
    "focus_file": "connectors.focus_file",
    "openai_costs": "connectors.openai_costs",
    "openai_costs_usage": "connectors.openai_usage",
    "anthropic_costs": "connectors.anthropic",
    "otel_genai": "connectors.otel_genai",
    "vllm_metrics": "connectors.vllm_metrics",
    "dcgm_metrics": "connectors.dcgm_metrics",
    "litellm_spend_logs": "connectors.litellm",
    "request_logs": "connectors.request_logs",
    "runpod": "connectors.runpod",
    "vastai": "connectors.vastai",
    "lambda_cloud": "connectors.lambda_cloud",
    "coreweave_focus": "connectors.coreweave",
    "reserved_capacity": "connectors.reserved_capacity",
}


def connector(source_type: str) -> ModuleType:
    """The connector module for a ``type`` of cogs.yaml (imported on first use)."""
    try:
        return import_module(MODULES[source_type])
    except KeyError:
        raise ValueError(f"unknown source type {source_type!r}; known: {', '.join(sorted(MODULES))}") from None
