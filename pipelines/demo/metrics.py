"""Demo GPU metrics: the month's DCGM exporter utilization for the AWS cluster and the GPU cloud VM.

Files: ``metrics/dcgm/dcgm-YYYY-MM-DD.prom.gz``, Prometheus text format 0.0.4 as a Prometheus
``/federate`` pull returns it (``# HELP``/``# TYPE`` lines, sorted labels, every sample with its timestamp
in milliseconds), one sample per GPU every ``SCRAPE_INTERVAL_SECONDS`` (5 minutes: a downsampled
long-term Prometheus, so a month stays a few MB). Series follow dcgm-exporter (``etc/default-counters.csv``:
``DCGM_FI_DEV_GPU_UTIL``, gauge, "GPU utilization (in %)", an integer 0-100) with its labels ``gpu``,
``UUID``, ``pci_bus_id``, ``device``, ``modelName``, ``Hostname``, ``DCGM_FI_DRIVER_VERSION``, and the
scrape's ``instance``/``job``:

- AWS EKS cluster ``inference-prod``: ``aws_cluster_instances(hour)`` p4d.24xlarge nodes (8 A100-SXM4-40GB
  each), each running one tensor-parallel vLLM pod of the Llama deployment; the Kubernetes mapping adds
  ``namespace``/``pod``/``container``. The weekday daytime third node comes and goes with its pod.
- The GPU cloud: ``GPU_CLOUD_VMS`` bare VMs of ``gpu_cloud.GPUS_PER_VM`` H100s (dcgm-exporter in Docker, no
  Kubernetes labels), ``Hostname`` = the VM's Nebius resource id, serving the Qwen deployment.

Utilization comes from ``company.py``'s traffic: each hour a deployment is busy for the expected requests
of every route it serves × the route's GPU-seconds per request (what the OTel spans measure), spread over
its GPUs and capped at 100 % (a saturated hour), with noise per sample (10 % of the distance to 0 or
100 %). So busy GPU-seconds follow the spans, and idle is what the provisioned GPUs did not use.
"""

from __future__ import annotations

import gzip
import hashlib
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from pipelines.demo import gpu_cloud
from pipelines.demo.company import (
    AWS_CLUSTER,
    COMPANY,
    DEPLOYMENT_AWS_LLAMA,
    DEPLOYMENT_GPUCLOUD_QWEN,
    FEATURES,
    GPU_CLOUD_VMS,
    DemoMonth,
    aws_cluster_instances,
    expected_requests,
)

SCRAPE_INTERVAL_SECONDS = 300
GPUS_PER_P4D = 8
METRIC = "DCGM_FI_DEV_GPU_UTIL"
HEADER = f"# HELP {METRIC} GPU utilization (in %).\n# TYPE {METRIC} gauge\n"
DRIVER_VERSION = "550.127.05"
LLAMA_POD_PREFIX = "vllm-llama70b-7c9d8f6b54-"
NOISE = 0.10


@dataclass(frozen=True)
class Gpu:
    """One GPU as dcgm-exporter labels it (sorted, as /federate writes labels)."""

    labels: str  # the rendered label set, without braces
    deployment: str


def write(month: DemoMonth, out_dir: Path, seed: int) -> Path:
    """Write the month's DCGM scrapes under ``out_dir/metrics/dcgm/`` and return ``out_dir/metrics``."""
    return write_days(month, month.days(), out_dir, seed)


def write_days(month: DemoMonth, days: Iterable[date], out_dir: Path, seed: int) -> Path:
    """Write some days of the month (one file each); a day's file is the same alone or with the month."""
    folder = out_dir / "metrics" / "dcgm"
    folder.mkdir(parents=True, exist_ok=True)
    for day in days:
        rng = random.Random(f"{seed}:dcgm:{day.isoformat()}")
        hours = [h for h in month.hours() if h.date() == day]
        text = "".join(_hour_text(month, hour, rng) for hour in hours)
        with (
            open(folder / f"dcgm-{day.isoformat()}.prom.gz", "wb") as raw,
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as fh,  # mtime 0: same bytes every run
        ):
            fh.write(text.encode("utf-8"))
    return out_dir / "metrics"


def expected_busy_fraction(month: DemoMonth, hour: datetime) -> dict[str, float]:
    """Each deployment's expected utilization in an hour (before noise and rounding)."""
    return _busy_fraction(month, hour, list(_gpus(hour)))


def telemetry_entry(metrics_dir: Path, name: str = "gpu_metrics") -> dict[str, Any]:
    """The demo's cogs.yaml ``telemetry`` entry that reads these files (type ``dcgm_metrics``)."""
    return {
        "name": name,
        "type": "dcgm_metrics",
        "path": str(metrics_dir / "dcgm"),
        "scrape_interval_seconds": SCRAPE_INTERVAL_SECONDS,
        "deployment_labels": ["pod", "Hostname"],
        "deployments": {f"{LLAMA_POD_PREFIX}*": DEPLOYMENT_AWS_LLAMA, "computeinstance-*": DEPLOYMENT_GPUCLOUD_QWEN},
    }


