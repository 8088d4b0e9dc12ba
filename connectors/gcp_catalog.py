"""List prices of Google Cloud SKUs from the Cloud Billing Catalog API, cached on disk.

Follows the Cloud Billing Catalog API reference (cloud.google.com/billing/docs/reference/rest/v1/services.skus/list,
``GET /v1/{parent=services/*}/skus``) as google-cloud-billing's ``CloudCatalogClient`` exposes it
(``google.cloud.billing_v1.types.cloud_catalog``): each ``Sku`` has ``pricingInfo[]``, each with a
``pricingExpression`` of ``usageUnit`` / ``usageUnitDescription`` / ``displayQuantity`` / ``baseUnit`` /
``baseUnitConversionFactor`` and ``tieredRates[{startUsageAmount, unitPrice{currencyCode, units, nanos}}]``;
"unit_price" is "the price per unit of usage" in ``usageUnit``, tiers are sorted by ``startUsageAmount``;
results are paged with ``nextPageToken`` (the client's pager follows it).

The billing export states usage in the Catalog's pricing unit (``usage.pricing_unit`` is "the unit in which
resource usage is measured, according to the Cloud Billing Catalog API"), so a tier's unit price is the list
unit price of that usage, in the currency requested with ``currencyCode``.

Caching: one JSON file per (service, currency) under ``<cache_dir>/gcp_catalog/``, reused while younger than
the TTL, so a load does not list a service's SKUs (Compute Engine has tens of thousands) more than once a day.
Prices are today's list prices: the Catalog API serves current prices, not those in force when usage happened.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from google.api_core import exceptions as google_exceptions
from google.auth import credentials as auth_credentials
from google.auth import exceptions as auth_exceptions

from connectors.base import SourceError

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
DEFAULT_TTL = timedelta(hours=24)
PAGE_SIZE = 5000
CACHE_VERSION = 1
_SERVICE_ID = re.compile(r"^[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}$")


@dataclass(frozen=True)
class Tier:
    start: Decimal  # in the SKU's usage unit
    unit_price: Decimal


@dataclass(frozen=True)
class SkuPrice:
    """A SKU's current list price: its tiers, in ``usage_unit`` (``usage_unit_description`` spelled out)."""

    usage_unit: str
    usage_unit_description: str
    tiers: tuple[Tier, ...]

    def unit_price(self, tier_start: Decimal | None) -> Decimal | None:
        """The tier starting at ``tier_start``; without it, the only tier (several tiers are ambiguous)."""
        if tier_start is not None:
            return next((t.unit_price for t in self.tiers if t.start == tier_start), None)
        return self.tiers[0].unit_price if len(self.tiers) == 1 else None

    def to_json(self) -> dict[str, Any]:
        return {
            "usage_unit": self.usage_unit,
            "usage_unit_description": self.usage_unit_description,
            "tiers": [[str(t.start), str(t.unit_price)] for t in self.tiers],
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> SkuPrice:
        tiers = tuple(Tier(Decimal(start), Decimal(price)) for start, price in value["tiers"])
        return cls(value["usage_unit"], value["usage_unit_description"], tiers)


def money(units: int | str | None, nanos: int | None) -> Decimal:
    """``google.type.Money`` as an exact decimal: ``units`` + ``nanos`` × 10⁻⁹."""
    return plain(Decimal(int(units or 0)) + Decimal(int(nanos or 0)).scaleb(-9))


def plain(value: Decimal) -> Decimal:
    """Without trailing zeros and without an exponent: 0.026000000 → 0.026, 3600.0 → 3600."""
    return value.quantize(Decimal(1)) if value == value.to_integral_value() else value.normalize()


def credentials_for(source: str, endpoint: str | None, credentials_env: str) -> auth_credentials.Credentials | None:
    """Credentials for a Google API: none for a plain-http endpoint (a local emulator or test server), else the
    service-account key file named by ``credentials_env``, else Application Default Credentials (``None``)."""
    if endpoint and endpoint.startswith("http://"):
        return auth_credentials.AnonymousCredentials()
    key_file = os.environ.get(credentials_env, "").strip()
    if not key_file:
        return None  # the client libraries fall back to Application Default Credentials
    from google.oauth2 import service_account

    try:
        return service_account.Credentials.from_service_account_file(key_file, scopes=[CLOUD_PLATFORM_SCOPE])
    except (OSError, ValueError) as exc:
        raise SourceError(
            source,
            credentials_env,
            f"the service-account key file named by {credentials_env} can't be read ({type(exc).__name__})",
            f"point {credentials_env} at a service-account key, or unset it to use Application Default Credentials",
        ) from None


class CatalogPrices:
    """List unit prices by (service id, SKU id, currency), from the disk cache or the Catalog API."""

    def __init__(
        self,
        source: str,
        cache_dir: Path,
        *,
        api_endpoint: str | None = None,
        credentials_env: str = "GOOGLE_APPLICATION_CREDENTIALS",
        ttl: timedelta = DEFAULT_TTL,
        now: datetime | None = None,
    ) -> None:
        self.source = source
        self.folder = cache_dir / "gcp_catalog"
        self.api_endpoint = api_endpoint
        self.credentials_env = credentials_env
        self.ttl = ttl
        self.now = now or datetime.now(UTC)
        self._services: dict[tuple[str, str], dict[str, SkuPrice]] = {}
        self._client: Any = None
        self.requests = 0  # API pages fetched by this instance (the cache makes it 0)

    def sku_price(self, service_id: str, sku_id: str, currency: str) -> SkuPrice | None:
        return self.service_prices(service_id, currency).get(sku_id)

    def unit_price(
        self, service_id: str, sku_id: str, currency: str, pricing_unit: str | None, tier_start: Decimal | None
    ) -> Decimal | None:
        """The list price per ``pricing_unit`` (the export's ``usage.pricing_unit``), or None when unknown."""
        price = self.sku_price(service_id, sku_id, currency)
        if price is None or pricing_unit not in (price.usage_unit_description, price.usage_unit):
            return None
        return price.unit_price(tier_start)

    def service_prices(self, service_id: str, currency: str) -> dict[str, SkuPrice]:
        key = (service_id, currency)
        if key not in self._services:
            self._services[key] = self._cached(service_id, currency) or self._fetch(service_id, currency)
        return self._services[key]

    # --- disk cache ---------------------------------------------------------------------------------

    def cache_file(self, service_id: str, currency: str) -> Path:
        if not _SERVICE_ID.match(service_id) or not re.match(r"^[A-Z]{3}$", currency):
            raise SourceError(
                self.source, "service.id / currency", f"unexpected service id {service_id!r} or currency {currency!r}"
            )
        return self.folder / f"{service_id}-{currency}.json"

    def _cached(self, service_id: str, currency: str) -> dict[str, SkuPrice] | None:
        path = self.cache_file(service_id, currency)
        try:
            content = json.loads(path.read_text())
            fetched_at = datetime.fromisoformat(content["fetched_at"])
            if content.get("version") != CACHE_VERSION or self.now - fetched_at > self.ttl:
                return None
            return {sku: SkuPrice.from_json(value) for sku, value in content["skus"].items()}
        except (OSError, ValueError, KeyError, TypeError):
            return None  # absent, stale or unreadable: fetch again

    def _store(self, service_id: str, currency: str, prices: Mapping[str, SkuPrice]) -> None:
        path = self.cache_file(service_id, currency)
        path.parent.mkdir(parents=True, exist_ok=True)
        content = {
            "version": CACHE_VERSION,
            "service_id": service_id,
            "currency": currency,
            "fetched_at": self.now.isoformat(),
            "skus": {sku: price.to_json() for sku, price in sorted(prices.items())},
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(content, indent=1))
        tmp.replace(path)  # atomic: a concurrent reader sees the old or the new file, never half of one

    # --- the API ------------------------------------------------------------------------------------

    def _fetch(self, service_id: str, currency: str) -> dict[str, SkuPrice]:
        from google.cloud import billing_v1

        parent = f"services/{service_id}"
        request = billing_v1.ListSkusRequest(parent=parent, currency_code=currency, page_size=PAGE_SIZE)
        where = f"{self.api_endpoint or 'cloudbilling.googleapis.com'}/v1/{parent}/skus"
        try:
            pager = self.client().list_skus(request=request)
            prices: dict[str, SkuPrice] = {}
            for page in pager.pages:
                self.requests += 1
                prices.update(_sku_prices(page.skus))
        except google_exceptions.GoogleAPICallError as exc:
            raise SourceError(
                self.source, where, f"Cloud Billing Catalog API error {exc.code}: {exc.message}",
                "the Catalog API must be enabled on the credentials' project (cloudbilling.googleapis.com); "
                "or set catalog_prices: false",
            ) from None  # fmt: skip
        except (auth_exceptions.GoogleAuthError, google_exceptions.RetryError) as exc:
            raise SourceError(self.source, where, f"Catalog API unreachable ({type(exc).__name__}: {exc})") from None
        self._store(service_id, currency, prices)
        return prices

    def client(self) -> Any:
        if self._client is None:
            from google.cloud import billing_v1

            options = {"api_endpoint": self.api_endpoint} if self.api_endpoint else None
            credentials = credentials_for(self.source, self.api_endpoint, self.credentials_env)
            try:
                self._client = billing_v1.CloudCatalogClient(
                    transport="rest", client_options=options, credentials=credentials
                )
            except auth_exceptions.DefaultCredentialsError as exc:
                raise SourceError(
                    self.source, self.credentials_env, f"no Google credentials found ({exc})",
                    f"set {self.credentials_env} to a service-account key file, or configure Application Default "
                    "Credentials (gcloud auth application-default login)",
                ) from None  # fmt: skip
        return self._client


def _sku_prices(skus: Iterable[Any]) -> dict[str, SkuPrice]:
    """The newest pricing of each SKU of a ``ListSkusResponse`` page."""
    prices = {}
    for sku in skus:
        if not sku.pricing_info:
            continue
        info = max(sku.pricing_info, key=lambda p: p.effective_time.timestamp() if p.effective_time else 0)
        expression = info.pricing_expression
        tiers = tuple(
            Tier(plain(Decimal(repr(rate.start_usage_amount))), money(rate.unit_price.units, rate.unit_price.nanos))
            for rate in expression.tiered_rates
        )
        if tiers:
            prices[sku.sku_id] = SkuPrice(expression.usage_unit, expression.usage_unit_description, tiers)
    return prices
