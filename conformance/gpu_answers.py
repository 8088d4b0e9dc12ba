"""Hand-written RunPod and Vast.ai API answers for the conformance cases, mapped by the connectors' pure functions.

The shapes are the documented responses the connectors' tests serve (tests/test_runpod.py,
tests/test_vastai.py), written out compactly here so conformance does not import from tests/:

- RunPod REST API v1 ``GET /billing/pods`` and ``/billing/endpoints``: a bare JSON array of
  ``{time, amount, timeBilledMs, diskSpaceBilledGb, <grouping key>}``, one record per bucket and grouping
  key; ``GET /billing/networkvolumes``: ``{time, amount, diskSpaceBilledGb, highPerformanceStorageAmount,
  highPerformanceStorageDiskSpaceBilledGb}``. Amounts are JSON numbers, or strings from some proxies.
- Vast.ai ``GET /api/v0/charges/`` (``format=table``): ``{success, count, total, next_token, results}``, each
  result a contract's charge ``{start, end, type, source, description, amount, metadata, items[]}`` and each
  item the same shape; amounts as JSON numbers or strings, unix-second windows.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from connectors.runpod import Answer
from connectors.vastai import Page
from models.period import BillingPeriod

# --- RunPod ---------------------------------------------------------------------------------------

H100, A5000, L40S, A40 = "NVIDIA H100 80GB HBM3", "NVIDIA RTX A5000", "NVIDIA L40S", "NVIDIA A40"
# (resource, GPU type or None for a CPU pod, day, hour, amount as RunPod sends it, timeBilledMs, diskSpaceBilledGb)
RUNPOD_PODS: list[tuple[str, str | None, int, int, Any, int, int]] = [
    *[("p-h100a", H100, 1, h, Decimal("2.99"), 3_600_000, 50) for h in range(3)],
    ("p-a5000", A5000, 15, 10, Decimal("0.27"), 3_600_000, 20),
    ("p-a5000", A5000, 15, 11, Decimal("0.135"), 1_800_000, 20),  # half an hour billed
    ("p-cpu", None, 30, 23, "0.06", 3_600_000, 10),  # a CPU pod (no GPU type); the amount as a string
]
RUNPOD_ENDPOINTS: list[tuple[str, str | None, int, int, Any, int, int]] = [
    ("ep-qwen", L40S, 10, 12, Decimal("1.234567"), 1_234_567, 0),
    ("ep-qwen", L40S, 10, 13, Decimal("0.8"), 1_800_000, 0),
    ("ep-qwen", A40, 10, 12, Decimal("0.5"), 900_000, 0),  # a fallback GPU type in the same hour
]
# (day, hour, amount, GB, high-performance amount, high-performance GB)
RUNPOD_VOLUMES = [
    (1, 0, Decimal("0.0097"), 100, Decimal("0.0042"), 30),
    (1, 1, Decimal("0.0097"), 100, Decimal("0"), 0),
]


def runpod_answers(period: BillingPeriod) -> dict[str, list[Answer]]:
    """What ``connectors.runpod.fetch`` gets for every kind: by GPU type, by resource per type, then overall."""
    answers = {
        "pods": _runpod_grouped("/v1/billing/pods", "podId", RUNPOD_PODS, period),
        "endpoints": _runpod_grouped("/v1/billing/endpoints", "endpointId", RUNPOD_ENDPOINTS, period),
    }
    volumes = [
        {"time": _rfc3339(period, day, hour), "amount": amount, "diskSpaceBilledGb": gb,
         "highPerformanceStorageAmount": hp, "highPerformanceStorageDiskSpaceBilledGb": hp_gb}
        for day, hour, amount, gb, hp, hp_gb in RUNPOD_VOLUMES
    ]  # fmt: skip
    answers["networkvolumes"] = [Answer("/v1/billing/networkvolumes", "", volumes)]
    return answers


def _runpod_grouped(path: str, id_field: str, usage: list[tuple], period: BillingPeriod) -> list[Answer]:
    def records(grouping: str, gpu_filter: str | None = None) -> list[dict[str, Any]]:
        totals: dict[tuple[str, str | None], list[Any]] = defaultdict(lambda: [Decimal(0), 0, 0])
        for resource, gpu, day, hour, amount, ms, disk in usage:
            if gpu_filter is not None and gpu != gpu_filter:
                continue
            entry = totals[(_rfc3339(period, day, hour), resource if grouping == id_field else gpu)]
            entry[0] = amount if isinstance(amount, str) else entry[0] + amount
            entry[1] += ms
            entry[2] = max(entry[2], disk)
        return [
            {"time": time, "amount": amount, "timeBilledMs": ms, "diskSpaceBilledGb": disk, grouping: key}
            for (time, key), (amount, ms, disk) in sorted(totals.items(), key=lambda kv: (kv[0][0], str(kv[0][1])))
        ]

    types = sorted({gpu for _, gpu, *_ in usage if gpu})
    return [
        Answer(path, "grouping=gpuTypeId", records("gpuTypeId")),
        *[Answer(path, f"grouping={id_field}&gpuTypeId={t}", records(id_field, t)) for t in types],
        Answer(path, f"grouping={id_field}", records(id_field)),
    ]


def _rfc3339(period: BillingPeriod, day: int, hour: int) -> str:
    return f"{datetime(period.start.year, period.start.month, day, hour, tzinfo=UTC):%Y-%m-%dT%H:%M:%SZ}"


# --- Vast.ai --------------------------------------------------------------------------------------


def vastai_pages(period: BillingPeriod) -> list[Page]:
    """Two days of ``GET /api/v0/charges/`` answers: instances with items, a volume, a serverless worker."""
    return [
        Page(datetime(period.start.year, period.start.month, day, tzinfo=UTC), 1,
             {"success": True, "count": len(results), "total": len(results), "next_token": None, "results": results})
        for day, results in vastai_charges(period).items()
    ]  # fmt: skip


DAY_SECONDS = 86_400
QWEN = {"template_id": 101, "label": "qwen-serving", "endpoint_id": None, "workergroup_id": None}


class VastaiCharges:
    """Builders of ``GET /api/v0/charges/`` results (contract charges and their items) for days of a month."""

    def __init__(self, period: BillingPeriod) -> None:
        self.period = period

    def ts(self, day: int, hour: int = 0, minute: int = 0) -> int:
        """Unix seconds of ``day`` of the month at ``hour:minute`` UTC."""
        start = self.period.start
        return int(datetime(start.year, start.month, day, hour, minute, tzinfo=UTC).timestamp())

    def charge(
        self, day: int, source: str | None, amount: Any, description: str, items: list[dict], **extra: Any
    ) -> dict:
        """A contract's charge for ``day`` (its window is the whole day unless ``start``/``end`` say otherwise)."""
        start, end = extra.pop("start", self.ts(day)), extra.pop("end", self.ts(day) + DAY_SECONDS)
        kind, metadata = extra.pop("type", "instance"), extra.pop("metadata", {})
        return {"start": start, "end": end, "type": kind, "source": source, "description": description,
                "amount": amount, "metadata": metadata, "items": items}  # fmt: skip

    def item(self, day: int, kind: str, amount: Any, description: str, **extra: Any) -> dict:
        """One line of a charge: the same shape, without source, metadata or items of its own."""
        return self.charge(day, None, amount, description, [], type=kind, **extra)

    def serving_instance(self, day: int) -> dict:
        """The qwen-serving instance's charge for a whole day: GPU, storage and bandwidth items."""
        return self.charge(day, "instance-12345678", Decimal("9.6543"), "Instance 12345678 Charges - 1 day", [
            self.item(day, "gpu", Decimal("9.336"), "24.000 hours at $0.389/hour"),
            self.item(day, "storage", Decimal("0.24"), "Storage: 50.0 GB for 24.000 hours"),
            self.item(day, "bandwidth", Decimal("0.0783"), "Bandwidth: 0.87 GB down, 0.02 GB up"),
        ], metadata=QWEN)  # fmt: skip


