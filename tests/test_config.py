from __future__ import annotations

import pytest

from models.config import ConfigError, parse_config

VALID = """
sources:
  - {name: aws_cur, type: aws_cur2, path: s3://bucket/cur/export}
  - {name: openai, type: openai_costs, api_key_env: OPENAI_ADMIN_KEY}
telemetry:
  - {name: otel, type: otel_genai, path: /data/otel}
allocation:
  pools:
    - name: cluster
      charges: {source: aws_cur, tags: {cluster: prod}}
      usage: {deployments: [vllm]}
      driver: gpu_seconds
      gpus_per_resource: 8
features:
  support_chat: {useful_output: accepted}
"""


def test_valid_config_parses_with_defaults() -> None:
    config = parse_config(VALID)
    assert [s.type for s in config.sources] == ["aws_cur2", "openai_costs"]
    assert config.sources[1].base_url == "https://api.openai.com"
    assert config.warehouse == "duckdb:///.cogs/warehouse.duckdb"
    assert config.features["support_chat"].useful_output == "accepted"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "sources: [{name: x, type: azure_ea, path: p}]",
            "sources.0: Input tag 'azure_ea' found using 'type' does not match",
        ),
        ("sources: [{name: x, type: focus_file}]", "sources.0.focus_file.path: Field required"),
        (
            "sources: [{name: x, type: openai_costs, api_key: sk-123}]",
            "sources.0.openai_costs.api_key: Extra inputs are not permitted",
        ),
        ("features: {idle: {}}", "feature names must be lower_snake_case and not ('unallocated', 'idle')"),
        (
            "sources: [{name: a, type: focus_file, path: p}, {name: a, type: focus_file, path: q}]",
            "source and telemetry names must be unique; repeated: ['a']",
        ),
        (
            "allocation: {pools: [{name: p, charges: {source: ghost}, usage: {}}]}",
            "allocation pools name unknown sources: ['ghost']",
        ),
        (
            "allocation: {pools: [{name: p, charges: {}, usage: {}, driver: tokens, gpus_per_resource: 8}]}",
            "pool 'p': gpus_per_resource needs driver: gpu_seconds",
        ),
        ("- just a list", "cogs.yaml: expected a mapping at the top level, got list"),
        ("sources: [", "cogs.yaml: not valid YAML"),
    ],
)
def test_invalid_config_names_the_field(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert message in str(info.value)


def test_secret_values_are_never_accepted_in_the_file() -> None:
    """A key pasted into the file is refused, and the refusal does not echo it back."""
    with pytest.raises(ConfigError) as info:
        parse_config("sources: [{name: x, type: openai_costs, api_key: sk-live-SECRET}]")
    assert "SECRET" not in str(info.value)
