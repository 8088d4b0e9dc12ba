"""The GPU cloud's month: a Nebius-style hourly FOCUS 1.2 CSV export for the demo company.

Shape follows Nebius' docs "Exporting usage data" (docs.nebius.com/signup-billing/usage/export:
hourly FOCUS 1.2 CSV delivered to an Object Storage bucket) and "FOCUS conformance"
(…/usage/focus-conformance: no tags, no sub accounts, no availability zones; regions, SKU and unit
pricing, multi-currency pricing and multiple billing account types supported). So Tags,
SubAccountId/Name and AvailabilityZone are empty, and every priced row carries the PricingCurrency*
columns. Resource ids use Nebius' ``<type>-e00<suffix>`` form (``computeinstance-e00…``,
``computedisk-e00…``, ``storagebucket-e00<digits>``); SKU ids and the disk price are illustrative.

What is billed, from ``company.py``: ``GPU_CLOUD_VMS`` always-on VMs with 8 H100 GPUs each at
``GPU_CLOUD_H100_HOURLY`` per GPU-hour (one row per VM per hour) serving
``DEPLOYMENT_GPUCLOUD_QWEN``, each VM's boot disk, and the bucket holding model weights and logs
(one row per day each). Object Storage is priced per GiB per 730 hours (Nebius Object Storage
pricing); the hourly unit price is that price ÷ 730 rounded to 10 places, so every cost is exactly
unit price × quantity.
"""

from __future__ import annotations

import csv
import hashlib
import random
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

from models.focus import FOCUS_COLUMN_NAMES
from pipelines.demo.company import (
    COMPANY,
    GPU_CLOUD_H100_HOURLY,
    GPU_CLOUD_PROVIDER,
    GPU_CLOUD_VMS,
    DemoMonth,
)

GPUS_PER_VM = 8
REGION_ID, REGION_NAME = "eu-north1", "Finland"
INVOICE_ISSUER = "Nebius B.V."
HOURS_PER_PRICE_MONTH = Decimal(730)
UNIT_PRICE_QUANTUM = Decimal("1e-10")
BOOT_DISK_GIB = 2048
DISK_PRICE_GIB_MONTH = Decimal("0.071")  # Network SSD, illustrative
OBJECT_STORAGE_PRICE_GIB_MONTH = Decimal("0.0147")  # Standard storage, Nebius Object Storage pricing
BUCKET_START_GIB, BUCKET_GROWTH_GIB_PER_DAY = 3_200, 12
BUCKET_NAME = "lumen-qwen-artifacts"
VM_PRESET = "8gpu-128vcpu-1600gb"
PLATFORM = "gpu-h100-sxm"


def _suffix(kind: str, index: int, length: int = 15) -> str:
    """A stable Nebius-like id suffix (lower-case base32), the same for every seed."""
    digest = hashlib.sha256(f"{COMPANY}/{kind}/{index}".encode()).digest()
    alphabet = "0123456789abcdefghjkmnpqrstvwxyz"
    return "".join(alphabet[b % 32] for b in digest[:length])


TENANT_ID = f"tenant-e00{_suffix('tenant', 0)}"
BUCKET_ID = "storagebucket-e00" + "".join(
    str(b % 10) for b in hashlib.sha256(f"{COMPANY}/bucket".encode()).digest()[:19]
)


def vm_resource_ids() -> list[str]:
    """ResourceId of every GPU VM hosting the Qwen deployment (what allocation pools match on)."""
    return [f"computeinstance-e00{_suffix('vm', i)}" for i in range(GPU_CLOUD_VMS)]


def disk_resource_ids() -> list[str]:
    return [f"computedisk-e00{_suffix('disk', i)}" for i in range(GPU_CLOUD_VMS)]


def _hourly(price_per_gib_month: Decimal) -> Decimal:
    return (price_per_gib_month / HOURS_PER_PRICE_MONTH).quantize(UNIT_PRICE_QUANTUM)