def vastai_charges(period: BillingPeriod) -> dict[int, list[dict]]:
    """Day of ``period`` → the charges of that day's answer (tests/test_vastai.py serves day 1 too)."""
    answer = VastaiCharges(period)
    ts, charge, item = answer.ts, answer.charge, answer.item
    worker = {"template_id": 207, "label": None, "endpoint_id": 19392, "workergroup_id": 25355}
    days = {
        1: [
            answer.serving_instance(1),
            charge(1, "volume-555", "0.48", "Volume 555 Charges - 1 day", [], type="volume"),  # amount as a string
            charge(1, "instance-23456789", Decimal("1.5561"), "Instance 23456789 Charges - 1 day", [
                item(1, "gpu", Decimal("1.556"), "4.000 hours at $0.389/hour", start=ts(1, 8), end=ts(1, 12)),
            ], metadata=worker, start=ts(1, 8), end=ts(1, 12)),  # the items leave $0.0001 unexplained
        ],
        2: [
            charge(2, "instance-34567890", Decimal("2.625"), "Instance 34567890 Charges - 1 day", [
                item(2, "gpu", Decimal("2.625"), "10.500 hours at $0.25/hour", start=ts(2, 13, 30), end=ts(3)),
            ], start=ts(2, 13, 30), end=ts(5)),  # still running after the day: clipped to the day
        ],
    }  # fmt: skip
    return days
