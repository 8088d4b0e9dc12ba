"""Where the config and Dagster's home are: the only file and environment reads of the wiring."""

from __future__ import annotations

import os
from pathlib import Path

from models.config import CogsConfig, ConfigError, parse_config

CONFIG_ENV = "COGS_CONFIG"
WAREHOUSE_ENV = "COGS_WAREHOUSE_URL"
DEFAULT_CONFIG = "cogs.yaml"


def config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV, DEFAULT_CONFIG))


def load_config(path: str | Path | None = None) -> CogsConfig:
    p = Path(path) if path else config_path()
    if not p.is_file():
        raise ConfigError(
            f"{p}: config file not found (run `cogs demo` to generate one, or pass --config / set {CONFIG_ENV})"
        )
    config = parse_config(p.read_text(), origin=str(p))
    url = os.environ.get(WAREHOUSE_ENV)
    return config.model_copy(update={"warehouse": url}) if url else config


def ensure_dagster_home() -> Path:
    """``DAGSTER_HOME`` defaults to ``.cogs/dagster`` with telemetry off, so nothing lands in ``$HOME``.

    One run at a time: DuckDB lets one process write the warehouse, so queued runs wait their turn.
    """
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path(".cogs/dagster").resolve())))
    home.mkdir(parents=True, exist_ok=True)
    settings = home / "dagster.yaml"
    if not settings.exists():
        settings.write_text("telemetry:\n  enabled: false\nconcurrency:\n  runs:\n    max_concurrent_runs: 1\n")
    return home