# --- one hour ------------------------------------------------------------------------------------


def _hour_text(month: DemoMonth, hour: datetime, rng: random.Random) -> str:
    gpus = list(_gpus(hour))
    busy = _busy_fraction(month, hour, gpus)
    lines: list[str] = []
    for k in range(3_600 // SCRAPE_INTERVAL_SECONDS):
        stamp = int((hour + timedelta(seconds=k * SCRAPE_INTERVAL_SECONDS)).timestamp()) * 1000
        lines.append(HEADER)
        for gpu in gpus:
            used = busy[gpu.deployment]
            # noise shrinks near 0 and 100 %, so clipping doesn't bias a saturated hour's mean
            value = max(0, min(100, round(100 * rng.gauss(used, NOISE * min(used, 1.0 - used)))))
            lines.append(f"{METRIC}{{{gpu.labels}}} {value} {stamp}\n")
    return "".join(lines)


def _busy_fraction(month: DemoMonth, hour: datetime, gpus: list[Gpu]) -> dict[str, float]:
    """Each deployment's expected busy GPU-seconds this hour over its GPU-seconds, capped at 1."""
    held = {d: 3_600 * sum(g.deployment == d for g in gpus) for d in (DEPLOYMENT_AWS_LLAMA, DEPLOYMENT_GPUCLOUD_QWEN)}
    busy = dict.fromkeys(held, 0.0)
    for feature in FEATURES:
        for route in feature.routes:
            if route.deployment in busy:
                busy[route.deployment] += expected_requests(feature, hour, month) * route.share * route.gpu_seconds
    return {d: min(1.0, busy[d] / held[d]) if held[d] else 0.0 for d in held}


def _gpus(hour: datetime) -> Iterator[Gpu]:
    for node in range(aws_cluster_instances(hour)):
        host, ip = _node(hour.date(), node)
        pod = LLAMA_POD_PREFIX + _id(f"pod/{host}", 5, "bcdfghjklmnpqrstvwxz2456789")
        for index in range(GPUS_PER_P4D):
            labels = {
                "DCGM_FI_DRIVER_VERSION": DRIVER_VERSION,
                "Hostname": host,
                "UUID": _uuid(f"aws/{host}/{index}"),
                "container": "vllm",
                "device": f"nvidia{index}",
                "gpu": str(index),
                "instance": f"{ip}:9400",
                "job": "nvidia-dcgm-exporter",
                "modelName": "NVIDIA A100-SXM4-40GB",
                "namespace": AWS_CLUSTER,
                "pci_bus_id": f"00000000:{0x10 + index * 0x10:02X}:1C.0",
                "pod": pod,
            }
            yield Gpu(_render(labels), DEPLOYMENT_AWS_LLAMA)
    for vm, host in enumerate(gpu_cloud.vm_resource_ids()[:GPU_CLOUD_VMS]):
        for index in range(gpu_cloud.GPUS_PER_VM):
            labels = {
                "DCGM_FI_DRIVER_VERSION": DRIVER_VERSION,
                "Hostname": host,
                "UUID": _uuid(f"nebius/{host}/{index}"),
                "device": f"nvidia{index}",
                "gpu": str(index),
                "instance": f"10.128.0.{10 + vm}:9400",
                "job": "dcgm-exporter",
                "modelName": "NVIDIA H100 80GB HBM3",
                "pci_bus_id": f"00000000:{0x8A + index:02X}:00.0",
            }
            yield Gpu(_render(labels), DEPLOYMENT_GPUCLOUD_QWEN)


def _node(day: date, index: int) -> tuple[str, str]:
    """EC2 private DNS name and IP of cluster node ``index``: two long-lived ones, a third new each weekday."""
    key = f"node/{index}" if index < 2 else f"node/{day.isoformat()}"
    digest = hashlib.sha256(f"{COMPANY}/{key}".encode()).digest()
    ip = f"10.0.{digest[0] % 64 + 16}.{digest[1] % 250 + 4}"
    return f"ip-{ip.replace('.', '-')}.ec2.internal", ip


def _uuid(key: str) -> str:
    h = hashlib.sha256(f"{COMPANY}/{key}".encode()).hexdigest()
    return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _id(key: str, length: int, alphabet: str) -> str:
    digest = hashlib.sha256(f"{COMPANY}/{key}".encode()).digest()
    return "".join(alphabet[b % len(alphabet)] for b in digest[:length])


def _render(labels: dict[str, str]) -> str:
    return ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
