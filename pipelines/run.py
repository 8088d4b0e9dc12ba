"""Materialize a month in-process, stage by stage, with progress and clean errors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg

from models.config import CogsConfig
from pipelines.assets import ALLOCATION, INGEST, MARTS, REPORT, WAREHOUSE
from pipelines.definitions import build_definitions
from pipelines.settings import ensure_dagster_home

STAGES = (INGEST, WAREHOUSE, ALLOCATION, MARTS, REPORT)
# The CLI shows its own progress; Dagster's event log stays in DAGSTER_HOME for the UI.
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


class RunFailed(RuntimeError):
    """A step or a blocking check failed; the message says which and why."""


@dataclass(frozen=True)
class Step:
    label: str
    keys: list[dg.AssetKey]


def plan(defs: dg.Definitions) -> list[Step]:
    """Ingest assets one step each (they are the slow ones), then each later group as one step."""
    graph = defs.resolve_asset_graph()
    by_group: dict[str, list[dg.AssetKey]] = {}
    for key in graph.toposorted_asset_keys:  # an ingest may depend on another (reserved capacity on telemetry)
        by_group.setdefault(graph.get(key).group_name or "", []).append(key)
    steps = [Step(f"ingest {k.path[-1].removeprefix('ingest_')}", [k]) for k in by_group.get(INGEST, [])]
    steps += [Step(group, by_group[group]) for group in STAGES[1:] if by_group.get(group)]
    return steps


def _failure(result: dg.ExecuteInProcessResult) -> str | None:
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            error = event.step_failure_data.error  # type: ignore[union-attr]
            cause = error.cause if error and error.cause else error
            return f"{event.step_key}: {cause.message.strip() if cause else 'failed'}"
    for evaluation in result.get_asset_check_evaluations():
        if not evaluation.passed:
            asset = evaluation.asset_key.to_user_string()
            return f"check {evaluation.check_name} on {asset} failed: {evaluation.metadata}"
    return None if result.success else "run failed"


def materialize_month(
    config: CogsConfig, month: str, on_step: Callable[[Step, int, int], None] | None = None
) -> list[dg.ExecuteInProcessResult]:
    """Run every asset for ``month``; stops at the first failed step or failed blocking check."""
    ensure_dagster_home()
    defs = build_definitions(config)
    assets = list(defs.assets or [])
    resources = dict(defs.resources or {})
    steps = plan(defs)
    results = []
    with dg.DagsterInstance.get() as instance:
        for i, step in enumerate(steps):
            if on_step:
                on_step(step, i, len(steps))
            result = dg.materialize(
                assets,  # type: ignore[arg-type]
                selection=step.keys,
                partition_key=month,
                resources=resources,
                instance=instance,
                raise_on_error=False,
                tags={"cogs/step": step.label},
                run_config=QUIET,
            )
            results.append(result)
            problem = _failure(result)
            if problem:
                raise RunFailed(f"{step.label} failed for {month}: {problem}")
    return results