def _row(
    month: DemoMonth,
    start: datetime,
    end: datetime,
    *,
    resource: tuple[str, str, str],
    service: tuple[str, str, str],
    sku: tuple[str, str, str],
    quantity: Decimal,
    unit: str,
    unit_price: Decimal,
) -> dict[str, str]:
    """One Usage row; every cost is unit price × quantity (no discounts in the demo)."""
    cost = unit_price * quantity
    resource_id, resource_name, resource_type = resource
    service_name, category, subcategory = service
    sku_id, meter, description = sku
    values = {
        "BilledCost": cost,
        "BillingAccountId": TENANT_ID,
        "BillingAccountName": COMPANY,
        "BillingAccountType": "Tenant",
        "BillingCurrency": "USD",
        "BillingPeriodEnd": month.end,
        "BillingPeriodStart": month.start,
        "ChargeCategory": "Usage",
        "ChargeDescription": description,
        "ChargeFrequency": "Usage-Based",
        "ChargePeriodEnd": end,
        "ChargePeriodStart": start,
        "ConsumedQuantity": quantity,
        "ConsumedUnit": unit,
        "ContractedCost": cost,
        "ContractedUnitPrice": unit_price,
        "EffectiveCost": cost,
        "InvoiceIssuerName": INVOICE_ISSUER,
        "ListCost": cost,
        "ListUnitPrice": unit_price,
        "PricingCategory": "Standard",
        "PricingCurrency": "USD",
        "PricingCurrencyContractedUnitPrice": unit_price,
        "PricingCurrencyEffectiveCost": cost,
        "PricingCurrencyListUnitPrice": unit_price,
        "PricingQuantity": quantity,
        "PricingUnit": unit,
        "ProviderName": GPU_CLOUD_PROVIDER,
        "PublisherName": GPU_CLOUD_PROVIDER,
        "RegionId": REGION_ID,
        "RegionName": REGION_NAME,
        "ResourceId": resource_id,
        "ResourceName": resource_name,
        "ResourceType": resource_type,
        "ServiceCategory": category,
        "ServiceName": service_name,
        "ServiceSubcategory": subcategory,
        "SkuId": sku_id,
        "SkuMeter": meter,
        "SkuPriceId": f"{sku_id}.{REGION_ID}.usd",
    }
    return {name: _text(values.get(name)) for name in FOCUS_COLUMN_NAMES}


def _text(value: object) -> str:
    if value is None:
        return ""  # Nebius writes NULL as an empty CSV field
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def rows(month: DemoMonth, seed: int) -> list[dict[str, str]]:
    """Every row of the month's export, sorted by charge period then resource."""
    rng = random.Random(seed)
    out = []
    gpu_sku = (f"sku-{_suffix('sku', 1, 12)}", "GPU", f"NVIDIA H100 SXM GPU, {PLATFORM} {VM_PRESET}")
    for i, (vm, disk) in enumerate(zip(vm_resource_ids(), disk_resource_ids(), strict=True)):
        vm_resource = (vm, f"vllm-qwen-coder-{i}", "Compute instance")
        for hour in month.hours():
            out.append(
                _row(month, hour, hour + timedelta(hours=1), resource=vm_resource,
                     service=("Compute", "Compute", "Virtual Machines"), sku=gpu_sku,
                     quantity=Decimal(GPUS_PER_VM), unit="GPU-Hours", unit_price=GPU_CLOUD_H100_HOURLY)
            )  # fmt: skip
        disk_sku = (f"sku-{_suffix('sku', 2, 12)}", "Disk space", "Network SSD disk space")
        for day in month.days():
            start = datetime(day.year, day.month, day.day, tzinfo=month.start.tzinfo)
            out.append(
                _row(month, start, start + timedelta(days=1), resource=(disk, f"vllm-qwen-coder-{i}-boot", "Disk"),
                     service=("Compute", "Compute", "Virtual Machines"), sku=disk_sku,
                     quantity=Decimal(BOOT_DISK_GIB * 24), unit="GiB-Hours",
                     unit_price=_hourly(DISK_PRICE_GIB_MONTH))
            )  # fmt: skip
    storage_sku = (f"sku-{_suffix('sku', 3, 12)}", "Used space", "Used space in Standard storage")
    for n, day in enumerate(month.days()):
        start = datetime(day.year, day.month, day.day, tzinfo=month.start.tzinfo)
        gib = BUCKET_START_GIB + BUCKET_GROWTH_GIB_PER_DAY * n + rng.randint(-3, 3)
        out.append(
            _row(month, start, start + timedelta(days=1), resource=(BUCKET_ID, BUCKET_NAME, "Bucket"),
                 service=("Object Storage", "Storage", "Object Storage"), sku=storage_sku,
                 quantity=Decimal(gib * 24), unit="GiB-Hours", unit_price=_hourly(OBJECT_STORAGE_PRICE_GIB_MONTH))
        )  # fmt: skip
    return sorted(out, key=lambda r: (r["ChargePeriodStart"], r["ResourceId"]))


def write(month: DemoMonth, out_dir: Path, seed: int) -> Path:
    """Write the month's export CSV; returns its path."""
    path = out_dir / "gpu_cloud" / month.month / f"nebius-focus-usage-{month.month}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FOCUS_COLUMN_NAMES, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows(month, seed))
    return path
