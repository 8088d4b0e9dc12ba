"""The demo company's reserved GPU contract: declared in cogs.yaml, so there are no files to write.

Lumen Assist reserved 4 H100 SXM GPUs at its GPU cloud for the calendar year of the demo month, at a
contracted $2.10 per GPU-hour (the on-demand VM in ``gpu_cloud.py`` costs ``GPU_CLOUD_H100_HOURLY``) plus
$12,000 upfront, for a second Qwen deployment that takes 30% of code_assist's completions.
``connectors.reserved_capacity`` turns it into the monthly fee, the upfront payment (in January) and hourly
Used/Unused rows from that deployment's GPU-seconds, so the contract's idle hours show as Unused commitment.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pipelines.demo.company import DEPLOYMENT_RESERVED_QWEN, GPU_CLOUD_PROVIDER, DemoMonth

SOURCE_NAME = "reserved_gpus"
CONTRACT_ID = "lumen-h100-reserved"
GPUS = 4
RATE_PER_GPU_HOUR = Decimal("2.10")
UPFRONT = Decimal("12000")


def source_config(month: DemoMonth) -> dict[str, Any]:
    """The ``reserved_capacity`` source for cogs.yaml: one contract covering the demo month's year."""
    year = month.start.year
    return {
        "name": SOURCE_NAME,
        "type": "reserved_capacity",
        "contracts": [
            {
                "id": CONTRACT_ID,
                "name": "4× H100 SXM, 12 months",
                "provider": GPU_CLOUD_PROVIDER,
                "region": "eu-north1",
                "region_name": "Finland",  # as the GPU cloud's own FOCUS export names eu-north1
                "gpu_type": "H100 SXM",
                "gpu_count": GPUS,
                "start": f"{year}-01-01T00:00:00Z",
                "end": f"{year + 1}-01-01T00:00:00Z",
                "hourly_rate_per_gpu": str(RATE_PER_GPU_HOUR),
                "upfront": str(UPFRONT),
                "deployments": [DEPLOYMENT_RESERVED_QWEN],
            }
        ],
    }


def pool_config() -> dict[str, Any]:
    """The allocation pool for the contract's Used rows (Unused rows are idle by themselves)."""
    return {
        "name": "reserved_h100",
        "charges": {"source": SOURCE_NAME, "resource_ids": [DEPLOYMENT_RESERVED_QWEN]},
        "usage": {"deployments": [DEPLOYMENT_RESERVED_QWEN]},
        "driver": "gpu_seconds",
    }
